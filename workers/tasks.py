"""Celery tasks: thin wrappers that check arguments, call plain logic and decide on retry.

Task arguments are ids only (job id, step id, index), readable in Flower and free of
secrets; the spec is read from the job record in Redis.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task

from genfleet import constants as C
from genfleet.summary import compute_metrics, final_error, final_status
from workers import chapter, runtime
from workers.app import app
from workers.callstats import read_stats
from workers.gateway import CallContext, RetryLater
from workers.steps import Work, execute_step

logger = logging.getLogger(__name__)

_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
_STEP_OPTIONS: dict[str, Any] = {
    "bind": True,
    "autoretry_for": _REDIS_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 50,
}


def _check_ids(*values: str) -> None:
    for value in values:
        if not isinstance(value, str) or not value or len(value) > 128:
            raise ValueError(f"bad id argument: {value!r}")


def _run_step(task: Task, job_id: str, step_id: str, index: int, work: Work, used: int) -> dict:
    _check_ids(job_id, step_id)
    ctx = CallContext(job_id=job_id, step=step_id, attempts_used=used)
    try:
        result = execute_step(
            runtime.store(), job_id, step_id, index, work, ctx, worker=task.request.hostname or ""
        )
    except RetryLater as e:
        logger.info("job %s step %s: re-scheduled in %.1fs", job_id, step_id, e.delay_s)
        raise task.retry(
            countdown=e.delay_s, kwargs={"attempts_used": e.attempts}, max_retries=None
        ) from e
    return {"job_id": job_id, "step": step_id, "ok": None if result is None else result.ok}


@app.task(name=C.TASK_CHAPTER_VERSION, **_STEP_OPTIONS)
def chapter_version(
    self: Task, job_id: str, step_id: str, index: int, attempts_used: int = 0
) -> dict:
    """Write one candidate version of a chapter."""

    def work(record: Any, ctx: CallContext) -> Any:
        return chapter.generate_version(runtime.gateway(), record, index, ctx)

    return _run_step(self, job_id, step_id, int(index), work, attempts_used)


@app.task(name=C.TASK_FINALIZE, **_STEP_OPTIONS)
def finalize_job(self: Task, job_id: str) -> dict:
    """Give a job its final status and metrics once all its steps have run."""
    _check_ids(job_id)
    store = runtime.store()
    view = store.load(job_id)
    status = final_status(view)
    metrics = compute_metrics(view)
    metrics.extra["llm"] = read_stats(store.r, C.KEY_STATS_JOB.format(job_id=job_id))
    error = final_error(view)
    if store.finish(job_id, status, metrics, error):
        logger.info(
            "job %s (%s): all %d steps done in %.2fs, status %s (parallel mode: %s)",
            job_id, view.record.kind, view.total, metrics.elapsed_s, status,
            view.record.mode == "parallel",
        )  # fmt: skip
    return {"job_id": job_id, "status": status}
