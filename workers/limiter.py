"""Cluster-wide LLM limits: concurrency, requests and tokens per minute, 429 cooldowns.

Every worker process on every machine shares one state in Redis, and every decision
is one Lua script call (``workers.limiter_lua``), so no two processes can race. The
clock is Redis' (``genfleet.clock``, passed to each script): the machines' clocks
never matter.

A *scope* is one (provider base URL, key id, model) triple; its keys are
``genfleet:lim:{scope}:...`` with ``{scope}`` = ``Scope.redis_part()``:

``:cooldown``  string: time until which nobody may call (after a 429).
``:state``     hash: AIMD ``eff``/``succ``/``max``, 429 ``streak``/``last_dec``/
               ``rl_total``, GCRA ``rpm_tat``/``tpm_tat``, ``tpm_sum``, ``tpm``.
``:leases``    sorted set lease_id -> expiry (the calls in flight).
``:rpm``       sorted set lease_id -> admit time (the requests of the window).
``:tpm``/``:tpm_tok``  sorted set lease_id -> admit time, hash lease_id -> tokens.

Per job: ``genfleet:lim:job:{job_id}:next`` (throttle) and ``:leases``. Every key
expires a few minutes after its scope or job goes idle. The scripts touch keys of a
scope and of a job together, so this needs a single Redis node (not Redis Cluster).
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from genfleet import constants as C
from genfleet.clock import redis_clock
from genfleet.scripts import LeanScript
from genfleet.store import Rider
from workers import limiter_lua
from workers.budget import BudgetAsk
from workers.callstats import Refresher
from workers.ops import Ops

logger = logging.getLogger(__name__)

# A release riding with its step's result (JobStore.save_step): the save's keys and
# arguments come first.
_RELEASE_RIDER = (
    limiter_lua.RELEASE_LUA + "local function ride(k, a) return release_lease(k, a) end\n"
)

_SLOT_REASONS = frozenset({"concurrency", "job_concurrency"})  # freed by a release, not time
_LEASE_ID_HEX = 16  # a lease id is 16 hex digits, then "/job_id" when the call has a job


@dataclass(frozen=True)
class Scope:
    """What a limit applies to: one provider base URL, API key id and model."""

    provider: str
    key_id: str  # a name for the key ("key1"), never the key itself
    model: str

    def redis_part(self) -> str:
        """A short, stable Redis key part for this scope."""
        raw = f"{self.provider}|{self.key_id}|{self.model}".encode()
        return hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:16]


@dataclass(frozen=True)
class Limits:
    """The limits of one scope; 0 means "no limit" for ``rpm`` and ``tpm``."""

    max_concurrent: int
    rpm: int = 0
    tpm: int = 0
    lease_s: float = C.LEASE_S  # renewed while the call runs; else expires (killed worker)
    auto_rpm: bool = False  # rpm/tpm learned from the provider's headers (ratelimit_headers)
    auto_tpm: bool = False

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.rpm < 0 or self.tpm < 0:
            raise ValueError(f"rpm and tpm must be >= 0, got rpm={self.rpm} tpm={self.tpm}")
        if self.lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {self.lease_s}")


@dataclass(frozen=True)
class Grant:
    """An admitted call: hand it back to ``ClusterLimiter.release`` when it is done."""

    lease_id: str
    scope: str  # Scope.redis_part()
    tokens: int  # tokens reserved
    effective_concurrency: int
    in_flight: int  # including this one
    budget: BudgetAsk | None = None  # the cost reserved, settled by the gateway
    counts_tokens: bool = True  # a tpm limit counted its tokens (release corrects them)
    job_slot: bool = True  # it holds one of its job's concurrency slots
    delay_s: float = 0.0  # admitted for later (``reserve_s``): sleep this long, then call
    at: float = 0.0  # when it may go, by Redis' clock


@dataclass(frozen=True)
class Denied:
    """Not admitted now; a retry after ``wait_s`` may succeed."""

    wait_s: float
    reason: str  # cooldown, concurrency, rpm, tpm, throttle, job_concurrency, or a budget's


class ClusterLimiter:
    """Admits LLM calls under limits that hold for the whole cluster."""

    def __init__(
        self, client: redis.Redis, *, window_margin_s: float = C.LIMITER_WINDOW_MARGIN_S
    ) -> None:
        if window_margin_s < 0:
            raise ValueError(f"window_margin_s must be >= 0, got {window_margin_s}")
        self.client = client
        self.window_s = C.LIMITER_WINDOW_S + window_margin_s
        self._acquire = LeanScript(client, limiter_lua.ACQUIRE)
        self._release = LeanScript(client, limiter_lua.RELEASE)
        self._renew = LeanScript(client, limiter_lua.RENEW)
        self._report = LeanScript(client, limiter_lua.REPORT_RATE_LIMITED)
        self._snapshot = LeanScript(client, limiter_lua.SNAPSHOT)
        self._reschedule = LeanScript(client, limiter_lua.RESCHEDULE)
        self._refreshed = Refresher(0)  # when this process last renewed each scope's keys
        self.clock = redis_clock(client)  # Redis' time, passed to each script (no TIME)

    def try_acquire(
        self,
        scope: Scope,
        limits: Limits,
        tokens: int,
        *,
        job_id: str = "",
        job_concurrency: int = 0,
        throttle_ms: int = 0,
        now: float | None = None,
        budget: BudgetAsk | None = None,
        extra: Ops | None = None,
        reserve_s: float = 0.0,
    ) -> Grant | Denied:
        """Admit one call of ``tokens`` tokens now, or say how long to wait.

        Checks, in order: cooldown, the job's throttle, the job's concurrency, the
        scope's concurrency, rpm, tpm, the budgets (``workers.budget``). Nothing is
        reserved unless all pass. ``extra`` updates (``workers.ops``) are made with an
        admission, in the same script call. ``reserve_s``: a call only the rpm limit
        holds back, for at most this long, is admitted for later (``Grant.delay_s``:
        the caller sleeps that long, then calls) instead of refused, so it need not
        ask again.
        ``now`` injects a clock (tests); by default Redis' clock is used.
        """
        _check_request(limits, tokens, job_concurrency, throttle_ms)
        if not job_id:
            job_concurrency = throttle_ms = 0
        part = scope.redis_part()
        lease_id = _new_lease_id(job_id)
        ask = budget if budget is not None and budget.active else None
        keys = [*_scope_keys(part), *_job_keys(job_id), *_budget_keys(ask), wake_key(part)]
        args = [
            now or self.clock.now(), lease_id, tokens, limits.max_concurrent, limits.rpm,
            limits.tpm, limits.lease_s, self.window_s, job_concurrency, throttle_ms / 1000.0,
            self._ttl_ms(limits), C.LIMITER_BURST_DIVISOR, C.LIMITER_CONCURRENCY_WAIT_S,
            C.LIMITER_MIN_WAIT_S, *_budget_args(ask), C.LIMITER_WAKE_TTL_S,
            int(self._refresh_due(part, limits)), reserve_s,
        ]  # fmt: skip
        if extra:
            keys, args = keys + extra.keys, args + extra.args
        reply = self._acquire(keys=keys, args=args)
        if int(reply[0]) == 1:
            return Grant(lease_id, part, tokens, int(reply[2]), int(reply[1]), ask,
                         counts_tokens=limits.tpm > 0, job_slot=job_concurrency > 0,
                         delay_s=float(reply[3]), at=float(reply[4]))  # fmt: skip
        denied = Denied(float(reply[2]), _text(reply[1]))
        logger.debug(
            "limiter %s: denied (%s), wait %.3fs, job %s", part, denied.reason, denied.wait_s,
            job_id or "-",
        )  # fmt: skip
        return denied

    def release(
        self,
        grant: Grant,
        *,
        actual_tokens: int | None = None,
        ok: bool = True,
        now: float | None = None,
        extra: Ops | None = None,
    ) -> None:
        """Give a grant's slot back (and make the ``extra`` updates, in the same call).

        ``actual_tokens`` corrects the tokens counted against tpm to what the call
        really used. ``ok=True`` counts a success towards growing the concurrency
        (AIMD); report a 429 with ``report_rate_limited``, then release with ``ok=False``.
        """
        keys, args = self._release_parts(grant, actual_tokens, ok, now, extra)
        self.released(grant, self._release(keys=keys, args=args))

    def release_rider(
        self, grant: Grant, *, actual_tokens: int | None = None, ok: bool = True,
        extra: Ops | None = None,
    ) -> Rider:  # fmt: skip
        """``release`` as a rider of the step's save (``JobStore.save_step``): the same
        work in the same script call as the result; hand ``Saved.ridden`` to
        ``released``."""
        keys, args = self._release_parts(grant, actual_tokens, ok, None, extra)
        return Rider(_RELEASE_RIDER, keys, args)

    def released(self, grant: Grant, live: Any) -> None:
        """What a release answered: a lease that was gone is worth a line."""
        if not int(live):
            logger.warning(
                "limiter %s: lease %s had expired or was released twice (job %s)",
                grant.scope, grant.lease_id, _lease_job_id(grant.lease_id) or "-",
            )  # fmt: skip

    def _release_parts(
        self, grant: Grant, actual_tokens: int | None, ok: bool, now: float | None,
        extra: Ops | None,
    ) -> tuple[list[str], list[Any]]:  # fmt: skip
        """RELEASE's keys and arguments."""
        scope_keys = _scope_keys(grant.scope)
        keys = [scope_keys[1], scope_keys[2], scope_keys[4], scope_keys[5],
                _job_keys(_lease_job_id(grant.lease_id))[1], wake_key(grant.scope)]  # fmt: skip
        unknown = actual_tokens is None or not grant.counts_tokens
        actual = -1 if unknown else max(0, actual_tokens or 0)
        args = [now or self.clock.now(), grant.lease_id, actual, int(ok), int(grant.job_slot),
                int(C.LIMITER_WAKE_TTL_S * 1000)]  # fmt: skip
        if extra:
            keys, args = keys + extra.keys, args + extra.args
        return keys, args

    def cooled_down_since(self, grant: Grant) -> bool:
        """Whether a 429's cooldown ends after ``grant.at`` (one read): a call admitted
        for later does not go into a cooldown that began while it slept."""
        state = _scope_keys(grant.scope)[1]
        return float(self.client.hget(state, "cool") or 0) > grant.at

    def wait_freed(self, parts: list[str], timeout_s: float) -> bool:
        """Block until a slot of one of these scopes is freed, or ``timeout_s`` passes
        (a lease that expired instead of being released wakes nobody). True if woken.
        Costs one command however long it waits: no polling."""
        timeout = max(0.01, round(timeout_s, 3))
        return self.client.blpop([wake_key(p) for p in parts], timeout=timeout) is not None

    def reschedule_delay(
        self, scope: Scope, limits: Limits, not_before_s: float, *, now: float | None = None
    ) -> float:
        """How long a call re-scheduled for the scope's rpm limit should wait: the next
        free time one request interval after the last re-scheduled call's, at least
        ``not_before_s`` (see RESCHEDULE)."""
        if not limits.rpm:
            return not_before_s
        key = f"{C.KEY_LIMITER_SCOPE.format(scope=scope.redis_part())}:resched"
        args = [now or self.clock.now(), 60.0 / limits.rpm, not_before_s]
        return float(self._reschedule(keys=[key], args=args))

    def renew(self, grant: Grant, lease_s: float, *, now: float | None = None) -> bool:
        """Keep a grant's slot ``lease_s`` more seconds while its call runs; False if the
        lease had already expired (then it is not brought back)."""
        keys = [_scope_keys(grant.scope)[2], _job_keys(_lease_job_id(grant.lease_id))[1]]
        args = [now or self.clock.now(), grant.lease_id, lease_s]
        return bool(int(self._renew(keys=keys, args=args)))

    def report_rate_limited(
        self,
        scope: Scope,
        limits: Limits,
        retry_after_s: float | None,
        *,
        now: float | None = None,
    ) -> float:
        """Record a 429 for ``scope``: everyone cools down, concurrency halves.

        The cooldown is ``retry_after_s`` when the provider gave one (capped at
        ``RETRY_AFTER_MAX_S``), else 1 s doubling per consecutive 429 up to 30 s.
        The halving happens at most once per second. Returns the cooldown applied.
        """
        part = scope.redis_part()
        retry_after = -1.0 if retry_after_s is None else _clip_retry_after(retry_after_s)
        args = [
            now or self.clock.now(), retry_after, limits.max_concurrent, self._ttl_ms(limits),
            C.LIMITER_BACKOFF_INITIAL_S, C.LIMITER_BACKOFF_MAX_S, C.LIMITER_DECREASE_GAP_S,
        ]  # fmt: skip
        keys = _scope_keys(part)[:2]
        cooldown = float(self._report(keys=keys, args=args))
        logger.info("limiter %s: rate limited, cooling down %.2fs", part, cooldown)
        return cooldown

    def acquire(
        self,
        scope: Scope,
        limits: Limits,
        tokens: int,
        *,
        max_wait_s: float,
        job_id: str = "",
        job_concurrency: int = 0,
        throttle_ms: int = 0,
    ) -> Grant | Denied:
        """Like ``try_acquire``, but wait up to ``max_wait_s`` for admission.

        Returns the last ``Denied`` at once when its wait ends after ``max_wait_s``;
        never sleeps past ``max_wait_s``. A full slot is polled (20 ms growing to
        250 ms, jittered) since a release, not time, frees it.
        """
        deadline = time.monotonic() + max_wait_s
        poll = C.LIMITER_POLL_INITIAL_S
        while True:
            result = self.try_acquire(
                scope, limits, tokens,
                job_id=job_id, job_concurrency=job_concurrency, throttle_ms=throttle_ms,
            )  # fmt: skip
            if isinstance(result, Grant):
                return result
            remaining = deadline - time.monotonic()
            if result.reason in _SLOT_REASONS:
                delay = poll * random.uniform(0.5, 1.0)
                poll = min(poll * C.LIMITER_POLL_GROWTH, C.LIMITER_POLL_MAX_S)
            else:
                delay = max(result.wait_s, C.LIMITER_MIN_SLEEP_S)
                if result.wait_s > remaining:
                    return result
            if remaining <= 0:
                return result
            time.sleep(min(delay, remaining))

    def snapshot(self, scope: Scope, limits: Limits, *, now: float | None = None) -> dict[str, Any]:
        """The scope's current state, for stats and metrics (read-only)."""
        keys = _scope_keys(scope.redis_part())
        args = [now or self.clock.now(), limits.max_concurrent, self.window_s]
        reply = self._snapshot(keys=keys, args=args)
        return {
            "in_flight": int(reply[0]),
            "effective_concurrency": int(reply[1]),
            "requests_in_window": int(reply[2]),
            "tokens_in_window": int(float(reply[3])),
            "cooldown_left_s": float(reply[4]),
            "rate_limited_total": int(reply[5]),
        }

    def _refresh_due(self, part: str, limits: Limits) -> bool:
        """Whether this admission should renew the scope's key TTLs and drop expired
        leases (ACQUIRE's ARGV[20]): on this process's first call of the scope, then at
        most every tenth of the TTL, so a scope in use never expires."""
        return self._refreshed.due(part, min(30.0, self._ttl_ms(limits) / 10_000))

    def _ttl_ms(self, limits: Limits) -> int:
        """How long a scope's keys outlive its last use."""
        return int((max(limits.lease_s, self.window_s) + C.LIMITER_KEY_TTL_MARGIN_S) * 1000)


