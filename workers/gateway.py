"""The LLM gateway: every LLM call of the project goes through ``LLMGateway.chat``.

Per call: the response cache; a key from the pool with headroom; admission by the
cluster-wide limiter (concurrency leases, RPM/TPM windows, the shared cooldown after a
429, adaptive concurrency, the job's throttle); the call with the key's ``openai``
client (SDK retries off); then the one retry policy of ``workers.retry``. Short waits
block here; a wait for the limiter longer than ``LIMITER_INLINE_WAIT_MAX_S`` (other
waits: ``INLINE_WAIT_MAX_S``) raises ``RetryLater`` so the task re-schedules itself
instead of holding a worker slot.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from genfleet import constants as C
from genfleet.errors import (
    LLMError,
    PermanentLLMError,
    RateLimitedError,
    TransientLLMError,
    mask_secrets,
)
from genfleet.outage import REDIS_DOWN, is_redis_down
from genfleet.prices import load_prices
from genfleet.settings import Settings
from genfleet.store import Rider
from genfleet.tokens import estimate_messages_tokens
from workers.batch import BatchCalls
from workers.budget import REASONS as BUDGET_REASONS
from workers.budget import BudgetAsk, Budgets, make_ask
from workers.cache import Entry, ResponseCache
from workers.callstats import CallStats, Cost
from workers.gateway_types import CallContext, ChatRequest, ChatResult, HeldRelease, RetryLater
from workers.heartbeat import renewing
from workers.keypool import ApiKey, KeyPool, keys_from_settings
from workers.limiter import ClusterLimiter, Denied, Grant, Scope
from workers.ops import Ops
from workers.provider_call import HeaderSink, call_chat
from workers.ratelimit_headers import LearnedLimits
from workers.retry import retry_delay

__all__ = ["CallContext", "ChatRequest", "ChatResult", "LLMGateway", "RetryLater"]

logger = logging.getLogger(__name__)

_SLOT_REASONS = frozenset({"concurrency", "job_concurrency"})
_AUTH_STATUSES = frozenset({401, 403})


class LLMGateway:
    """Makes chat calls under the cluster's limits with the project's one retry policy."""

    def __init__(
        self, settings: Settings, client: redis.Redis, keys: list[ApiKey] | None = None
    ) -> None:
        self.settings = settings
        self.max_retries = settings.llm_max_retries
        self.pool = KeyPool(keys or keys_from_settings(settings), client, settings.llm_timeout_s)
        self.limiter = ClusterLimiter(client)
        self.cache = ResponseCache(client, settings.llm_cache_ttl_s)
        self.stats = CallStats(client, settings.result_ttl_s)
        self.prices = load_prices(settings.genfleet_prices, settings.genfleet_providers)
        self.budgets = Budgets(client)
        self.learned = LearnedLimits(client)
        self.batch = BatchCalls(client, settings, self.pool, self.prices, self.budgets)
        self._cache_ns = ",".join(sorted({k.provider for k in self.pool.keys}))
        self._effective: dict[Scope, int] = {}
        self._wait_queues: dict[str, threading.Lock] = {}
        self._waiters_lock = threading.Lock()

    def chat(self, request: ChatRequest, ctx: CallContext) -> ChatResult:
        """Make the call; raises ``LLMError`` or ``RetryLater``."""
        self.flush_held(ctx)  # an earlier call of the step: its release goes now
        if ctx.api_mode == C.API_BATCH:
            return self.batch.chat(request, ctx)
        entry = self.cache.entry_for(self._cache_ns, request, ctx)
        if entry.look:
            hit = self.cache.get(entry.digest)
            if hit is not None:
                self.stats.add(ctx.job_id, None, cache_hits=1)
                logger.info("job %s step %s: answered from the cache", ctx.job_id, ctx.step)
                return hit
        return self._chat_with_retries(request, ctx, entry)

    def _chat_with_retries(
        self, request: ChatRequest, ctx: CallContext, entry: Entry | None = None
    ) -> ChatResult:
        tally = _Tally(ctx.attempts_used, ctx.rate_limited_used)
        tokens = estimate_messages_tokens(request.messages) + request.max_tokens
        while True:
            key, grant, waited = self._admit(request, ctx, tokens, tally)
            if grant.delay_s > 0:
                time.sleep(grant.delay_s)
                waited += grant.delay_s
                if not self._still_go(grant, ctx):
                    continue
            tally.attempts += 1
            outcome = self._attempt(key, grant, request, ctx, tally.attempts, waited, entry)
            if isinstance(outcome, ChatResult):
                return outcome
            if isinstance(outcome, TransientLLMError):
                tally.rate_limited += isinstance(outcome, RateLimitedError)
                delay = self._after_transient(key, outcome, ctx, tally, waited)
            else:
                self.stats.add(ctx.job_id, key.key_id, failed=1, wait_s=waited)
                if outcome.status in _AUTH_STATUSES:
                    self.pool.disable(key, f"HTTP {outcome.status} from the provider")
                    tally.attempts -= 1  # the key was bad, not the request: try another key
                    continue
                raise _located(outcome, ctx, tally.attempts) from None
            if delay > C.INLINE_WAIT_MAX_S:
                raise RetryLater(
                    delay, tally.attempts, "backoff after a transient error", tally.rate_limited
                )
            time.sleep(delay)

    def _attempt(
        self, key: ApiKey, grant: Grant, request: ChatRequest, ctx: CallContext, attempts: int,
        waited: float, entry: Entry | None,
    ) -> ChatResult | LLMError:  # fmt: skip
        """One call under its grant (which counted the call for the job: a crash is a
        call): the lease is renewed while the call runs and given back (its budget
        settled) whatever happens, with a success's counters, the cache entry and the
        keys' counters when due (``CallStats.ended``) in the same command; a 429 is
        reported to every worker."""
        ok, actual, cost, after = False, None, 0.0, None
        answer: ChatResult | None = None  # to keep in the cache unless its step stores it
        self.stats.started(key.key_id)
        try:
            with renewing(f"limiter lease {grant.lease_id}", lambda: self._renew(grant, key)):
                result = call_chat(
                    self.pool.client_for(key), request, key.provider,
                    self.settings.llm_timeout_s, attempts, self._header_sink(key, request.model),
                )  # fmt: skip
            ok, cost = True, self._price(key, request.model, result)
            # In auto-TPM mode the reservation stays: it is in the provider's units.
            actual = None if key.limits.auto_tpm else result.tokens_in + result.tokens_out
            after = self._success_ops(key, grant, request.model, result, ctx, waited)
            if entry and entry.per_run and ctx.hold_release:
                answer = result
            elif entry:
                self.cache.put_op(after, entry.digest, result)
            return result
        except LLMError as e:
            error = mask_secrets(e, self.pool.secrets())
            if isinstance(error, RateLimitedError):
                self._report_rate_limited(key, request, error, ctx)
            return error
        finally:
            after = self.stats.ended(after)
            if ok and ctx.hold_release:
                ctx.held = self._held(grant, actual, cost, after, entry, answer)
            else:
                self._release(grant, actual_tokens=actual, ok=ok, cost=cost, extra=after)

    def _held(
        self, grant: Grant, actual: int | None, cost: float, after: Ops | None,
        entry: Entry | None, answer: ChatResult | None,
    ) -> HeldRelease:  # fmt: skip
        """A success's release, to ride with the step's result (``CallContext.held``).
        Its ``answer`` for the step's own cache entry is kept only if the step stores
        no success: a stored result is what a second delivery finds."""

        def with_answer() -> Ops:
            ops = after.copy() if after else Ops()
            if answer is not None and entry:
                self.cache.put_op(ops, entry.digest, answer)
            return ops

        def rider_for(stored_ok: bool) -> Rider:
            extra = after if stored_ok else with_answer()
            return self.limiter.release_rider(grant, actual_tokens=actual, extra=extra)

        def flush() -> None:
            self._release(grant, actual_tokens=actual, ok=True, cost=cost, extra=with_answer())

        def done(ridden: Any) -> None:
            self.limiter.released(grant, ridden)
            self._settle(grant, cost)

        return HeldRelease(rider_for, flush, done)

    @staticmethod
    def flush_held(ctx: CallContext) -> None:
        """Release on its own a success's release still held (``CallContext.held``)."""
        held, ctx.held = ctx.held, None
        if held is not None:
            held.flush()

    def _still_go(self, grant: Grant, ctx: CallContext) -> bool:
        """After a long sleep for its time (``Grant.delay_s``): False, with the grant
        given back and its call uncounted, when a 429's cooldown began meanwhile (the
        call is then admitted again, after the cooldown)."""
        if grant.delay_s < C.LIMITER_RESERVE_CHECK_S or not self.limiter.cooled_down_since(grant):
            return True
        logger.info("job %s step %s: a cooldown began while the call waited for its time",
                    ctx.job_id, ctx.step)  # fmt: skip
        uncount = self.stats.ops(ctx.job_id, None, {"calls": -1}, expire=False)
        self._release(grant, ok=False, extra=uncount)
        return False

    def _price(self, key: ApiKey, model: str, result: ChatResult) -> float:
        """Set the result's cost from the price table; the cost to settle (0 if unknown)."""
        price = self.prices.price(result.model, key.provider) or self.prices.price(
            model, key.provider
        )
        result.cost_usd = price.cost(result.tokens_in, result.tokens_out) if price else None
        return result.cost_usd or 0.0

    def _header_sink(self, key: ApiKey, model: str) -> HeaderSink | None:
        if not (key.limits.auto_rpm or key.limits.auto_tpm):
            return None
        return lambda headers: self._learn(key, model, headers)

    def _renew(self, grant: Grant, key: ApiKey) -> None:
        if not self.limiter.renew(grant, key.limits.lease_s):
            logger.warning("limiter lease %s had expired while its call ran", grant.lease_id)

    def _report_rate_limited(
        self, key: ApiKey, request: ChatRequest, error: RateLimitedError, ctx: CallContext
    ) -> None:
        scope = Scope(key.provider, key.key_id, request.model)
        try:
            cooldown = self.limiter.report_rate_limited(scope, key.limits, error.retry_after_s)
        except REDIS_DOWN as e:
            logger.warning("job %s step %s: 429 not shared (%s)", ctx.job_id, ctx.step,
                           e.__class__.__name__)  # fmt: skip
            return
        logger.warning(
            "job %s step %s: 429 on key %s; every worker pauses it for %.2fs",
            ctx.job_id, ctx.step, key.key_id, cooldown,
        )  # fmt: skip

    def _success_ops(
        self, key: ApiKey, grant: Grant, model: str, result: ChatResult, ctx: CallContext,
        waited: float,
    ) -> Ops:  # fmt: skip
        """Fill in the result's call facts; the counters a success adds."""
        result.key_id = key.key_id
        result.limiter_wait_s = round(waited, 4)
        result.effective_concurrency = grant.effective_concurrency
        counts = {"ok": 1, "tokens_in": result.tokens_in, "tokens_out": result.tokens_out}
        return self.stats.ops(
            ctx.job_id, key.key_id, counts, wait_s=waited,
            effective_concurrency=grant.effective_concurrency, model=model,
            cost=Cost(model, result.cost_usd),
        )  # fmt: skip

    def _after_transient(
        self, key: ApiKey, error: TransientLLMError, ctx: CallContext, tally: _Tally,
        waited: float,
    ) -> float:  # fmt: skip
        """Count a transient failure; raise it if it was the last try, else the delay."""
        attempts = tally.attempts
        limited = isinstance(error, RateLimitedError)
        max_retries = self.max_retries if ctx.max_retries is None else ctx.max_retries
        if limited:
            final = tally.rate_limited > C.RATE_LIMITED_MAX_RETRIES
        else:
            final = attempts - tally.rate_limited > max_retries
        self.stats.add(
            ctx.job_id, key.key_id, failed=int(final), retries=int(not final),
            rate_limited=int(limited), server_errors=int((error.status or 0) >= 500),
            wait_s=waited,
        )  # fmt: skip
        if final:
            raise _located(error, ctx, attempts)
        # After a 429 the shared cooldown holds every worker back; admission waits for it.
        delay = 0.0 if limited else retry_delay(error, attempts)
        logger.warning(
            "job %s step %s: attempt %d failed (%s); retry in %.2fs",
            ctx.job_id, ctx.step, attempts, error, delay,
        )  # fmt: skip
        return delay

    def _release(self, grant: Grant, cost: float = 0.0, **kw: Any) -> None:
        """Give the lease back and settle its budget reservation with ``cost`` (what
        the provider billed); in a Redis outage the lease expires within ``LEASE_S``
        (and the counters and cache entry that rode along are lost: the answer is not)."""
        try:
            self.limiter.release(grant, **kw)
        except redis.RedisError as e:
            if not is_redis_down(e):
                raise
            logger.warning("could not release limiter lease %s (%s); it will expire",
                           grant.lease_id, e.__class__.__name__)  # fmt: skip
            return
        self._settle(grant, cost)

    def _settle(self, grant: Grant, cost: float) -> None:
        """Settle the grant's budget reservation with what the call cost."""
        if grant.budget is None:
            return
        job_id = grant.lease_id.partition("/")[2]
        try:
            self.budgets.settle(grant.lease_id, job_id, grant.budget.day_key, cost)
        except redis.RedisError as e:
            if not is_redis_down(e):
                raise
            logger.warning("could not settle the budget of lease %s (%s)",
                           grant.lease_id, e.__class__.__name__)  # fmt: skip

    def _admit(
        self, request: ChatRequest, ctx: CallContext, tokens: int, tally: _Tally
    ) -> tuple[ApiKey, Grant, float]:
        """A key and the limiter's grant; waits briefly, else raises ``RetryLater``.

        A denied call does not poll. It queues behind this process's other waiters
        for the model (only the first of them asks Redis; a call that finds others
        waiting queues without asking), then sleeps until the admission time the
        limiter computed (a time of its own under an rpm limit: see ACQUIRE), or,
        when a slot is the limit, blocks on the scope's wake-up list until a release
        frees one.
        """
        queue = self._waiters(request.model)
        got: tuple[ApiKey, Grant] | list[Denied] | None = None
        if not queue.locked():  # a call of ours already waits: asking now would be refused
            got = self._try_keys(request, ctx, tokens)
            if not isinstance(got, list):
                return (*got, 0.0)
        started = time.monotonic()
        fresh = got is not None and queue.acquire(blocking=False)  # else ask again when first
        if not fresh and not queue.acquire(timeout=C.LIMITER_INLINE_WAIT_MAX_S):
            got = self._try_keys(request, ctx, tokens)
            if not isinstance(got, list):
                return (*got, time.monotonic() - started)
            raise self._wait_later(got, C.LIMITER_INLINE_WAIT_MAX_S, tally, request, ctx)
        try:
            while True:
                waited = time.monotonic() - started
                if not fresh:
                    got = self._try_keys(request, ctx, tokens)
                    if not isinstance(got, list):
                        return (*got, waited)
                fresh = False
                assert isinstance(got, list)
                best = min(got, key=lambda d: d.wait_s)
                slot_only = all(d.reason in _SLOT_REASONS for d in got)
                delay = C.LIMITER_INLINE_WAIT_MAX_S - waited if slot_only else best.wait_s
                if delay <= 0 or (not slot_only and waited + delay > C.LIMITER_INLINE_WAIT_MAX_S):
                    raise self._wait_later(got, delay, tally, request, ctx)
                if slot_only:
                    parts = [
                        Scope(k.provider, k.key_id, request.model).redis_part()
                        for k in self._ordered_keys(request.model, ctx)
                    ]
                    self.limiter.wait_freed(parts, delay)
                else:
                    time.sleep(max(delay, C.LIMITER_MIN_SLEEP_S) * random.uniform(1.0, 1.05))
        finally:
            queue.release()

    def _try_keys(
        self, request: ChatRequest, ctx: CallContext, tokens: int
    ) -> tuple[ApiKey, Grant] | list[Denied]:
        """A grant from the first key that admits the call, else every key's denial
        (a budget's denial raises)."""
        denials: list[Denied] = []
        for key in self._ordered_keys(request.model, ctx):
            got = self._try_key(key, request, ctx, tokens)
            if isinstance(got, Grant):
                return key, got
            denials.append(got)
        over = next((d for d in denials if d.reason in BUDGET_REASONS), None)
        if over is not None:
            raise self._over_budget(over.reason, request, ctx, tokens)
        return denials

    def _waiters(self, model: str) -> threading.Lock:
        """This process's queue of calls waiting for ``model``: one lock, held by the
        one waiter that asks the limiter."""
        with self._waiters_lock:
            return self._wait_queues.setdefault(model, threading.Lock())

    def _wait_later(
        self, denials: list[Denied], delay: float, tally: _Tally, request: ChatRequest,
        ctx: CallContext,
    ) -> RetryLater:  # fmt: skip
        """A wait too long to block a worker thread: the task re-schedules itself. Under
        an rpm limit it takes the next free time of the re-scheduled calls, so they
        come back spaced out instead of all at once."""
        best = min(denials, key=lambda d: d.wait_s)
        slot_only = all(d.reason in _SLOT_REASONS for d in denials)
        later = C.INLINE_WAIT_MAX_S / 3 if slot_only else max(best.wait_s, delay)
        if best.reason == "rpm":
            key = self._ordered_keys(request.model, ctx)[0]
            scope = Scope(key.provider, key.key_id, request.model)
            later = self.limiter.reschedule_delay(
                scope, self.learned.limits(scope, key.limits), best.wait_s
            )
        return RetryLater(later, tally.attempts, f"limiter: {best.reason}", tally.rate_limited)

    def _try_key(
        self, key: ApiKey, request: ChatRequest, ctx: CallContext, tokens: int
    ) -> Grant | Denied:
        scope = Scope(key.provider, key.key_id, request.model)
        limits = self.learned.limits(scope, key.limits)
        if limits.tpm and tokens > limits.tpm:
            raise PermanentLLMError(
                f"this call needs about {tokens} tokens, more than the key's "
                f"tokens-per-minute limit of {limits.tpm}; lower max_tokens or the prompt",
                provider=key.provider, model=request.model, job_id=ctx.job_id, step=ctx.step,
            )  # fmt: skip
        got = self.limiter.try_acquire(
            scope, limits, tokens, job_id=ctx.job_id,
            job_concurrency=ctx.job_concurrency, throttle_ms=ctx.throttle_ms,
            budget=self._budget_ask(key, request, ctx, tokens - request.max_tokens),
            extra=self.stats.ops(ctx.job_id, None, {"calls": 1}, expire=False),
            reserve_s=C.LIMITER_RESERVE_MAX_S,
        )  # fmt: skip
        if isinstance(got, Grant):
            self._note_effective(scope, got.effective_concurrency)
        return got

    def _budget_ask(
        self, key: ApiKey, request: ChatRequest, ctx: CallContext, prompt_tokens: int
    ) -> BudgetAsk:
        """The call's worst-case cost (prompt estimate + max_tokens) against the budgets."""
        cost = self.prices.cost(
            request.model, prompt_tokens, request.max_tokens, provider=key.provider
        )
        return make_ask(cost, ctx.job_id, ctx.max_cost_usd, self.settings.llm_budget_usd_per_day)

    def _over_budget(
        self, reason: str, request: ChatRequest, ctx: CallContext, tokens: int
    ) -> LLMError:
        key = self.pool.usable()[0]
        ask = self._budget_ask(key, request, ctx, tokens - request.max_tokens)
        error = self.budgets.exceeded(reason, ask, request.model, ctx.job_id, ctx.step)
        logger.warning("job %s step %s: not called: %s", ctx.job_id, ctx.step, error)
        return error

    def _ordered_keys(self, model: str, ctx: CallContext) -> list[ApiKey]:
        keys = self.pool.usable()
        if not keys:
            raise PermanentLLMError(
                "no usable API key: every key in the pool was refused (401/403); "
                "check OPENAI_API_KEY, OPENAI_API_KEYS or GENFLEET_PROVIDERS",
                model=model, job_id=ctx.job_id, step=ctx.step,
            )  # fmt: skip
        if len(keys) == 1:
            return keys
        return sorted(keys, key=lambda k: self._headroom(k, model), reverse=True)

    def _headroom(self, key: ApiKey, model: str) -> float:
        """The key's free share of its tightest limit (1 = idle, 0 = full)."""
        scope = Scope(key.provider, key.key_id, model)
        limits = self.learned.limits(scope, key.limits)
        snap = self.limiter.snapshot(scope, limits)
        if snap["cooldown_left_s"] > 0:
            return -snap["cooldown_left_s"]
        shares = [1 - snap["in_flight"] / max(1, snap["effective_concurrency"])]
        if limits.rpm:
            shares.append(1 - snap["requests_in_window"] / limits.rpm)
        if limits.tpm:
            shares.append(1 - snap["tokens_in_window"] / limits.tpm)
        return min(shares)

    def _note_effective(self, scope: Scope, value: int) -> None:
        before = self._effective.get(scope)
        if before != value:
            self._effective[scope] = value
            if before is not None:
                logger.info(
                    "key %s model %s: effective concurrency %d -> %d",
                    scope.key_id, scope.model, before, value,
                )  # fmt: skip

    def _learn(self, key: ApiKey, model: str, headers: Any) -> None:
        """Keep what the answer's x-ratelimit-* headers say (``auto`` limits)."""
        scope = Scope(key.provider, key.key_id, model)
        ours = None
        if key.limits.auto_tpm:
            limits = self.learned.limits(scope, key.limits)
            ours = self.limiter.snapshot(scope, limits)["tokens_in_window"]
        try:
            self.learned.observe(scope, key.limits, headers, ours)
        except REDIS_DOWN as e:
            logger.warning("could not keep the provider's limits (%s)", e.__class__.__name__)


@dataclass
class _Tally:
    """Attempts of one call so far (earlier deliveries included), and how many got 429."""

    attempts: int
    rate_limited: int


def _located(error: LLMError, ctx: CallContext, attempts: int) -> LLMError:
    error.job_id, error.step, error.attempts = ctx.job_id, ctx.step, attempts
    return error


_lock = threading.Lock()
_gateway: LLMGateway | None = None


def get_gateway(settings: Settings, client: redis.Redis) -> LLMGateway:
    """The process's one gateway (created on first use; reset after a fork)."""
    global _gateway
    with _lock:
        if _gateway is None:
            _gateway = LLMGateway(settings, client)
        return _gateway


def flush_gateway() -> None:
    """Write what the process's gateway holds back (keys' counters) before it exits."""
    with _lock:
        gateway = _gateway
    if gateway is not None:
        gateway.stats.flush()


def reset_gateway() -> None:
    """Forget the process's gateway (a forked child must not share the parent's sockets)."""
    global _gateway
    with _lock:
        _gateway = None
