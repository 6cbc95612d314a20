"""The persona kind (seed 002): seven stages from an image, as a graph, then a merge.

Stage 1 (core) reads the image; stage 2 (strategy) needs 1; stage 3 (examples) needs
1 and 2; stages 4-7 need only 1. Step ids: ``{persona}.{stage}`` and
``{persona}.merge``, e.g. ``p1.core``. The image of persona ``pN`` is the job input
``image:pN``. Logic: ``workers.persona``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from genfleet import constants as C
from genfleet.kinds.base import JobKind, ReadInputs, SpecBase, TaskDef, register
from genfleet.records import JobRecord, JobView

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

# stage -> the stages it needs, in the seed's order
STAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "core": (),
    "strategy": ("core",),
    "examples": ("core", "strategy"),
    "social": ("core",),
    "authenticity": ("core",),
    "visual": ("core",),
    "book": ("core",),
}
STAGES = tuple(STAGE_NEEDS)
MERGE = "merge"
MAX_PERSONAS_PER_JOB = 500
MAX_REASKS = 2
MAX_TOKENS = 1500


class SourceImage(BaseModel):
    key: str
    name: str
    mime: str
    bytes: int
    sha256: str


class PersonaSpec(SpecBase):
    personas: list[SourceImage] = Field(min_length=1, max_length=MAX_PERSONAS_PER_JOB)
    model: str
    max_tokens: int = MAX_TOKENS
    max_reasks: int = Field(default=MAX_REASKS, ge=0, le=5)


def step_id(persona_key: str, stage: str) -> str:
    return f"{persona_key}.{stage}"


def split_step(step: str) -> tuple[str, str]:
    """``p1.core`` -> (``p1``, ``core``)."""
    key, _, stage = step.rpartition(".")
    if not key or (stage not in STAGE_NEEDS and stage != MERGE):
        raise ValueError(f"not a persona step id: {step!r}")
    return key, stage


def image_input(persona_key: str) -> str:
    """The job input holding a persona's image (a data URL)."""
    return f"image:{persona_key}"


class PersonaKind(JobKind[PersonaSpec]):
    name = C.KIND_PERSONA
    spec_model = PersonaSpec
    tasks = (
        TaskDef(C.TASK_PERSONA_STAGE, "workers.persona:run_stage",
                "One stage of one persona (core, strategy, examples, social, ...)."),
        TaskDef(C.TASK_PERSONA_MERGE, "workers.persona:run_merge",
                "Merge a persona's stages into one JSON document and file."),
    )  # fmt: skip

    def step_ids(self, spec: PersonaSpec) -> list[str]:
        keys = [p.key for p in spec.personas]
        return [step_id(k, s) for k in keys for s in STAGES] + [step_id(k, MERGE) for k in keys]

    def task_of(self, step: str) -> str:
        return self.tasks[1 if split_step(step)[1] == MERGE else 0].name

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:
        wanted = {split_step(s)[0] for s in steps}
        keys = [p.key for p in self.spec(record).personas]
        return [self._one(app, record, key, round_) for key in keys if key in wanted]

    def _one(self, app: Celery, record: JobRecord, key: str, round_: int) -> Signature:
        from celery import chain, chord, group

        from genfleet.kinds.canvas import step

        def s(name: str) -> Signature:
            sid = step_id(key, name)
            return step(app, self.task_of(sid), record.id, sid, 0, round_)

        if record.mode == "serial":  # the seed's seven stages in sequence
            return chain(*(s(name) for name in STAGES), s(MERGE))
        branches = [
            chain(s("strategy"), s("examples")),
            *(s(n) for n in ("social", "authenticity", "visual", "book")),
        ]
        return chain(s("core"), chord(group(branches), s(MERGE)))

    def made(self, view: JobView, read_inputs: ReadInputs) -> list[dict[str, Any]]:
        """One merged persona a line."""
        return [
            {"step_id": r.step_id, "ok": True, **r.output["persona"]}
            for r in view.step_results()
            if r.ok and split_step(r.step_id)[1] == MERGE
        ]


KIND = register(PersonaKind())
