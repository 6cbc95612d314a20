"""What every step task shares: options, argument checks, and the retry decision."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Task

from genfleet import constants as C
from genfleet.claims import new_owner
from genfleet.kinds.canvas import FINALIZE_STEP, task_id_for
from genfleet.outage import REDIS_DOWN, through_outage
from genfleet.records import StepResult
from genfleet.safety import escape_controls, name_problem
from workers import runtime
from workers.app import app
from workers.gateway import CallContext, RetryLater
from workers.stepevents import step_reply
from workers.steps import Work, execute_step

logger = logging.getLogger(__name__)

RESCHEDULES_MAX = 1_000_000
STEP_OPTIONS: dict[str, Any] = {
    "bind": True,
    "autoretry_for": REDIS_DOWN,  # Redis restarting: try again, the step is idempotent
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 50,
    "Request": "workers.stepevents:StepRequest",  # a failed step is failed in Flower
    # No canvas reads a step's Celery result (signatures are immutable; finalize reads
    # the job store), so none is stored; a chord still counts its parts without them.
    "ignore_result": True,
}


def check_ids(*values: str) -> None:
    """Refuse ids that cannot be genfleet's (a hand-made or corrupted message): they
    become Redis keys and file names, so ``..``, ``/`` and control characters are out."""
    for value in values:
        problem = name_problem(value)
        if problem:
            shown = escape_controls(repr(value))[:80]
            raise ValueError(f"bad id argument: {shown}: {problem}")


def run_step(
    task: Task, job_id: str, step_id: str, index: int, work: Work, used: int, limited: int = 0,
    inputs: Sequence[str] = (),
) -> dict:
    """Run a step through ``execute_step``; re-schedule the task when asked to wait.

    ``used`` and ``limited`` are the attempts (and 429s among them) of earlier
    deliveries, carried in the task's kwargs across re-schedules.
    """
    check_ids(job_id, step_id)
    ctx = CallContext(job_id=job_id, step=step_id, attempts_used=used, rate_limited_used=limited)
    owner = new_owner()  # one claimant for this delivery, across waits for Redis
    try:
        result = through_outage(
            lambda: execute_step(
                runtime.store(), job_id, step_id, index, work, ctx,
                task.request.hostname or "", owner, send_finalize, inputs,
            ),
            f"job {job_id} step {step_id}", C.RESULT_SAVE_MAX_WAIT_S,
        )  # fmt: skip
    except RetryLater as e:
        logger.info("job %s step %s: re-scheduled in %.1fs", job_id, step_id, e.delay_s)
        carried = {"attempts_used": e.attempts, "rate_limited_used": e.rate_limited}
        # Waiting (a slot, a cooldown, another attempt's claim) is not failing: Celery's
        # max_retries=None would mean "the task's default", so give a bound never met.
        raise task.retry(countdown=e.delay_s, kwargs=carried, max_retries=RESCHEDULES_MAX) from e
    if result is None:
        return step_reply(job_id, step_id, None)
    _log_step(job_id, step_id, result)
    return step_reply(job_id, step_id, result.ok, f"{result.error_type}: {result.error}")


def send_finalize(job_id: str, round_: int) -> None:
    """Send a job's finalize task: its last step's result is stored (a job finished by
    count, not by a chord). Sent again by a delivery of that step lost before it, the
    task finds the job ended and changes nothing."""
    task_id = task_id_for(job_id, FINALIZE_STEP, round_)
    app.send_task(C.TASK_FINALIZE, args=(job_id,), task_id=task_id)
    logger.info("job %s: every step has its result; finalize sent", job_id)


def _log_step(job_id: str, step_id: str, result: StepResult) -> None:
    """The step's one INFO line (Celery's own received/succeeded lines are off at INFO:
    see ``workers.app``)."""
    if result.ok and logger.isEnabledFor(logging.INFO):
        logger.info(
            "job %s step %s: ok in %.2fs, %d attempt(s), %d+%d tokens",
            job_id, step_id, result.seconds,
            result.attempts, result.tokens_in, result.tokens_out,
        )  # fmt: skip
