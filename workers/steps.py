"""Running one step of a job: exactly-once calls, failures recorded, never raised.

Plain logic, no Celery. A step whose result is already stored is not run again; a
step another attempt is working on (a live claim) is not run in parallel. A failure
is stored with its error and the raw answer, so it never sinks its siblings; a Redis
outage is not a failure: the step waits for Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from genfleet import constants as C
from genfleet.claims import StepClaims, new_owner
from genfleet.errors import BudgetExceededError, InvalidOutputError, LLMError, StepSkipped
from genfleet.outage import REDIS_DOWN, is_redis_down, through_outage
from genfleet.records import JobRecord, StepResult
from genfleet.store import JobStore, Saved, StepStart
from workers.gateway import CallContext, ChatResult, LLMGateway, RetryLater
from workers.gateway_types import HeldRelease
from workers.heartbeat import renewing

logger = logging.getLogger(__name__)

CLAIM_POLL_S = 0.5  # how often a second delivery looks whether the claim was freed
Work = Callable[[JobRecord, CallContext], tuple[Any, ChatResult | None]]
OnComplete = Callable[[str, int], None]


def execute_step(
    store: JobStore, job_id: str, step_id: str, index: int, work: Work, ctx: CallContext,
    worker: str = "", owner: str = "", on_complete: OnComplete | None = None,
    inputs: Sequence[str] = (),
) -> StepResult | None:  # fmt: skip
    """Run ``work`` for a step unless its result exists; store and return the result.

    The step claims itself first (``genfleet.claims``) and holds the claim, renewed,
    until its result is stored: another delivery of the same step waits meanwhile.
    Returns None when the job was cancelled. Raises ``RetryLater`` for the task to
    re-schedule itself, and a ``REDIS_DOWN`` error for it to wait for Redis: a Redis
    outage is never the step's failure. ``on_complete(job_id, round)`` is called when
    this step's result is the last one a job finished by count waited for. The job
    ``inputs`` named are read with the step's start (``ctx.inputs``).
    """
    owner = owner or new_owner()
    start = _begin(store, job_id, step_id, owner, ctx, inputs)
    if start.existing is not None:
        logger.info("job %s step %s: result already stored; not calling again", job_id, step_id)
        if start.complete and on_complete is not None:  # a delivery lost before finalize
            on_complete(job_id, start.round)
        return start.existing
    if start.record is None:
        logger.info("job %s step %s: job cancelled; step skipped", job_id, step_id)
        return None
    claims = store.claims
    given_back = False
    try:
        renew = lambda: claims.renew(job_id, step_id, owner)  # noqa: E731
        with renewing(f"job {job_id} step {step_id} claim", renew):
            apply_job_options(ctx, start.record)
            ctx.run_round, ctx.asked_before, ctx.inputs = start.round, start.tried, start.inputs
            ctx.hold_release = True  # the last call's release rides with the result
            result = _outcome(job_id, step_id, index, work, ctx, worker, start.record)
            held = [ctx.held] if ctx.held else []
            ctx.held = None
            saved = through_outage(
                lambda: _save(store, job_id, result, owner, held),
                f"job {job_id} step {step_id} result", max_wait_s=C.RESULT_SAVE_MAX_WAIT_S,
            )  # fmt: skip
            given_back = True
    finally:
        LLMGateway.flush_held(ctx)  # the work ended without a result to ride with
        if not given_back:
            _release_claim(claims, job_id, step_id, owner)
    if saved.complete and on_complete is not None:
        on_complete(job_id, saved.round)
    if not saved.stored:
        logger.info("job %s step %s: a result was stored meanwhile; keeping it", job_id, step_id)
        return store.step_ok(job_id, step_id)
    return result


def _save(
    store: JobStore, job_id: str, result: StepResult, owner: str, held: list[HeldRelease]
) -> Saved:
    """Store the result; the last call's held release (if any) rides along on the first
    try only: a try that Redis cut short may have done it already (its lease then
    expires by itself, as a release lost in an outage does)."""
    release = held.pop() if held else None
    rider = None if release is None else release.rider_for(result.ok)
    saved = store.save_step(job_id, result, owner, rider)
    if release is not None:
        release.done(saved.ridden)
    return saved


def _begin(
    store: JobStore, job_id: str, step_id: str, owner: str, ctx: CallContext,
    inputs: Sequence[str],
) -> StepStart:  # fmt: skip
    """Begin the step, waiting briefly for another attempt's live claim; else ``RetryLater``."""
    waited = 0.0
    while True:
        start = store.begin_step(job_id, step_id, owner, C.LEASE_S, inputs)
        if start.took_over_from:
            logger.warning("job %s step %s: attempt %s died holding the step; taking over",
                           job_id, step_id, start.took_over_from)  # fmt: skip
        if not start.busy_owner:
            return start
        delay = min(max(start.busy_left_s, CLAIM_POLL_S), C.LEASE_S)
        if waited + delay > C.INLINE_WAIT_MAX_S:
            logger.info("job %s step %s: attempt %s is working on it; re-scheduled",
                        job_id, step_id, start.busy_owner)  # fmt: skip
            raise RetryLater(max(delay, CLAIM_POLL_S), ctx.attempts_used,
                             "another attempt holds the step", ctx.rate_limited_used)  # fmt: skip
        time.sleep(delay)
        waited += delay


