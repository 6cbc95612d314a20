"""A job's whole Celery canvas: its kind's parts, then the finalize task.

Pure functions; nothing here talks to a broker. Every job ends in the finalize task
(a chain's last link, or sent by the step stored last), which reads every result
from Redis, so no step passes its result to another through Celery (immutable
signatures) and a failed step never raises into a chord callback. ``only`` limits a
canvas to some steps (``genfleet resume``); steps whose result is stored do nothing
when run again.
"""

from __future__ import annotations

from collections.abc import Collection

from celery import Celery, chain, group
from celery.canvas import Signature

from genfleet import constants as C
from genfleet.kinds import get_kind
from genfleet.kinds.canvas import FINALIZE_STEP, task_id_for
from genfleet.records import JobRecord

__all__ = ["FINALIZE_STEP", "finished_by_count", "job_canvas", "task_id_for"]


def job_canvas(
    app: Celery, record: JobRecord, only: Collection[str] | None = None, round_: int = 0
) -> Signature:
    """The whole job as one canvas: its steps (all, or ``only``), then finalize.

    Parts that run one after the other are a chain ending in finalize. Parts side by
    side are a plain group: no Celery chord counts them (a chord costs about fifteen
    Redis commands per step); the step whose result completes the job sends finalize
    (``finished_by_count``; ``JobStore.save_step``).
    """
    kind = get_kind(record.kind)
    steps = set(record.step_ids if only is None else only)
    parts = kind.parts(app, record, steps, round_)
    if not finished_by_count(record):
        final = app.signature(C.TASK_FINALIZE, args=(record.id,), immutable=True).set(
            task_id=task_id_for(record.id, FINALIZE_STEP, round_)
        )
        return chain(*parts, final)
    return group(parts)


def finished_by_count(record: JobRecord) -> bool:
    """Whether the job's last step result sends its finalize (parts side by side)."""
    return not get_kind(record.kind).serial(record)
