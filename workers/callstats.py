"""Counters of LLM calls, per job and per key, in Redis hashes (see ``constants``)."""

from __future__ import annotations

from typing import Any

import redis

from genfleet import constants as C

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
        effective_concurrency: int | None = None, **counts: int,
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
