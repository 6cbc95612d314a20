"""The control task that ends every job: ``finalize_job``.

The step tasks of every kind are made by the task factory (``workers.kind_tasks``).
"""

from __future__ import annotations

import logging

from celery import Task

from genfleet import constants as C
from genfleet.kinds import get_kind
from genfleet.summary import compute_metrics, final_error, final_status, job_cost
from workers import runtime
from workers.app import app
from workers.callstats import read_stats
from workers.taskbase import STEP_OPTIONS, check_ids

logger = logging.getLogger(__name__)


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
    metrics.extra.update(get_kind(view.record.kind).metrics(view, metrics))
    error = final_error(view, metrics.cost_usd)
    if store.finish(job_id, status, metrics, error):
        logger.info(
            "job %s (%s): all %d steps done in %.2fs, status %s (parallel mode: %s)",
            job_id, view.record.kind, view.total, metrics.elapsed_s, status,
            view.record.mode == "parallel",
        )  # fmt: skip
    return {"job_id": job_id, "status": status}


@app.task(name=C.TASK_JOIN, bind=True)
def join(self: Task, job_id: str) -> None:
    """Nothing: a point in a canvas where a group waits before the next group starts."""
    check_ids(job_id)
