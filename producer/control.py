"""Controlling jobs that are running: ``cancel``."""

from __future__ import annotations

import logging

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.settings import Settings
from producer.canvas import FINALIZE_STEP, task_id_for
from producer.client import connect

logger = logging.getLogger(__name__)


def cancel(job_id: str, *, settings: Settings | None = None) -> int:
    """Cancel a queued or running job; returns how many step tasks were revoked.

    Steps not started are revoked (and skip themselves if a worker gets them anyway);
    steps already running finish and keep their results, but the job stays cancelled.
    """
    client = connect(settings)
    store = client.store
    status = store.status(job_id)
    if not store.cancel(job_id):
        raise InputError(f"job {job_id} has already ended ({status}): nothing to cancel")
    view = store.load(job_id)
    round_ = store.round(job_id)
    pending = [s for s in view.record.step_ids if s not in view.ok and s not in view.running]
    task_ids = [task_id_for(job_id, s, round_) for s in pending]
    task_ids.append(task_id_for(job_id, FINALIZE_STEP, round_))
    client.app.control.revoke(task_ids)
    if view.record.spec.get("api_mode") == C.API_BATCH:  # its batches, at the provider
        client.app.send_task(C.TASK_BATCH_CANCEL, args=(job_id,))
    logger.info("job %s cancelled; %d step tasks revoked", job_id, len(pending))
    return len(pending)
