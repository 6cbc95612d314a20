"""``submit_persona``, ``submit_tweets``, ``submit_batch`` and ``resume``.

Each checks everything first (one ``InputError`` line, nothing enqueued), writes the
job record and its inputs, and enqueues the job's canvas (``producer.canvas``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.kinds.batch import ITEM_KIND_NAMES, BatchSpec
from genfleet.kinds.batch import KIND as BATCH
from genfleet.kinds.checks import check_int
from genfleet.kinds.persona import KIND as PERSONA
from genfleet.kinds.persona import MAX_PERSONAS_PER_JOB, MERGE, image_input, split_step
from genfleet.kinds.tweets import KIND as TWEETS
from genfleet.kinds.tweets import image_step_id, persona_input, plan_input, tweet_step_id
from genfleet.settings import Settings
from producer.canvas import job_canvas
from producer.client import connect
from producer.inputs import (
    CalendarFile,
    check_topics,
    one_line,
    read_calendar,
    read_image,
    read_persona,
)
from producer.jobs import JobHandle, enqueue, make_record, publish
from producer.spend import raise_budget, spend_spec

__all__ = ["BatchSpec", "personas_of_job", "resume", "submit_batch", "submit_persona",
           "submit_tweets"]  # fmt: skip


def submit_persona(
    images: Path | str | Sequence[Path | str],
    *,
    parallel: bool = True,
    mode: str = C.API_ONLINE,
    max_cost_usd: float | None = None,
    settings: Settings | None = None,
) -> JobHandle:
    """Generate a persona from each image (seed 002, stages 1-7 and a merge).

    ``mode="batch"`` uses the provider's Batch API (stages advance round by round);
    ``max_cost_usd`` is the job's budget.

    With ``parallel`` the stages run as their dependency graph (core, then strategy
    -> examples alongside social, authenticity, visual and book, then the merge);
    otherwise in the seed's sequence. One job covers every image.
    """
    paths = [Path(images)] if isinstance(images, str | Path) else [Path(p) for p in images]
    if not paths:
        raise InputError("no image given")
    if len(paths) > MAX_PERSONAS_PER_JOB:
        raise InputError(f"{len(paths)} images, allowed at most {MAX_PERSONAS_PER_JOB} per job")
    inputs, entries = {}, []
    for n, path in enumerate(paths, 1):
        data_url, meta = read_image(path)
        key = f"p{n}"
        inputs[image_input(key)] = data_url
        entries.append({"key": key, **meta})
    client = connect(settings)
    s = client.settings
    spec = PERSONA.check_spec(
        "persona", personas=entries, model=s.llm_model,
        **spend_spec(s, mode, max_cost_usd, [s.llm_model]),
    )  # fmt: skip
    mode = "parallel" if parallel else "serial"
    record = make_record(PERSONA.name, spec.model_dump(), PERSONA.step_ids(spec), mode=mode)
    return enqueue(client, record, job_canvas(client.app, record), inputs)


def _pairs(persona_src: Any, calendar_src: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, persona, calendar days) per pair; one calendar may serve every persona."""
    personas = persona_src if isinstance(persona_src, list) else [persona_src]
    calendars = calendar_src if isinstance(calendar_src, list) else [calendar_src]
    if len(calendars) == 1 and len(personas) > 1:
        calendars = calendars * len(personas)
    if len(personas) != len(calendars):
        raise InputError(
            f"{len(personas)} personas but {len(calendars)} calendars: give one calendar "
            "per persona, or one calendar for all"
        )
    out = []
    for p, c in zip(personas, calendars, strict=True):
        person = read_persona(Path(p)) if isinstance(p, str | Path) else _persona_dict(p)
        days = read_calendar(Path(c)) if isinstance(c, str | Path) else _calendar_dict(c)
        out.append((str(p) if isinstance(p, str | Path) else person["name"], person, days))
    return out


def _persona_dict(value: Any) -> dict[str, Any]:
    if (
        not isinstance(value, dict)
        or "name" not in value
        or not isinstance(value.get("core"), dict)
    ):
        raise InputError("persona: a dict with 'name' and 'core' (as the persona job writes)")
    return value


def _calendar_dict(value: Any) -> dict[str, dict[str, Any]]:
    try:
        return dict(sorted(CalendarFile.model_validate(value).calendar.items()))
    except ValidationError as e:
        raise InputError(one_line(e, "calendar")) from None