def _check_request(limits: Limits, tokens: int, job_concurrency: int, throttle_ms: int) -> None:
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    if limits.tpm and tokens > limits.tpm:
        raise ValueError(
            f"a call of {tokens} tokens can never fit a limit of {limits.tpm} tokens per "
            "minute: lower max_tokens or raise tpm"
        )
    if job_concurrency < 0 or throttle_ms < 0:
        raise ValueError(
            f"job_concurrency and throttle_ms must be >= 0, got {job_concurrency}, {throttle_ms}"
        )


def _clip_retry_after(seconds: float) -> float:
    return min(max(0.0, seconds), C.RETRY_AFTER_MAX_S)


def _scope_keys(part: str) -> list[str]:
    """cooldown, state, leases, rpm log, tpm log, tpm tokens: the acquire script's order."""
    base = C.KEY_LIMITER_SCOPE.format(scope=part)
    return [f"{base}:{name}" for name in ("cooldown", "state", "leases", "rpm", "tpm", "tpm_tok")]


def wake_key(part: str) -> str:
    """The list a release pushes to when a slot waiter is marked (see RELEASE)."""
    return f"{C.KEY_LIMITER_SCOPE.format(scope=part)}:wake"


def _job_keys(job_id: str) -> list[str]:
    """next (throttle), leases; placeholders nothing writes when there is no job."""
    base = C.KEY_LIMITER_JOB.format(job_id=job_id or "-")
    return [f"{base}:next", f"{base}:leases"]


def _budget_keys(ask: BudgetAsk | None) -> list[str]:
    """job budget, day budget; placeholders nothing writes when there is no budget."""
    if ask is None:
        return [f"{C.KEY_PREFIX}:budget:-", f"{C.KEY_PREFIX}:budget:-"]
    return [ask.job_key, ask.day_key]


def _budget_args(ask: BudgetAsk | None) -> list[Any]:
    if ask is None:
        return [0, 0, 0, 0]
    return [f"{ask.cost:.10f}", ask.job_max, ask.day_max, C.BUDGET_TTL_S]


def _new_lease_id(job_id: str) -> str:
    # The job id rides in the lease id so that release() finds the job's lease set.
    lease = secrets.token_hex(_LEASE_ID_HEX // 2)
    return f"{lease}/{job_id}" if job_id else lease


def _lease_job_id(lease_id: str) -> str:
    return lease_id[_LEASE_ID_HEX + 1 :]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
