"""Building blocks of the kinds' canvases: pure functions, nothing talks to a broker.

Every step is an immutable signature with ids only ``(job_id, step_id, index)`` and
a readable task id, so no step passes its result to another through Celery and a
failed step never raises into a chord.
"""

from __future__ import annotations

from celery import Celery, chain
from celery.canvas import Signature

FINALIZE_STEP = "finalize"


def task_id_for(job_id: str, step_id: str, round_: int = 0) -> str:
    """A step's Celery task id: readable in Flower, and known to ``genfleet cancel``.

    ``round_`` counts ``genfleet resume``s, so a resumed step never reuses an id that a
    worker may still remember as revoked.
    """
    return f"{job_id}.{step_id}.r{round_}"


def step(
    app: Celery, task: str, job_id: str, step_id: str, index: int = 0, round_: int = 0
) -> Signature:
    """One step's signature: ids only, immutable, with its readable task id."""
    sig = app.signature(task, args=(job_id, step_id, index), immutable=True)
    return sig.set(task_id=task_id_for(job_id, step_id, round_))


def lanes(sigs: list[Signature], width: int) -> list[Signature]:
    """Split steps into ``width`` serial chains, so at most ``width`` run at once."""
    width = max(1, min(width, len(sigs)))
    out: list[Signature] = []
    for n in range(width):
        lane = sigs[n::width]
        out.append(lane[0] if len(lane) == 1 else chain(*lane))
    return out
