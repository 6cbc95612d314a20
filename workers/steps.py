"""Running one step of a job: exactly-once results, failures recorded, never raised.

Plain logic, no Celery. A step whose result is already stored is not run again (a
redelivered message after a lost worker costs no second call). A failure is stored
with its error and the raw answer, so it never sinks its siblings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from genfleet import constants as C
from genfleet.errors import BudgetExceededError, InvalidOutputError, LLMError, StepSkipped
from genfleet.outage import through_outage
from genfleet.records import JobRecord, StepResult
from genfleet.store import JobStore
from workers.gateway import CallContext, ChatResult, RetryLater

logger = logging.getLogger(__name__)

Work = Callable[[JobRecord, CallContext], tuple[Any, ChatResult | None]]


def execute_step(
    store: JobStore, job_id: str, step_id: str, index: int, work: Work, ctx: CallContext,
    worker: str = "",
) -> StepResult | None:  # fmt: skip
    """Run ``work`` for a step unless its result exists; store and return the result.

    Returns None when the job was cancelled. Raises ``RetryLater`` for the task to
    re-schedule itself.
    """
    existing = store.step_ok(job_id, step_id)
    if existing is not None:
        logger.info("job %s step %s: result already stored; not calling again", job_id, step_id)
        return existing
    if store.status(job_id) == C.STATUS_CANCELLED:
        logger.info("job %s step %s: job cancelled; step skipped", job_id, step_id)
        return None
    record = store.record(job_id)
    apply_job_options(ctx, record)
    store.mark_started(job_id, step_id)
    started = time.time()
    base: dict[str, Any] = {
        "step_id": step_id,
        "index": index,
        "started_at": started,
        "worker": worker,
    }
    try:
        output, call = work(record, ctx)
    except RetryLater:
        raise
    except StepSkipped as e:
        logger.warning("job %s step %s skipped: %s", job_id, step_id, e)
        result = _failure(job_id, base, e, attempts=0)
    except BudgetExceededError as e:
        result = _failure(job_id, base, e, attempts=0, error_type=C.STEP_BUDGET_EXCEEDED)
    except InvalidOutputError as e:
        result = _failure(job_id, base, e, raw=e.raw, attempts=max(1, e.attempts))
    except LLMError as e:
        result = _failure(job_id, base, e, attempts=max(1, e.attempts))
    except Exception as e:  # a defect must not sink the job: record it, keep serving
        logger.exception("job %s step %s: unexpected error", job_id, step_id)
        result = _failure(job_id, base, e, attempts=ctx.attempts_used + 1)
    else:
        result = StepResult(
            **base, ok=True, output=output, finished_at=time.time(),
            attempts=call.attempts if call else 1,
            tokens_in=call.tokens_in if call else 0,
            tokens_out=call.tokens_out if call else 0,
            model=call.model if call else "",
            cached=call.cached if call else False,
            cost_usd=call.cost_usd if call else 0.0,
            meta=_call_meta(call),
        )  # fmt: skip
    saved = through_outage(lambda: store.save_step(job_id, result), f"job {job_id} step {step_id}")
    if not saved:
        logger.info("job %s step %s: a result was stored meanwhile; keeping it", job_id, step_id)
        return store.step_ok(job_id, step_id)
    return result


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
