"""The job handle every ``submit_*`` returns, and the one way jobs are enqueued."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from celery.canvas import Signature

from genfleet import constants as C
from genfleet.errors import GenfleetError, RedisUnavailableError
from genfleet.outage import REDIS_DOWN, through_outage
from genfleet.records import JobRecord, JobView
from producer.canvas import finished_by_count
from producer.client import Client
from producer.progress import follow

logger = logging.getLogger(__name__)

PUBLISH_BATCH = 1000  # messages buffered before a flush


def new_job_id(kind: str) -> str:
    """A short unique id that says the kind, e.g. ``chapter-3f9a1c2b7d10``."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


class JobHandle:
    """A submitted job: ``.id``, ``.status()``, ``.wait()``, ``.results()``."""

    def __init__(self, job_id: str, client: Client) -> None:
        self.id = job_id
        self._client = client

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def view(self) -> JobView:
        """Everything known about the job now."""
        return self._client.store.load(self.id)

    def status(self) -> str:
        """``queued``, ``running``, ``succeeded``, ``partial``, ``failed`` or ``cancelled``."""
        return self._client.store.status(self.id)

    def wait(self, timeout: float | None = None, progress: bool = True) -> JobView:
        """Block until the job ends (or ``timeout`` seconds pass); returns its view."""
        store = self._client.store
        follow(
            self.id, lambda: store.progress(self.id), timeout=timeout, show=progress,
            stall_check=self._missing_workers,
        )  # fmt: skip
        return through_outage(self.view, f"reading job {self.id}")

    def _missing_workers(self) -> str | None:
        try:
            return self._unserved()
        except REDIS_DOWN:
            return None  # Redis restarting: the next check will tell

    def _unserved(self) -> str | None:
        from producer.clusterstats import no_worker_warning

        gpu = self._client.store.record(self.id).spec.get("gpu")
        extra = [] if gpu is None else [f"{C.QUEUE_IMAGES_GPU_PREFIX}{gpu}"]
        return no_worker_warning(self._client.app, self._client.store.r, extra)

    def batches(self) -> dict[str, str]:
        """A batch-mode job's batches: batch id -> JSON of provider status and counts."""
        raw = self._client.store.r.hgetall(C.KEY_JOB_BATCHES.format(job_id=self.id))
        return {str(k): str(v) for k, v in raw.items()}

    def results(self) -> list[dict[str, Any]]:
        """One dict per finished step, in step order (outputs or errors)."""
        return [r.model_dump() for r in self.view().step_results()]


def enqueue(
    client: Client, record: JobRecord, canvas: Signature, inputs: Mapping[str, str] | None = None
) -> JobHandle:
    """Write the job record (and inputs), then publish its canvas; on failure leave
    nothing behind."""
    record_written = False
    try:
        client.store.create(record, inputs, finish_by_count=finished_by_count(record))
        record_written = True
        publish(client, canvas)
    except GenfleetError:
        raise
    except Exception as e:
        if record_written:
            try:
                client.store.delete(record.id)
            except Exception:  # Redis itself is gone; nothing more to undo
                logger.warning("job %s: could not remove the half-written record", record.id)
        raise RedisUnavailableError(
            f"could not enqueue job {record.id}: {e.__class__.__name__}: {e}"
        ) from None
    logger.info(
        "job %s: %s planned with %d steps (parallel mode: %s)",
        record.id, record.kind, len(record.step_ids), record.mode == "parallel",
    )  # fmt: skip
    return JobHandle(record.id, client)


def publish(client: Client, canvas: Signature) -> None:
    """Send a canvas's messages in pipelined batches (kombu's publish batch: one round
    trip per thousand messages, not one per message); an error before the end
    discards what was not sent yet."""
    with client.app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH):
        canvas.apply_async(producer=producer)


def make_record(
    kind: str, spec: dict[str, Any], step_ids: list[str], *, label: str | None = None, **kw: Any
) -> JobRecord:
    """A new job's record; its id starts with ``label`` (default: the kind)."""
    return JobRecord(
        id=new_job_id(label or kind), kind=kind, spec=spec, step_ids=step_ids,
        created_at=time.time(), **kw,
    )  # fmt: skip