def _release_claim(claims: StepClaims, job_id: str, step_id: str, owner: str) -> None:
    try:
        claims.release(job_id, step_id, owner)
    except REDIS_DOWN as e:  # it expires by itself within LEASE_S
        logger.warning("job %s step %s: claim not released (%s); it will expire",
                       job_id, step_id, e.__class__.__name__)  # fmt: skip


def _outcome(
    job_id: str, step_id: str, index: int, work: Work, ctx: CallContext, worker: str,
    record: JobRecord,
) -> StepResult:  # fmt: skip
    """Run the work; its result, or its failure as a result. Redis errors propagate."""
    base: dict[str, Any] = {
        "step_id": step_id,
        "index": index,
        "started_at": time.time(),
        "worker": worker,
    }
    try:
        output, call = work(record, ctx)
    except RetryLater:
        raise
    except redis.RedisError as e:
        if is_redis_down(e):
            raise  # the step waits for Redis: never a failure of its own
        logger.exception("job %s step %s: unexpected Redis error", job_id, step_id)
        return _failure(job_id, base, e, attempts=ctx.attempts_used + 1)
    except StepSkipped as e:
        logger.warning("job %s step %s skipped: %s", job_id, step_id, e)
        return _failure(job_id, base, e, attempts=0)
    except BudgetExceededError as e:
        return _failure(job_id, base, e, attempts=0, error_type=C.STEP_BUDGET_EXCEEDED)
    except InvalidOutputError as e:
        return _failure(job_id, base, e, raw=e.raw, attempts=max(1, e.attempts))
    except LLMError as e:
        return _failure(job_id, base, e, attempts=max(1, e.attempts))
    except Exception as e:  # a defect must not sink the job: record it, keep serving
        logger.exception("job %s step %s: unexpected error", job_id, step_id)
        return _failure(job_id, base, e, attempts=ctx.attempts_used + 1)
    return StepResult(
        **base, ok=True, output=output, finished_at=time.time(),
        attempts=call.attempts if call else 1,
        tokens_in=call.tokens_in if call else 0,
        tokens_out=call.tokens_out if call else 0,
        model=call.model if call else "",
        cached=call.cached if call else False,
        cost_usd=call.cost_usd if call else 0.0,
        meta=_call_meta(call),
    )  # fmt: skip


def apply_job_options(ctx: CallContext, record: JobRecord) -> None:
    """Copy a job's own call options (cache, throttle, concurrency) into the context."""
    spec = record.spec
    ctx.cache = spec.get("cache")
    ctx.throttle_ms = int(spec.get("throttle_ms") or 0)
    ctx.job_concurrency = int(spec.get("concurrency") or 0)
    retries = spec.get("retries")
    ctx.max_retries = None if retries is None else int(retries)
    budget = spec.get("max_cost_usd")
    ctx.max_cost_usd = None if budget is None else float(budget)
    ctx.api_mode = str(spec.get("api_mode") or C.API_ONLINE)


def _call_meta(call: ChatResult | None) -> dict[str, Any]:
    if call is None:
        return {}
    return {
        "key_id": call.key_id,
        "limiter_wait_s": call.limiter_wait_s,
        "effective_concurrency": call.effective_concurrency,
    }


def _failure(
    job_id: str, base: dict[str, Any], error: Exception, *, attempts: int, raw: str = "",
    error_type: str = "",
) -> StepResult:  # fmt: skip
    logger.error("job %s step %s failed: %s", job_id, base["step_id"], error)
    return StepResult(
        **base,
        ok=False,
        error=str(error),
        error_type=error_type or error.__class__.__name__,
        cost_usd=0.0 if error_type == C.STEP_BUDGET_EXCEEDED else None,
        raw=raw or None,
        attempts=attempts,
        finished_at=time.time(),
    )