def submit_tweets(
    persona: Any,
    calendar: Any,
    count: int = 10,
    *,
    with_images: bool = False,
    gpu: int | None = None,
    mode: str = C.API_ONLINE,
    max_cost_usd: float | None = None,
    settings: Settings | None = None,
) -> JobHandle:
    """One tweet per calendar day (the first ``count`` days), all in flight at once.

    ``persona`` and ``calendar`` are dicts or JSON file paths, or lists of them for a
    batch of pairs in one job. ``with_images`` chains an image step after each tweet,
    made from the tweet's image prompt. ``mode="batch"`` uses the provider's Batch
    API; ``max_cost_usd`` is the job's budget.
    """
    check_int("count", count, 1, 1000)
    pairs = _pairs(persona, calendar)
    inputs: dict[str, str] = {}
    step_ids: list[str] = []
    described = []
    for n, (label, person, days) in enumerate(pairs, 1):
        if len(days) < count:  # fewer tweets than asked for would be a silent surprise
            raise InputError(
                f"count={count} but the calendar of {label} has {len(days)} days: "
                f"allowed 1-{len(days)}"
            )
        key = f"p{n}"
        inputs[persona_input(key)] = json.dumps(person, ensure_ascii=False)
        chosen = list(days.items())[:count]
        for date, plan in chosen:
            sid = tweet_step_id(key, date)
            inputs[plan_input(sid)] = json.dumps(plan, ensure_ascii=False)
            step_ids.append(sid)
            if with_images:
                step_ids.append(image_step_id(sid))
        described.append(
            {"key": key, "source": label, "persona": person["name"], "days": len(chosen)}
        )
    if gpu is not None:
        check_int("gpu", gpu, 0, C.DEFAULT_IMAGE_GPU_QUEUES - 1)
    client = connect(settings)
    s = client.settings
    spec = TWEETS.check_spec(
        "tweets", pairs=described, count=count, model=s.llm_model,
        with_images=with_images, gpu=gpu, **spend_spec(s, mode, max_cost_usd, [s.llm_model]),
    )  # fmt: skip
    record = make_record(TWEETS.name, spec.model_dump(), step_ids)
    return enqueue(client, record, job_canvas(client.app, record), inputs)


def submit_batch(
    kind: str,
    lang: str,
    levels: Sequence[int],
    topics: Sequence[str],
    per_combo: int = 2,
    batch_size: int = 3,
    concurrency: int = 4,
    retries: int = 2,
    throttle_ms: int = 0,
    model: str | None = None,
    *,
    review: bool = False,
    review_model: str | None = None,
    mode: str = C.API_ONLINE,
    max_cost_usd: float | None = None,
    settings: Settings | None = None,
) -> JobHandle:
    """Items for every topic x level, ``batch_size`` per call (seed 003).

    ``concurrency`` caps this job's calls in flight (on top of the cluster's limit),
    ``retries`` its retries of transient errors, ``throttle_ms`` the gap between its
    calls. ``model`` defaults to ``LLM_DRAFT_MODEL``; with ``review`` every call's
    items are then reviewed by ``review_model`` (default ``LLM_REVIEW_MODEL``).
    ``mode="batch"`` uses the provider's Batch API; ``max_cost_usd`` is the job's budget.
    """
    if not isinstance(kind, str) or kind not in ITEM_KIND_NAMES:
        raise InputError(f"kind={kind!r} is unknown: allowed {', '.join(ITEM_KIND_NAMES)}")
    level_list, topic_list = _as_list("levels", levels), _as_list("topics", topics)
    client = connect(settings)
    s = client.settings
    try:
        spec = BatchSpec(
            kind=kind, lang=lang, levels=level_list, topics=topic_list, per_combo=per_combo,
            batch_size=batch_size, concurrency=concurrency, retries=retries,
            throttle_ms=throttle_ms, model=s.draft_model if model is None else model,
            review_model=(review_model or s.review_model) if review else None,
        )  # fmt: skip
    except ValidationError as e:
        raise InputError(one_line(e, "batch")) from None
    for level in spec.levels:
        check_int("level", level, 1, 20)
    check_topics(spec.topics)
    spend = spend_spec(s, mode, max_cost_usd, [spec.model, spec.review_model])
    record = make_record(BATCH.name, {**spec.model_dump(), **spend}, BATCH.step_ids(spec))
    return enqueue(client, record, job_canvas(client.app, record))


def _as_list(name: str, value: object) -> list[Any]:
    """A list or tuple argument as a list; a text (whose characters would each become
    an entry), a set or anything else is refused."""
    if not isinstance(value, list | tuple):
        raise InputError(f"{name} must be a list, not {type(value).__name__}")
    return list(value)


def personas_of_job(job_id: str, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The merged personas of a finished persona job (for a tweets job)."""
    view = connect(settings).store.load(job_id)
    if view.record.kind != PERSONA.name:
        raise InputError(f"job {job_id} is a {view.record.kind} job, not a persona job")
    merged = [
        r.output["persona"]
        for r in view.step_results()
        if r.ok and split_step(r.step_id)[1] == MERGE
    ]
    if not merged:
        raise InputError(f"job {job_id} ({view.status}) has no merged persona yet")
    return merged


def resume(
    job_id: str, *, max_cost_usd: float | None = None, settings: Settings | None = None
) -> tuple[JobHandle, list[str]]:
    """Re-submit only the job's steps that are missing or failed; returns them.

    ``max_cost_usd`` gives the job a new total budget (spending so far included),
    e.g. to go on after its budget stopped it.
    """
    client = connect(settings)
    view = client.store.load(job_id)
    if view.status not in C.TERMINAL_STATUSES:
        raise InputError(f"job {job_id} is still {view.status}: resume a job once it has ended")
    missing = [s for s in view.record.step_ids if s not in view.ok]
    handle = JobHandle(job_id, client)
    if not missing:
        return handle, []
    if max_cost_usd is not None:
        raise_budget(client.store, job_id, max_cost_usd)
        view.record = client.store.record(job_id).model_copy(
            update={"step_ids": view.record.step_ids}
        )
    round_ = client.store.reopen(job_id)
    publish(client, job_canvas(client.app, view.record, only=missing, round_=round_))
    return handle, missing
