"""Celery tasks of the pipelines: persona stages and merge, tweets, batch items.

Thin, like ``workers.tasks``: ids in, plain logic from ``workers.persona``,
``workers.tweets`` and ``workers.items``, results stored once by the step runner.
Every one of them has the same arguments: ``(job_id, step_id, index=0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from genfleet import constants as C
from genfleet.records import JobRecord
from workers import items, persona, runtime, tweets
from workers.app import app
from workers.gateway import CallContext
from workers.taskbase import STEP_OPTIONS, run_step

StepLogic = Callable[[JobRecord, str, CallContext], Any]


def _step_task(name: str, doc: str, logic: StepLogic) -> Task:
    @app.task(name=name, **STEP_OPTIONS)
    def step_task(
        self: Task, job_id: str, step_id: str, index: int = 0, attempts_used: int = 0,
        rate_limited_used: int = 0,
    ) -> dict:  # fmt: skip
        def work(record: JobRecord, ctx: CallContext) -> Any:
            return logic(record, step_id, ctx)

        return run_step(self, job_id, step_id, index, work, attempts_used, rate_limited_used)

    step_task.__doc__ = doc
    return step_task


def _merge(record: JobRecord, step: str, ctx: CallContext) -> Any:
    out_dir = runtime.settings().genfleet_home / "outputs" / record.id
    return persona.merge(runtime.store(), record, step, out_dir), None


persona_stage = _step_task(
    C.TASK_PERSONA_STAGE,
    "One stage of one persona (core, strategy, examples, social, ...).",
    lambda record, step, ctx: persona.run_stage(
        runtime.gateway(), runtime.store(), record, step, ctx
    ),
)
persona_merge = _step_task(
    C.TASK_PERSONA_MERGE, "Merge a persona's stages into one JSON document and file.", _merge
)
tweet = _step_task(
    C.TASK_TWEET,
    "One calendar day's tweet.",
    lambda record, step, ctx: tweets.write_tweet(
        runtime.gateway(), runtime.store(), record, step, ctx
    ),
)
batch_items = _step_task(
    C.TASK_BATCH_ITEMS,
    "One call's worth of items (batch_size) for one topic and level.",
    lambda record, step, ctx: items.generate_items(runtime.gateway(), record, step, ctx),
)
batch_review = _step_task(
    C.TASK_BATCH_REVIEW,
    "Review a draft step's items with the review model.",
    lambda record, step, ctx: items.review_items(
        runtime.gateway(), runtime.store(), record, step, ctx
    ),
)
