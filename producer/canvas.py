"""A job's whole Celery canvas: its kind's parts, then the finalize task.

Pure functions; nothing here talks to a broker. Every canvas ends in the finalize
task, which reads every result from Redis, so no step passes its result to another
through Celery (immutable signatures) and a failed step never raises into a chord
callback. ``only`` limits a canvas to some steps (``genfleet resume``); steps whose
result is stored do nothing when run again.
"""

from __future__ import annotations

from collections.abc import Collection

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from genfleet import constants as C
from genfleet.kinds import get_kind
from genfleet.kinds.canvas import FINALIZE_STEP, task_id_for
from genfleet.records import JobRecord

__all__ = ["FINALIZE_STEP", "job_canvas", "task_id_for"]


def job_canvas(
    app: Celery, record: JobRecord, only: Collection[str] | None = None, round_: int = 0
) -> Signature:
    """The whole job as one canvas: its steps (all, or ``only``), then finalize."""
    kind = get_kind(record.kind)
    steps = set(record.step_ids if only is None else only)
    parts = kind.parts(app, record, steps, round_)
    final = app.signature(C.TASK_FINALIZE, args=(record.id,), immutable=True).set(
        task_id=task_id_for(record.id, FINALIZE_STEP, round_)
    )
    if kind.serial(record):
        return chain(*parts, final)
    return chord(group(parts), final)
