"""The one task factory: a Celery task for every ``TaskDef`` of every job kind.

Every step task has the same arguments, ``(job_id, step_id, index=0)``, ids only
(readable in Flower, free of secrets); the task checks them, builds a ``StepCall``
and runs the kind's logic through the step runner (``workers.taskbase.run_step``):
a stored result is not made again, a failure is stored with its error, and a long
wait re-schedules the task. Kinds registered later in this process (a module given
to the worker with ``-I``) get their tasks too.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from celery import Task

from genfleet.kinds import JobKind, TaskDef, all_kinds, on_register
from genfleet.records import JobRecord
from workers.app import app
from workers.gateway_types import CallContext
from workers.stepcall import Logic, StepCall, StepOutput
from workers.taskbase import STEP_OPTIONS, run_step

TASKS: dict[str, Task] = {}


@cache
def load_logic(path: str) -> Logic:
    """``module:function`` -> the function (a worker-side import, on first use: a
    logic module imports its contract, which may be registering just now)."""
    module, _, name = path.partition(":")
    logic: Logic = getattr(importlib.import_module(module), name)
    return logic


def make_task(definition: TaskDef) -> Task:
    """The Celery task of one ``TaskDef``."""

    @app.task(name=definition.name, **STEP_OPTIONS)
    def step_task(
        self: Task, job_id: str, step_id: str, index: int = 0, attempts_used: int = 0,
        rate_limited_used: int = 0,
    ) -> dict[str, Any]:  # fmt: skip
        def work(record: JobRecord, ctx: CallContext) -> StepOutput:
            return load_logic(definition.logic)(StepCall(record, step_id, int(index), ctx))

        inputs = definition.inputs(step_id) if definition.inputs is not None else ()
        return run_step(
            self, job_id, step_id, int(index), work, int(attempts_used), int(rate_limited_used),
            inputs,
        )  # fmt: skip

    step_task.__doc__ = definition.doc
    return step_task


def _add_kind(kind: JobKind[Any]) -> None:
    for definition in kind.tasks:
        if definition.name not in TASKS:  # a task may serve several kinds (images)
            TASKS[definition.name] = make_task(definition)


on_register(_add_kind)
all_kinds()  # imports the built-in kinds; each registers, and gets its tasks
