"""Counters of LLM calls, per job and per key, in Redis hashes (see ``constants``)."""

from __future__ import annotations

import logging
from typing import Any

import redis

from genfleet import constants as C
from genfleet.outage import REDIS_DOWN

logger = logging.getLogger(__name__)

COUNTERS = (
    "calls", "ok", "failed", "retries", "rate_limited", "server_errors",
    "tokens_in", "tokens_out", "cache_hits",
)  # fmt: skip


class CallStats:
    """Adds to a job's and a key's counters in one round trip."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    def add(
        self, job_id: str, key_id: str | None, *, wait_s: float = 0.0,
        effective_concurrency: int | None = None, model: str | None = None, **counts: int,
    ) -> None:  # fmt: skip
        try:
            self._add(job_id, key_id, wait_s, effective_concurrency, model, counts)
        except REDIS_DOWN:
            # Counters are for people; a Redis restart must not fail a paid-for call.
            logger.warning("job %s: call counters lost in a Redis outage", job_id)

    def _add(
        self, job_id: str, key_id: str | None, wait_s: float,
        effective_concurrency: int | None, model: str | None, counts: dict[str, int],
    ) -> None:  # fmt: skip
        keys = [C.KEY_STATS_JOB.format(job_id=job_id)] if job_id else []
        if key_id:
            keys.append(C.KEY_STATS_KEY.format(key_id=key_id))
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                for name, value in counts.items():
                    if value:
                        pipe.hincrby(key, name, value)
                if wait_s > 0:
                    pipe.hincrbyfloat(key, "limiter_wait_s", round(wait_s, 4))
                if effective_concurrency is not None:
                    pipe.hset(key, "effective_concurrency", effective_concurrency)
                pipe.expire(key, self.ttl_s)
            if key_id and model:  # which models a key served: genfleet stats lists them
                models = C.KEY_MODELS.format(key_id=key_id)
                pipe.sadd(models, model)
                pipe.expire(models, self.ttl_s)
            pipe.execute()


def read_stats(client: redis.Redis, key: str) -> dict[str, Any]:
    """A counters hash as numbers (missing counters are 0)."""
    raw = client.hgetall(key)
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        number = float(value)
        out[name] = int(number) if number.is_integer() and name != "limiter_wait_s" else number
    return out
