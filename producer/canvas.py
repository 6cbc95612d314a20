"""Pure functions that build a job's Celery canvas; nothing here talks to a broker.

Every canvas ends in the finalize task, which reads every result from Redis, so no
step passes its result to another through Celery (immutable signatures) and a failed
step never raises into a chord callback. ``only`` limits a canvas to some steps
(``genfleet resume``); steps whose result is stored do nothing when run again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from genfleet import constants as C
from genfleet.records import JobRecord
from workers import items, persona

Builder = Callable[[Celery, JobRecord, Collection[str], int], list[Signature]]
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


def _chapter(app: Celery, record: JobRecord, steps: Collection[str], r: int) -> list[Signature]:
    sigs = [
        step(app, C.TASK_CHAPTER_VERSION, record.id, s, int(s[1:]) - 1, r)
        for s in record.step_ids
        if s in steps
    ]
    if record.mode == "serial":
        return [chain(*sigs)]
    return lanes(sigs, record.max_parallel)


def _one_persona(app: Celery, record: JobRecord, key: str, r: int) -> Signature:
    def s(name: str) -> Signature:
        task = C.TASK_PERSONA_MERGE if name == persona.MERGE else C.TASK_PERSONA_STAGE
        return step(app, task, record.id, persona.step_id(key, name), 0, r)

    if record.mode == "serial":  # the seed's seven stages in sequence
        return chain(*(s(stage.name) for stage in persona.STAGES), s(persona.MERGE))
    branches = [
        chain(s("strategy"), s("examples")),
        *(s(n) for n in ("social", "authenticity", "visual", "book")),
    ]
    return chain(s("core"), chord(group(branches), s(persona.MERGE)))


def _persona(app: Celery, record: JobRecord, steps: Collection[str], r: int) -> list[Signature]:
    keys = [p["key"] for p in record.spec["personas"]]
    wanted = {persona.split_step(s)[0] for s in steps}
    return [_one_persona(app, record, key, r) for key in keys if key in wanted]


def _tweets(app: Celery, record: JobRecord, steps: Collection[str], r: int) -> list[Signature]:
    from producer.images import image_signature

    gpu = record.spec.get("gpu")
    out: list[Signature] = []
    for n, step_id in enumerate(record.step_ids):
        if step_id not in steps or step_id.endswith(".image"):
            continue
        sig = step(app, C.TASK_TWEET, record.id, step_id, n, r)
        image_id = f"{step_id}.image"
        if image_id in record.step_ids and (image_id in steps or step_id in steps):
            image = image_signature(app, record.id, image_id, n, gpu)
            sig = chain(sig, image.set(task_id=task_id_for(record.id, image_id, r)))
        out.append(sig)
    return out


def _batch(app: Celery, record: JobRecord, steps: Collection[str], r: int) -> list[Signature]:
    out: list[Signature] = []
    for n, step_id in enumerate(record.step_ids):
        if step_id.endswith(items.REVIEW_SUFFIX):
            continue
        review_id = step_id + items.REVIEW_SUFFIX
        if step_id not in steps and review_id not in steps:
            continue
        sig = step(app, C.TASK_BATCH_ITEMS, record.id, step_id, n, r)
        if review_id in record.step_ids:
            sig = chain(sig, step(app, C.TASK_BATCH_REVIEW, record.id, review_id, n, r))
        out.append(sig)
    return out


def _images(app: Celery, record: JobRecord, steps: Collection[str], r: int) -> list[Signature]:
    from producer.images import image_steps

    return [
        sig.set(task_id=task_id_for(record.id, sig.args[1], r))
        for sig in image_steps(app, record, steps)
    ]


BUILDERS: dict[str, Builder] = {
    C.KIND_CHAPTER: _chapter,
    C.KIND_PERSONA: _persona,
    C.KIND_TWEETS: _tweets,
    C.KIND_BATCH: _batch,
    C.KIND_IMAGES: _images,
}


def job_canvas(
    app: Celery, record: JobRecord, only: Collection[str] | None = None, round_: int = 0
) -> Signature:
    """The whole job as one canvas: its steps (all, or ``only``), then finalize."""
    steps = set(record.step_ids if only is None else only)
    parts = BUILDERS[record.kind](app, record, steps, round_)
    final = app.signature(C.TASK_FINALIZE, args=(record.id,), immutable=True).set(
        task_id=task_id_for(record.id, FINALIZE_STEP, round_)
    )
    if record.kind == C.KIND_CHAPTER and record.mode == "serial":
        return chain(*parts, final)
    return chord(group(parts), final)
