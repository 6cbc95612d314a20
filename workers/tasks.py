"""Celery tasks: thin wrappers that check arguments, call plain logic and decide on retry.

Task arguments are ids only (job id, step id, index), readable in Flower and free of
secrets; the spec is read from the job record in Redis.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from genfleet import constants as C
from genfleet.summary import batch_metrics, compute_metrics, final_error, final_status, job_cost
from workers import chapter, runtime
from workers.app import app
from workers.callstats import read_stats
from workers.gateway import CallContext
from workers.taskbase import STEP_OPTIONS, check_ids, run_step

logger = logging.getLogger(__name__)


@app.task(name=C.TASK_CHAPTER_VERSION, **STEP_OPTIONS)
def chapter_version(
    self: Task, job_id: str, step_id: str, index: int, attempts_used: int = 0,
    rate_limited_used: int = 0,
) -> dict:  # fmt: skip
    """Write one candidate version of a chapter."""

    def work(record: Any, ctx: CallContext) -> Any:
        return chapter.generate_version(runtime.gateway(), record, index, ctx)

    return run_step(self, job_id, step_id, int(index), work, attempts_used, rate_limited_used)


@app.task(name=C.TASK_FINALIZE, **STEP_OPTIONS)
def finalize_job(self: Task, job_id: str) -> dict:
    """Give a job its final status and metrics once all its steps have run."""
    check_ids(job_id)
    store = runtime.store()
    view = store.load(job_id)
    status = final_status(view)
    metrics = compute_metrics(view)
    metrics.extra["llm"] = read_stats(store.r, C.KEY_STATS_JOB.format(job_id=job_id))
    metrics.cost_usd = job_cost(metrics.extra["llm"])
    if view.record.kind == C.KIND_BATCH:
        metrics.extra["items"] = batch_metrics(view, metrics)
    error = final_error(view, metrics.cost_usd)
    if store.finish(job_id, status, metrics, error):
        logger.info(
            "job %s (%s): all %d steps done in %.2fs, status %s (parallel mode: %s)",
            job_id, view.record.kind, view.total, metrics.elapsed_s, status,
            view.record.mode == "parallel",
        )  # fmt: skip
    return {"job_id": job_id, "status": status}
