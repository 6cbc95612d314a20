"""Celery tasks of batch mode: the poller (re-scheduling itself while there is batch
work) and the cancelling of a job's batches at the provider. Thin: the logic is in
``workers.batch_poller``."""

from __future__ import annotations

import logging

from celery import Task

from genfleet import constants as C
from genfleet.outage import REDIS_DOWN
from workers import runtime
from workers.app import app
from workers.batch import ensure_poller
from workers.batch_poller import BatchPoller
from workers.taskbase import check_ids

logger = logging.getLogger(__name__)


def _poller() -> BatchPoller:
    gateway = runtime.gateway()
    return BatchPoller(
        gateway.limiter.client, runtime.settings(), gateway.pool, gateway.prices, gateway.stats,
        gateway.budgets,
    )  # fmt: skip


@app.task(name=C.TASK_BATCH_POLL, bind=True, autoretry_for=REDIS_DOWN, retry_backoff=True,
          max_retries=50)  # fmt: skip
def batch_poll(self: Task) -> dict:
    """One poll cycle; schedules the next one while batch work is left."""
    client = runtime.store().r
    client.delete(C.KEY_BATCH_POLLER)  # this run is the scheduled one; let the next be set
    more = _poller().cycle()
    if more:
        ensure_poller(client, runtime.settings())
    return {"more": more}


@app.task(name=C.TASK_BATCH_CANCEL)
def batch_cancel(job_id: str) -> dict:
    """Cancel a cancelled job's live batches at the provider."""
    check_ids(job_id)
    cancelled = _poller().cancel_job(job_id)
    logger.info("job %s: %d batch(es) cancelled at the provider", job_id, cancelled)
    ensure_poller(runtime.store().r, runtime.settings(), delay_s=0)
    return {"job_id": job_id, "batches_cancelled": cancelled}
