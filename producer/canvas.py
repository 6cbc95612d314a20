"""Pure functions that build a job's Celery canvas; nothing here talks to a broker."""

from __future__ import annotations

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from genfleet import constants as C


def lanes(items: list[Signature], width: int) -> list[Signature]:
    """Split steps into ``width`` serial chains, so at most ``width`` run at once."""
    width = max(1, min(width, len(items)))
    out: list[Signature] = []
    for n in range(width):
        lane = items[n::width]
        out.append(lane[0] if len(lane) == 1 else chain(*lane))
    return out


def chapter_canvas(
    app: Celery, job_id: str, step_ids: list[str], *, parallel: bool, max_parallel: int
) -> Signature:
    """Versions as a chord (parallel, capped by ``max_parallel``) or a chain (serial).

    The final step reads every result from Redis, so it takes no header results
    (immutable signatures): a failed version never raises into the callback.
    """
    steps = [
        app.signature(C.TASK_CHAPTER_VERSION, args=(job_id, step_id, n), immutable=True)
        for n, step_id in enumerate(step_ids)
    ]
    final = app.signature(C.TASK_FINALIZE, args=(job_id,), immutable=True)
    if not parallel:
        return chain(*steps, final)
    return chord(group(lanes(steps, max_parallel)), final)
