"""The batch-items kind (seed 003): items for every topic x level, several per call.

Step ids ``t{topic}.L{level}.c{chunk}`` (topic and chunk 1-based), and
``{step}.review`` for the review of a step's items by the review model.
Logic: ``workers.items``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator

from genfleet import constants as C
from genfleet.kinds.base import JobKind, ReadInputs, SpecBase, TaskDef, register
from genfleet.kinds.checks import has_control_chars
from genfleet.records import JobMetrics, JobRecord, JobView, StepResult

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

ITEM_KIND_NAMES = ("cloze", "translation", "vocab")  # their schemas: workers.items
REVIEW_SUFFIX = ".review"


class BatchSpec(SpecBase):
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


def chunk_sizes(per_combo: int, batch_size: int) -> list[int]:
    """How many items each call of one combination asks for."""
    calls = math.ceil(per_combo / batch_size)
    return [min(batch_size, per_combo - n * batch_size) for n in range(calls)]


def step_ids(topics: list[str], levels: list[int], per_combo: int, batch_size: int) -> list[str]:
    """``t{topic}.L{level}.c{chunk}`` for every call of the job."""
    return [
        f"t{t}.L{level}.c{c}"
        for t in range(1, len(topics) + 1)
        for level in levels
        for c in range(1, len(chunk_sizes(per_combo, batch_size)) + 1)
    ]


def parse_step(step: str) -> tuple[int, int, int]:
    """``t2.L3.c1`` (or its review) -> (topic index 1-based, level, chunk 1-based)."""
    t, level, c = step.removesuffix(REVIEW_SUFFIX).split(".")
    return int(t[1:]), int(level[1:]), int(c[1:])


def is_review(step: str) -> bool:
    return step.endswith(REVIEW_SUFFIX)


def review_of(step: str) -> str:
    return step + REVIEW_SUFFIX


def draft_of(review_step: str) -> str:
    return review_step.removesuffix(REVIEW_SUFFIX)


def final_steps(view: JobView) -> list[StepResult]:
    """A batch job's delivered calls: the review's result where there is one."""
    out = []
    for sid in view.record.step_ids:
        if is_review(sid):
            continue
        result = view.ok.get(review_of(sid)) or view.ok.get(sid)
        if result is not None:
            out.append(result)
    return out


class BatchKind(JobKind[BatchSpec]):
    name = C.KIND_BATCH
    spec_model = BatchSpec
    tasks = (
        TaskDef(C.TASK_BATCH_ITEMS, "workers.items:run_items",
                "One call's worth of items (batch_size) for one topic and level."),
        TaskDef(C.TASK_BATCH_REVIEW, "workers.items:run_review",
                "Review a draft step's items with the review model."),
    )  # fmt: skip

    def step_ids(self, spec: BatchSpec) -> list[str]:
        drafts = step_ids(spec.topics, spec.levels, spec.per_combo, spec.batch_size)
        if not spec.review_model:
            return drafts
        return [sid for draft in drafts for sid in (draft, review_of(draft))]

    def task_of(self, step: str) -> str:
        return C.TASK_BATCH_REVIEW if is_review(step) else C.TASK_BATCH_ITEMS

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:
        from celery import chain

        from genfleet.kinds.canvas import step

        all_steps = set(record.step_ids)
        out: list[Signature] = []
        for n, sid in enumerate(record.step_ids):
            if is_review(sid) or (sid not in steps and review_of(sid) not in steps):
                continue
            sig = step(app, C.TASK_BATCH_ITEMS, record.id, sid, n, round_)
            if review_of(sid) in all_steps:
                sig = chain(
                    sig, step(app, C.TASK_BATCH_REVIEW, record.id, review_of(sid), n, round_)
                )
            out.append(sig)
        return out

    def made(self, view: JobView, read_inputs: ReadInputs) -> list[dict[str, Any]]:
        """One item a line, with the step that made it and what it is about."""
        return [
            {"step_id": r.step_id, "ok": True, **self.context(view, r.step_id), **item}
            for r in final_steps(view)
            for item in r.output["items"]
        ]

    def context(self, view: JobView, step_id: str) -> dict[str, Any]:
        """What a batch step's items are about: kind, language, topic and level."""
        spec = self.spec(view.record)
        topic_n, level, _chunk = parse_step(step_id)
        return {"kind": spec.kind, "lang": spec.lang, "topic": spec.topics[topic_n - 1],
                "level": level}  # fmt: skip

    def metrics(self, view: JobView, metrics: JobMetrics) -> dict[str, Any]:
        """Seed 003's figures: items/s, success rate, tokens per item, error rate."""
        spec = self.spec(view.record)
        requested = spec.per_combo * len(spec.topics) * len(spec.levels)
        delivered = sum(len(r.output["items"]) for r in final_steps(view))
        llm = metrics.extra.get("llm", {})
        calls = int(llm.get("calls", 0))
        tokens = metrics.tokens_in + metrics.tokens_out
        items = {
            "items_requested": requested,
            "items_delivered": delivered,
            "items_per_s": round(delivered / metrics.elapsed_s, 3) if metrics.elapsed_s else 0.0,
            "success_rate": round(delivered / requested, 4) if requested else 0.0,
            "tokens_per_item": round(tokens / delivered, 1) if delivered else 0.0,
            "error_rate": round((calls - int(llm.get("ok", 0))) / calls, 4) if calls else 0.0,
            "calls": calls,
        }
        return {"items": items}


KIND = register(BatchKind())
