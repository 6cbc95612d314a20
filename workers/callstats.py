"""Counters of LLM calls, per job and per key, in Redis hashes (see ``constants``).

A job's counters move with each call (in the limiter's own script calls: the call is
counted with its admission, a success's counters with its release). A key's counters
are summed in the process and written along with the first release at least
``KEY_STATS_FLUSH_S`` after the last write; when no call ends that soon (the process
went quiet), a timer writes them (one command). A key serves every job, so its
counters would otherwise cost as many commands again per call; what a process held
when it was killed (at most that long's worth) is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from genfleet import constants as C
from genfleet.outage import REDIS_DOWN
from genfleet.scripts import LeanScript
from genfleet.summary import SUCCESS_COUNTERS, SUCCESS_FIELD, success_counts
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

    def due(self, key: str, every_s: float | None = None) -> bool:
        """True on ``key``'s first ask, then once ``every_s`` (default: this one's) passed."""
        every = self.every_s if every_s is None else every_s
        now = time.monotonic()
        if now - self._last.get(key, -every) < every:
            return False
        if len(self._last) > 10_000:  # many jobs over a long life: forget the old ones
            self._last.clear()
        self._last[key] = now
        return True


KEY_STATS_FLUSH_S = 1.0  # a busy process writes its keys' counters at least this often


class _Held:
    """Key counter updates summed in the process until they ride along in a script call."""

    def __init__(self) -> None:
        self.adds: dict[tuple[str, str, str], float] = {}  # (op, key, field) -> sum
        self.sets: dict[tuple[str, str, str], Any] = {}  # (op, key, field) -> last value

    def add(self, op: str, key: str, field: str, value: Any) -> None:
        if op in ("HINCRBY", "HINCRBYFLOAT"):
            self.adds[(op, key, field)] = self.adds.get((op, key, field), 0) + value
        else:
            self.sets[(op, key, field)] = value

    def move_to(self, ops: Ops) -> None:
        for (op, key, field), value in self.adds.items():
            ops.add(op, key, field, round(value, 10) if op == "HINCRBYFLOAT" else value)
        for (op, key, field), value in self.sets.items():
            ops.add(op, key, field, value)
        self.adds.clear()
        self.sets.clear()

    def __bool__(self) -> bool:
        return bool(self.adds or self.sets)


class CallStats:
    """Adds to a job's and a key's counters in one command (a script call)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.refresh = Refresher(ttl_s)
        self._effective: dict[str, int] = {}
        self._apply = LeanScript(client, _APPLY)
        self._lock = threading.Lock()
        self._held = _Held()  # keys' counters not written yet
        self._written_at = time.monotonic()
        self._timer: threading.Timer | None = None  # writes what is held when calls stop

    def started(self, key_id: str) -> None:
        """A call on ``key_id`` was admitted and is about to be made: the key's call
        count (its job's rode along with the admission)."""
        with self._lock:
            self._hold(key_id, {"calls": 1})

    def ended(self, ops: Ops | None) -> Ops | None:
        """A call is over: ``ops`` (its release's updates) take the keys' counters along
        once they have waited ``KEY_STATS_FLUSH_S``; else a timer writes them then,
        unless a later call's release takes them first."""
        with self._lock:
            if not self._held:
                return ops
            left = KEY_STATS_FLUSH_S - (time.monotonic() - self._written_at)
            if left > 0:
                self._arm(left)
                return ops
            ops = ops if ops is not None else Ops()
            self._take_held(ops)
        return ops

    def flush(self) -> None:
        """Write the keys' counters held now (a worker process that is stopping)."""
        self._write_held(now=True)

    def _take_held(self, ops: Ops) -> None:
        """Move what is held into ``ops`` (the caller holds the lock)."""
        self._held.move_to(ops)
        self._written_at = time.monotonic()

    def _arm(self, delay_s: float) -> None:
        """Have the timer write what is held in ``delay_s`` (the caller holds the lock)."""
        if self._timer is not None and self._timer.is_alive():
            return
        self._timer = threading.Timer(delay_s + 0.01, self._write_held)
        self._timer.daemon = True
        self._timer.start()

    def _write_held(self, now: bool = False) -> None:
        """The timer: write the keys' counters no release has taken along."""
        with self._lock:
            self._timer = None
            if not self._held:
                return
            left = KEY_STATS_FLUSH_S - (time.monotonic() - self._written_at)
            if left > 0 and not now:  # a release took them along meanwhile; more came since
                self._arm(left)
                return
            ops = Ops()
            self._take_held(ops)
        try:
            self._apply(keys=ops.keys, args=ops.args)
        except REDIS_DOWN:
            logger.warning("key call counters lost in a Redis outage")

    def _hold(
        self, key_id: str, counts: dict[str, int], wait_s: float = 0.0,
        effective_concurrency: int | None = None, model: str | None = None,
        cost: Cost | None = None,
    ) -> None:  # fmt: skip
        """Sum a key's updates here (the caller holds the lock)."""
        key = C.KEY_STATS_KEY.format(key_id=key_id)
        self._counters(self._held, key, counts, wait_s, effective_concurrency, expire=True)
        if model:  # which models a key served: genfleet stats lists them
            models = C.KEY_MODELS.format(key_id=key_id)
            if self.refresh.due(f"{models}\n{model}"):  # a set: adding again adds nothing
                self._held.add("SADD", models, model, "")
                self._held.add("EXPIRE", models, "", self.ttl_s)
        if cost is not None:
            costs = C.KEY_STATS_COST.format(key_id=key_id)
            if cost.usd is None:
                self._held.add("HINCRBY", costs, f"{cost.model}{UNPRICED_SUFFIX}", 1)
            else:
                self._held.add("HINCRBYFLOAT", costs, cost.model, cost.usd)
            if self.refresh.due(costs):
                self._held.add("EXPIRE", costs, "", self.ttl_s)

    def _counters(
        self, sink: Ops | _Held, key: str, counts: dict[str, int], wait_s: float,
        effective_concurrency: int | None, expire: bool,
    ) -> None:  # fmt: skip
        """A counters hash's updates (a job's or a key's), into ``sink``."""
        for name, value in counts.items():
            if value:
                sink.add("HINCRBY", key, name, value)
        if wait_s > 0:
            sink.add("HINCRBYFLOAT", key, "limiter_wait_s", round(wait_s, 4))
        if effective_concurrency is not None and self._changed(key, effective_concurrency):
            sink.add("HSET", key, "effective_concurrency", effective_concurrency)
        if expire and self.refresh.due(key):
            sink.add("EXPIRE", key, "", self.ttl_s)

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
        with self._lock:  # a command is sent anyway: the keys' counters go with it
            self._take_held(ops)
        if ops:
            self._apply(keys=ops.keys, args=ops.args)

    def ops(
        self, job_id: str, key_id: str | None, counts: dict[str, int], *, wait_s: float = 0.0,
        effective_concurrency: int | None = None, model: str | None = None,
        cost: Cost | None = None, expire: bool = True,
    ) -> Ops:  # fmt: skip
        """The job's updates ``add`` makes, for another script call to carry
        (``workers.ops``); the key's (``key_id``) are held here for ``ended``.

        ``expire=False`` leaves the job's TTL to a later update of the same call (for
        updates that may not be made: the limiter drops them when it denies)."""
        ops = Ops()
        if job_id:
            key = C.KEY_STATS_JOB.format(job_id=job_id)
            if counts.get("ok"):  # the success's counters as one vector, the rest plain
                self._success(ops, key, counts, wait_s, cost)
                rest = {k: v for k, v in counts.items() if k not in SUCCESS_COUNTERS}
                self._counters(ops, key, rest, 0.0, effective_concurrency, expire)
            else:
                self._counters(ops, key, counts, wait_s, effective_concurrency, expire)
                if cost is not None:
                    if cost.usd is None:
                        ops.add("HINCRBY", key, "unpriced_calls", 1)
                    else:
                        ops.add("HINCRBYFLOAT", key, "cost_usd", round(cost.usd, 10))
        if key_id:
            with self._lock:
                self._hold(key_id, counts, wait_s, effective_concurrency, model, cost)
        return ops

    @staticmethod
    def _success(ops: Ops, key: str, counts: dict[str, int], wait_s: float,
                 cost: Cost | None) -> None:  # fmt: skip
        """A success's job counters, as one vector (``SUCCESS_COUNTERS``' order)."""
        values: dict[str, float] = {**counts, "limiter_wait_s": round(wait_s, 4)}
        if cost is not None:
            if cost.usd is None:
                values["unpriced_calls"] = 1
            else:
                values["cost_usd"] = round(cost.usd, 10)
        vector = " ".join(str(values.get(name, 0)) for name in SUCCESS_COUNTERS)
        ops.add("HADDV", key, SUCCESS_FIELD, vector)


# Counter updates in one call (one command sent, however many counters move).
_APPLY = OPS_LUA + "apply_ops(0, 1)\nreturn 1\n"


@dataclass(frozen=True)
class Cost:
    """What one billed call cost: ``usd`` None when its model has no price."""

    model: str
    usd: float | None


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
    raw = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
    sums = {name: float(value) for name, value in raw.items() if name != SUCCESS_FIELD}
    for name, value in success_counts(raw.get(SUCCESS_FIELD)).items():
        sums[name] = sums.get(name, 0.0) + value
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    for name, number in sums.items():
        out[name] = number if name in _FLOATS or not number.is_integer() else int(number)
    return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
