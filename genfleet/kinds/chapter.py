"""The chapter kind (seed 000): candidate versions of one chapter.

Steps ``v1``..``vN``, one call each; they run in at most ``max_parallel`` lanes, or
as one chain in serial mode. Logic: ``workers.chapter``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from pydantic import Field

from genfleet import constants as C
from genfleet.kinds.base import JobKind, SpecBase, TaskDef, register
from genfleet.records import JobRecord

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature


class ChapterSpec(SpecBase):
    project_id: str = Field(min_length=1, max_length=C.MAX_PROJECT_ID_CHARS)
    chapter_number: int = Field(ge=1, le=100_000)
    outline: str = Field(min_length=1, max_length=C.MAX_OUTLINE_CHARS)
    versions: int = Field(ge=1, le=10)
    model: str
    max_tokens: int = Field(ge=1)
    cache: bool | None = None


def step_id(index: int) -> str:
    """Version ``index`` (0-based) -> ``v{index + 1}``."""
    return f"v{index + 1}"


def version_index(step: str) -> int:
    """``v3`` -> 2 (0-based)."""
    if not step.startswith("v") or not step[1:].isdigit():
        raise ValueError(f"not a chapter step id: {step!r}")
    return int(step[1:]) - 1


class ChapterKind(JobKind[ChapterSpec]):
    name = C.KIND_CHAPTER
    spec_model = ChapterSpec
    tasks = (
        TaskDef(C.TASK_CHAPTER_VERSION, "workers.chapter:run_version",
                "Write one candidate version of a chapter."),
    )  # fmt: skip

    def step_ids(self, spec: ChapterSpec) -> list[str]:
        return [step_id(n) for n in range(spec.versions)]

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:
        from celery import chain

        from genfleet.kinds.canvas import lanes, step

        sigs = [
            step(app, C.TASK_CHAPTER_VERSION, record.id, s, version_index(s), round_)
            for s in record.step_ids
            if s in steps
        ]
        if record.mode == "serial":
            return [chain(*sigs)]
        return lanes(sigs, record.max_parallel)

    def serial(self, record: JobRecord) -> bool:
        return record.mode == "serial"


KIND = register(ChapterKind())
