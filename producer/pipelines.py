"""``submit_persona``, ``submit_tweets``, ``submit_batch`` and ``resume``.

Each checks everything first (one ``InputError`` line, nothing enqueued), writes the
job record and its inputs, and enqueues the job's canvas (``producer.canvas``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.settings import Settings
from producer.api import check_int
from producer.canvas import job_canvas
from producer.client import connect
from producer.inputs import (
    CalendarFile,
    check_topics,
    has_control_chars,
    one_line,
    read_calendar,
    read_image,
    read_persona,
)
from producer.jobs import JobHandle, enqueue, make_record
from producer.spend import raise_budget, spend_spec
from workers import items, persona, tweets

MAX_PERSONAS_PER_JOB = 500
MAX_REASKS = 2
TWEET_MAX_TOKENS = 400
PERSONA_MAX_TOKENS = 1500


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
        inputs[f"image:{key}"] = data_url
        entries.append({"key": key, **meta})
    client = connect(settings)
    s = client.settings
    spec = {"personas": entries, "model": s.llm_model, "max_tokens": PERSONA_MAX_TOKENS,
            "max_reasks": MAX_REASKS,
            **spend_spec(s, mode, max_cost_usd, [s.llm_model])}  # fmt: skip
    step_ids = [persona.step_id(e["key"], st.name) for e in entries for st in persona.STAGES]
    step_ids += [persona.step_id(e["key"], persona.MERGE) for e in entries]
    mode = "parallel" if parallel else "serial"
    record = make_record(C.KIND_PERSONA, spec, step_ids, mode=mode)
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
        inputs[f"persona:{key}"] = json.dumps(person, ensure_ascii=False)
        chosen = list(days.items())[:count]
        for date, plan in chosen:
            sid = tweets.tweet_step_id(key, date)
            inputs[f"plan:{sid}"] = json.dumps(plan, ensure_ascii=False)
            step_ids.append(sid)
            if with_images:
                step_ids.append(f"{sid}.image")
        described.append(
            {"key": key, "source": label, "persona": person["name"], "days": len(chosen)}
        )
    client = connect(settings)
    s = client.settings
    spec = {
        "pairs": described,
        "count": count,
        "model": s.llm_model,
        "max_tokens": TWEET_MAX_TOKENS,
        "max_reasks": MAX_REASKS,
        "with_images": with_images,
        "gpu": gpu,
        **spend_spec(s, mode, max_cost_usd, [s.llm_model]),
    }
    if gpu is not None:
        check_int("gpu", gpu, 0, C.DEFAULT_IMAGE_GPU_QUEUES - 1)
    record = make_record(C.KIND_TWEETS, spec, step_ids)
    return enqueue(client, record, job_canvas(client.app, record), inputs)


class BatchSpec(BaseModel):
    """A batch-items job (seed 003); the limits are the seed's."""

    model_config = ConfigDict(strict=True)  # 2.0, "2" or True are not a count

    kind: str
    lang: str = Field(min_length=1, max_length=20)
    levels: list[int] = Field(min_length=1, max_length=20)
    topics: list[str] = Field(min_length=1, max_length=1000)
    per_combo: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=10)
    concurrency: int = Field(ge=1, le=8)
    retries: int = Field(ge=0, le=5)
    throttle_ms: int = Field(ge=0, le=2000)
    model: str = Field(min_length=1, max_length=200)
    review_model: str | None = Field(default=None, min_length=1, max_length=200)
    max_tokens_per_item: int = Field(default=300, ge=16, le=4000)

    @field_validator("lang")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip() or has_control_chars(value):
            raise ValueError("give a language such as ja, without control characters")
        return value

    @field_validator("model", "review_model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("a model name has no spaces or control characters")
        return value

    @field_validator("levels")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        twice = sorted({level for level in value if value.count(level) > 1})
        if twice:
            raise ValueError(f"level {twice[0]} is given twice")
        return value


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
    if not isinstance(kind, str) or kind not in items.ITEM_KINDS:
        raise InputError(f"kind={kind!r} is unknown: allowed {', '.join(sorted(items.ITEM_KINDS))}")
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
    step_ids = items.step_ids(spec.topics, spec.levels, spec.per_combo, spec.batch_size)
    if spec.review_model:
        step_ids = [sid for draft in step_ids for sid in (draft, draft + items.REVIEW_SUFFIX)]
    spend = spend_spec(s, mode, max_cost_usd, [spec.model, spec.review_model])
    record = make_record(C.KIND_BATCH, {**spec.model_dump(), **spend}, step_ids)
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
    if view.record.kind != C.KIND_PERSONA:
        raise InputError(f"job {job_id} is a {view.record.kind} job, not a persona job")
    merged = [
        r.output["persona"] for r in view.step_results() if r.ok and r.step_id.endswith(".merge")
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
    job_canvas(client.app, view.record, only=missing, round_=round_).apply_async()
    return handle, missing
