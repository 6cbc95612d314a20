"""The tweets kind (seed 002): one tweet per calendar day, all days in flight at once.

Step ids ``{pair}.{date}`` (e.g. ``p1.2025-03-01``), and ``{pair}.{date}.image`` for
the image chained after a tweet. Job inputs: ``persona:{pair}`` (the persona JSON)
and ``plan:{step}`` (the day's plan). Logic: ``workers.tweets``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from genfleet import constants as C
from genfleet.kinds.base import JobKind, ReadInputs, SpecBase, TaskDef, register
from genfleet.kinds.images import IMAGE_STEP_SUFFIX, IMAGE_TASK, image_signature
from genfleet.records import JobRecord, JobView

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

MAX_TOKENS = 400
MAX_REASKS = 2


class Pair(BaseModel):
    key: str
    source: str
    persona: str
    days: int


class TweetsSpec(SpecBase):
    pairs: list[Pair] = Field(min_length=1)
    count: int = Field(ge=1, le=1000)
    model: str
    max_tokens: int = MAX_TOKENS
    max_reasks: int = Field(default=MAX_REASKS, ge=0, le=5)
    with_images: bool = False
    gpu: int | None = Field(default=None, ge=0, le=C.DEFAULT_IMAGE_GPU_QUEUES - 1)


def tweet_step_id(pair: str, date: str) -> str:
    return f"{pair}.{date}"


def image_step_id(tweet_step: str) -> str:
    return tweet_step + IMAGE_STEP_SUFFIX


def is_image_step(step: str) -> bool:
    return step.endswith(IMAGE_STEP_SUFFIX)


def split_step(step: str) -> tuple[str, str]:
    """``p1.2025-03-01`` -> (``p1``, ``2025-03-01``)."""
    pair, _, date = step.removesuffix(IMAGE_STEP_SUFFIX).partition(".")
    if not pair or not date:
        raise ValueError(f"not a tweet step id: {step!r}")
    return pair, date


def persona_input(pair: str) -> str:
    return f"persona:{pair}"


def plan_input(step: str) -> str:
    return f"plan:{step}"


class TweetsKind(JobKind[TweetsSpec]):
    name = C.KIND_TWEETS
    spec_model = TweetsSpec
    tasks = (
        TaskDef(C.TASK_TWEET, "workers.tweets:run_tweet", "One calendar day's tweet.",
                inputs=lambda step: [persona_input(split_step(step)[0]), plan_input(step)]),
        IMAGE_TASK,
    )

    def task_of(self, step: str) -> str:
        return C.TASK_IMAGE_GENERATE if is_image_step(step) else C.TASK_TWEET

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:
        from celery import chain

        from genfleet.kinds.canvas import step

        gpu = self.spec(record).gpu
        all_steps = set(record.step_ids)
        out: list[Signature] = []
        for n, sid in enumerate(record.step_ids):
            if sid not in steps or is_image_step(sid):
                continue
            sig = step(app, C.TASK_TWEET, record.id, sid, n, round_)
            image_id = image_step_id(sid)
            if image_id in all_steps:
                sig = chain(sig, image_signature(app, record.id, image_id, n, gpu, round_))
            out.append(sig)
        for n, sid in enumerate(record.step_ids):  # an image alone, its tweet already made
            if (
                sid in steps
                and is_image_step(sid)
                and sid.removesuffix(IMAGE_STEP_SUFFIX) not in steps
            ):
                out.append(image_signature(app, record.id, sid, n, gpu, round_))
        return out

    def made(self, view: JobView, read_inputs: ReadInputs) -> list[dict[str, Any]]:
        """One tweet a line, with its image's metadata (or null)."""
        ok = [r for r in view.step_results() if r.ok]
        images = {r.step_id.removesuffix(IMAGE_STEP_SUFFIX): r.output
                  for r in ok if is_image_step(r.step_id)}  # fmt: skip
        return [
            {"step_id": r.step_id, "ok": True, **r.output, "image": images.get(r.step_id)}
            for r in ok
            if not is_image_step(r.step_id)
        ]


KIND = register(TweetsKind())
