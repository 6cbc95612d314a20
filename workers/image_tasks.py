"""The image Celery task: thin, like the LLM step tasks (``workers.taskbase``).

``genfleet.images.generate(job_id, step_id, index)`` draws one picture of a job
(``workers.images.step``). Through ``run_step``/``execute_step``: a stored result is
never made twice, a failure is stored with its error (never raised into the batch's
chord), and a long wait re-schedules the task with the attempts made so far. Routed
to the shared ``images`` queue, or to ``images.gpuN`` when the producer pinned it.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import worker_process_init

from genfleet.records import JobRecord
from workers import runtime
from workers.app import app
from workers.gateway_types import CallContext, ChatResult
from workers.images.backends import get_backend, reset_backend
from workers.images.constants import TASK_IMAGE_GENERATE
from workers.images.step import image_step
from workers.taskbase import STEP_OPTIONS, run_step


@worker_process_init.connect
def _fresh_backend(**_: Any) -> None:
    reset_backend()  # a forked pool process loads its own model


@app.task(name=TASK_IMAGE_GENERATE, **STEP_OPTIONS)
def generate(
    self: Task, job_id: str, step_id: str, index: int, attempts_used: int = 0,
    rate_limited_used: int = 0,
) -> dict:  # fmt: skip
    """Draw the picture of one image step of a job."""

    def work(record: JobRecord, ctx: CallContext) -> tuple[dict[str, Any], ChatResult]:
        settings, store = runtime.settings(), runtime.store()
        backend = get_backend(settings, store.r)
        return image_step(
            record, step_id, int(index), ctx, store=store, settings=settings, backend=backend
        )

    return run_step(
        self, job_id, step_id, int(index), work, int(attempts_used), int(rate_limited_used)
    )
