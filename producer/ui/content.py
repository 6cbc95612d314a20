"""The content part of a job's page, one view per job kind.

A view is a template under ``templates/kinds/`` and a function that turns the job
into the values it shows. A new kind needs only ``@content_view("kind", "file.html")``
on such a function and its template; a kind without a view gets the generic one
(each step's output as JSON).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genfleet import constants as C
from genfleet.kinds import batch as batch_kind
from genfleet.kinds import persona as persona_kind
from genfleet.kinds import tweets as tweets_kind
from genfleet.kinds.images import prompt_input
from genfleet.records import JobView, StepResult
from genfleet.store import JobStore

logger = logging.getLogger(__name__)

Build = Callable[[JobView, JobStore], dict[str, Any]]

MAX_CONTENT_STEPS = 400  # a bigger job's page shows the content of its first steps
MAX_PERSONA_CARDS = 50
PERSONA_SECTIONS = (  # stage -> the title a person reads
    ("core", "Core"),
    ("strategy", "Tweet strategy"),
    ("examples", "Example tweets"),
    ("social", "Social network"),
    ("authenticity", "Authenticity"),
    ("visual", "Visual profile"),
    ("book", "Character book"),
)


@dataclass(frozen=True)
class ContentView:
    template: str
    build: Build


_VIEWS: dict[str, ContentView] = {}


def content_view(kind: str, template: str) -> Callable[[Build], Build]:
    """Register ``build`` as the content view of ``kind``, shown with ``template``."""

    def register(build: Build) -> Build:
        _VIEWS[kind] = ContentView(f"kinds/{template}", build)
        return build

    return register


def content_for(view: JobView, store: JobStore) -> tuple[str, dict[str, Any]]:
    """The template and values of a job's content; the generic view when the kind's
    own view cannot read this job (outputs of an older or newer shape)."""
    chosen = _VIEWS.get(view.record.kind) or _VIEWS["*"]
    left_out = max(0, view.total - MAX_CONTENT_STEPS)
    if left_out:  # a big job's page shows its first steps' content; the rest is downloaded
        record = view.record.model_copy(
            update={"step_ids": view.record.step_ids[:MAX_CONTENT_STEPS]}
        )
        view = view.model_copy(update={"record": record})
    try:
        template, values = chosen.template, chosen.build(view, store)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        logger.warning("job %s: the %s view failed (%r); showing outputs as JSON",
                       view.id, view.record.kind, e)  # fmt: skip
        template, values = _VIEWS["*"].template, _VIEWS["*"].build(view, store)
    return template, {**values, "content_left_out": left_out}


@dataclass(frozen=True)
class Cell:
    """A step as a piece of content: its state, result (output or error)."""

    step_id: str
    state: str  # ok, failed, running, waiting
    result: StepResult | None

    @property
    def output(self) -> Any:
        return self.result.output if self.result is not None and self.result.ok else None

    @property
    def error(self) -> str | None:
        return self.result.error if self.result is not None and not self.result.ok else None


def cell(view: JobView, step_id: str) -> Cell:
    if step_id in view.ok:
        return Cell(step_id, "ok", view.ok[step_id])
    if step_id in view.failed:
        return Cell(step_id, "failed", view.failed[step_id])
    return Cell(step_id, "running" if step_id in view.running else "waiting", None)


@content_view("*", "generic.html")
def generic(view: JobView, store: JobStore) -> dict[str, Any]:
    cells = [cell(view, s) for s in view.record.step_ids]
    return {
        "cells": cells,
        "outputs": {
            c.step_id: json.dumps(c.output, ensure_ascii=False, indent=2) for c in cells if c.output
        },
    }


@content_view(C.KIND_CHAPTER, "chapter.html")
def chapter(view: JobView, store: JobStore) -> dict[str, Any]:
    """The versions side by side."""
    return {"versions": [cell(view, s) for s in view.record.step_ids]}


@content_view(C.KIND_PERSONA, "persona.html")
def personas(view: JobView, store: JobStore) -> dict[str, Any]:
    """A card per persona: its image, its name and every section."""
    cards = []
    for entry in view.record.spec.get("personas", [])[:MAX_PERSONA_CARDS]:
        key = entry["key"]
        core = cell(view, persona_kind.step_id(key, "core")).output or {}
        merged = cell(view, persona_kind.step_id(key, persona_kind.MERGE))
        cards.append(
            {
                "key": key,
                "name": core.get("name") or entry.get("name") or key,
                "image": entry.get("name", key),
                "merged": merged,
                "sections": [(title, cell(view, persona_kind.step_id(key, stage)))
                             for stage, title in PERSONA_SECTIONS],
            }
        )  # fmt: skip
    return {"cards": cards}


@content_view(C.KIND_TWEETS, "tweets.html")
def tweets(view: JobView, store: JobStore) -> dict[str, Any]:
    """A timeline per persona, by date, with the tweet's picture when it has one."""
    names = {p["key"]: p.get("persona", p["key"]) for p in view.record.spec.get("pairs", [])}
    timelines: dict[str, list[dict[str, Any]]] = {key: [] for key in names}
    steps = set(view.record.step_ids)
    for step_id in view.record.step_ids:
        if tweets_kind.is_image_step(step_id):
            continue
        pair, date = tweets_kind.split_step(step_id)
        image_step = tweets_kind.image_step_id(step_id)
        timelines.setdefault(pair, []).append(
            {
                "date": date,
                "tweet": cell(view, step_id),
                "image": cell(view, image_step) if image_step in steps else None,
            }
        )
    return {
        "timelines": [
            (key, names.get(key, key), sorted(days, key=lambda d: d["date"]))
            for key, days in timelines.items()
        ]
    }


