"""A job kind made the way README's "Adding a job kind" says: this contract module
and a logic module (``tests/echo_logic.py``). Nothing else in genfleet names it:
the worker loads it with ``-I tests.echo_kind``, the producer by importing it.

The kind: one call per word, asking the model to repeat the word; steps ``w1``..``wN``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from celery import Celery
from celery.canvas import Signature
from pydantic import BaseModel, Field

from genfleet.kinds import JobKind, ReadInputs, TaskDef, register
from genfleet.records import JobMetrics, JobRecord, JobView
from genfleet.settings import Settings


class EchoSpec(BaseModel):
    words: list[str] = Field(min_length=1, max_length=50)
    model: str


def step_id(index: int) -> str:
    return f"w{index + 1}"


def word_index(step: str) -> int:
    return int(step[1:]) - 1


class EchoKind(JobKind[EchoSpec]):
    name = "echo"
    spec_model = EchoSpec
    tasks = (TaskDef("genfleet.llm.echo", "tests.echo_logic:run_echo", "Repeat one word."),)

    def step_ids(self, spec: EchoSpec) -> list[str]:
        return [step_id(n) for n in range(len(spec.words))]

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:
        from genfleet.kinds.canvas import step

        return [
            step(app, self.tasks[0].name, record.id, s, word_index(s), round_)
            for s in record.step_ids
            if s in steps
        ]

    def records(self, view: JobView, read_inputs: ReadInputs) -> list[dict[str, Any]]:
        spec = self.spec(view.record)
        return [
            {"word": spec.words[word_index(r.step_id)], "echo": r.output}
            for r in view.step_results()
            if r.ok
        ]

    def metrics(self, view: JobView, metrics: JobMetrics) -> dict[str, Any]:
        return {"echo": {"words": len(self.spec(view.record).words), "echoed": len(view.ok)}}


KIND = register(EchoKind())


def submit_echo(words: list[str], *, settings: Settings | None = None) -> Any:
    """The kind's submit function: check, make the record, enqueue the canvas."""
    from producer.canvas import job_canvas
    from producer.client import connect
    from producer.jobs import enqueue, make_record

    client = connect(settings)
    spec = KIND.check_spec("echo", words=words, model=client.settings.llm_model)
    record = make_record(KIND.name, spec.model_dump(), KIND.step_ids(spec))
    return enqueue(client, record, job_canvas(client.app, record))
