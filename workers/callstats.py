"""Counters of LLM calls, per job and per key, in Redis hashes (see ``constants``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from genfleet import constants as C
from genfleet.outage import REDIS_DOWN
from workers.ops import OPS_LUA, Ops

logger = logging.getLogger(__name__)

UNPRICED_SUFFIX = "|unpriced"  # a cost hash field counting calls of a model without a price
_FLOATS = frozenset({"limiter_wait_s", "cost_usd"})

COUNTERS = (
    "calls", "ok", "failed", "retries", "rate_limited", "server_errors",
    "tokens_in", "tokens_out", "cache_hits",
)  # fmt: skip


class Refresher:
    """Which keys' TTL this process refreshed lately: each counter key gets its EXPIRE
    on its first write here, then at most once per ``every_s`` (not on every call).

    A key written here was written less than ``every_s`` ago, far inside its TTL, so
    it cannot have expired and come back without one in between.
    """

    def __init__(self, ttl_s: int) -> None:
        self.every_s = max(1.0, min(60.0, ttl_s / 10))
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        if len(self._last) > 10_000:  # many jobs over a long life: forget the old ones
            self._last.clear()
        self._last[key] = now
        return True


class CallStats:
    """Adds to a job's and a key's counters in one command (a script call)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.refresh = Refresher(ttl_s)
        self._effective: dict[str, int] = {}
        self._apply = client.register_script(_APPLY)

    def _changed(self, key: str, effective: int) -> bool:
        """Whether ``effective`` differs from what this process wrote to ``key`` last
        (or is due again): the limiter's value is the cluster's, it rarely moves."""
        if self._effective.get(key) == effective and not self.refresh.due(f"{key}\neff"):
            return False
        self._effective[key] = effective
        return True

    def add(
        self, job_id: str, key_id: str | None, *, wait_s: float = 0.0,
        effective_concurrency: int | None = None, model: str | None = None,
        cost: Cost | None = None, **counts: int,
    ) -> None:  # fmt: skip
        """Add ``counts``; ``cost`` (a billed call's USD, None without a price) goes to
        the job's ``cost_usd`` (or ``unpriced_calls``) and the key's cost per model."""
        try:
            self._add(job_id, key_id, wait_s, effective_concurrency, model, counts, cost)
        except REDIS_DOWN:
            # Counters are for people; a Redis restart must not fail a paid-for call.
            logger.warning("job %s: call counters lost in a Redis outage", job_id)

    def _add(
        self, job_id: str, key_id: str | None, wait_s: float,
        effective_concurrency: int | None, model: str | None, counts: dict[str, int],
        cost: Cost | None,
    ) -> None:  # fmt: skip
        ops = self.ops(
            job_id, key_id, counts, wait_s=wait_s, effective_concurrency=effective_concurrency,
            model=model, cost=cost,
        )  # fmt: skip
        if ops:
            self._apply(keys=ops.keys, args=ops.args)

    def ops(
        self, job_id: str, key_id: str | None, counts: dict[str, int], *, wait_s: float = 0.0,
        effective_concurrency: int | None = None, model: str | None = None,
        cost: Cost | None = None, expire: bool = True,
    ) -> Ops:  # fmt: skip
        """The updates ``add`` makes, for another script call to carry (``workers.ops``).

        ``expire=False`` leaves the keys' TTL to a later update of the same call (for
        updates that may not be made: the limiter drops them when it denies)."""
        keys = [C.KEY_STATS_JOB.format(job_id=job_id)] if job_id else []
        if key_id:
            keys.append(C.KEY_STATS_KEY.format(key_id=key_id))
        ops = Ops()
        for key in keys:
            for name, value in counts.items():
                if value:
                    ops.add("HINCRBY", key, name, value)
            if wait_s > 0:
                ops.add("HINCRBYFLOAT", key, "limiter_wait_s", round(wait_s, 4))
            if effective_concurrency is not None and self._changed(key, effective_concurrency):
                ops.add("HSET", key, "effective_concurrency", effective_concurrency)
            if expire and self.refresh.due(key):
                ops.add("EXPIRE", key, "", self.ttl_s)
        if key_id and model:  # which models a key served: genfleet stats lists them
            models = C.KEY_MODELS.format(key_id=key_id)
            if self.refresh.due(f"{models}\n{model}"):  # a set: adding again adds nothing
                ops.add("SADD", models, model, "")
                ops.add("EXPIRE", models, "", self.ttl_s)
        if cost is not None:
            _add_cost(ops, keys[:1] if job_id else [], key_id, cost, self.ttl_s, self.refresh)
        return ops


# Counter updates in one call (one command sent, however many counters move).
_APPLY = OPS_LUA + "apply_ops(0, 1)\nreturn 1\n"


@dataclass(frozen=True)
class Cost:
    """What one billed call cost: ``usd`` None when its model has no price."""

    model: str
    usd: float | None


def _add_cost(
    ops: Ops, job_keys: list[str], key_id: str | None, cost: Cost, ttl_s: int,
    refresh: Refresher,
) -> None:  # fmt: skip
    for key in job_keys:
        if cost.usd is None:
            ops.add("HINCRBY", key, "unpriced_calls", 1)
        else:
            ops.add("HINCRBYFLOAT", key, "cost_usd", round(cost.usd, 10))
    if key_id:
        costs = C.KEY_STATS_COST.format(key_id=key_id)
        if cost.usd is None:
            ops.add("HINCRBY", costs, f"{cost.model}{UNPRICED_SUFFIX}", 1)
        else:
            ops.add("HINCRBYFLOAT", costs, cost.model, round(cost.usd, 10))
        if refresh.due(costs):
            ops.add("EXPIRE", costs, "", ttl_s)


def read_costs(client: redis.Redis, key_id: str) -> dict[str, float | None]:
    """A key's cost per model in USD; None for a model used without a price."""
    out: dict[str, float | None] = {}
    for name, value in client.hgetall(C.KEY_STATS_COST.format(key_id=key_id)).items():
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name.endswith(UNPRICED_SUFFIX):
            out[name.removesuffix(UNPRICED_SUFFIX)] = None
        elif name not in out:
            out[name] = float(value)
    return dict(sorted(out.items()))


def read_stats(client: redis.Redis, key: str) -> dict[str, Any]:
    """A counters hash as numbers (missing counters are 0)."""
    raw = client.hgetall(key)
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        number = float(value)
        out[name] = number if name in _FLOATS or not number.is_integer() else int(number)
    return out