@content_view(C.KIND_BATCH, "batch.html")
def batch(view: JobView, store: JobStore) -> dict[str, Any]:
    """A table by topic and level; reviewed next to draft when there was a review."""
    topics = view.record.spec.get("topics", [])
    reviewed = bool(view.record.spec.get("review_model"))
    rows = []
    for step_id in view.record.step_ids:
        if batch_kind.is_review(step_id):
            continue
        t, level, chunk = batch_kind.parse_step(step_id)
        draft = cell(view, step_id)
        review = cell(view, batch_kind.review_of(step_id)) if reviewed else None
        drafts = (draft.output or {}).get("items", [])
        finals = ((review.output if review else None) or {}).get("items", [])
        for n in range(max(len(drafts), len(finals), 1)):
            rows.append(
                {
                    "topic": topics[t - 1] if 0 < t <= len(topics) else f"t{t}",
                    "level": level, "chunk": chunk, "n": n + 1, "draft_cell": draft,
                    "review_cell": review,
                    "draft": drafts[n] if n < len(drafts) else None,
                    "review": finals[n] if n < len(finals) else None,
                }
            )  # fmt: skip
    return {"rows": rows, "reviewed": reviewed}


@content_view(C.KIND_IMAGES, "images.html")
def images(view: JobView, store: JobStore) -> dict[str, Any]:
    """A gallery: each picture with its prompt, simplified prompt, backend, GPU, time."""
    pictures = []
    for step_id in view.record.step_ids:
        c = cell(view, step_id)
        prompt = (c.output or {}).get("prompt") or store.input(view.id, prompt_input(step_id))
        pictures.append({"cell": c, "prompt": prompt})
    return {"pictures": pictures}


@content_view("recipe", "recipe.html")
def recipe(view: JobView, store: JobStore) -> dict[str, Any]:
    """One row per input row, one column per stage (each version of a stage in its cell)."""
    from genfleet.kinds.recipe import KIND, row_input, stage_steps

    spec = KIND.spec(view.record)
    stages = spec.recipe.stages
    per_row = sum(stage.versions for stage in stages)
    count = min(spec.rows, max(1, MAX_CONTENT_STEPS // per_row))
    inputs = store.inputs(view.id, [row_input(n) for n in range(1, count + 1)])
    rows = []
    for n, raw in enumerate(inputs, 1):
        cells = [[cell(view, s) for s in stage_steps(n, stage)] for stage in stages]
        rows.append({"n": n, "input": json.loads(raw) if raw else None, "stages": cells})
    return {"stages": [stage.name for stage in stages], "rows": rows}
