"""What a kind's worker logic gets for one step: the job, the step, and the
worker's resources. Plain, no Celery: the task factory (``workers.kind_tasks``)
makes one per delivery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genfleet.records import JobRecord
from genfleet.settings import Settings
from genfleet.store import JobStore
from workers import runtime
from workers.gateway_types import CallContext, ChatResult

if TYPE_CHECKING:
    from workers.gateway import LLMGateway

StepOutput = tuple[Any, ChatResult | None]


@dataclass
class StepCall:
    """One step to run: ``record`` (its job), ``step_id``, ``index``, ``ctx``."""

    record: JobRecord
    step_id: str
    index: int
    ctx: CallContext

    def inputs(self, names: list[str]) -> list[str | None]:
        """Job inputs (None where missing): those read with the step's start (its
        ``TaskDef.inputs``) without another round trip, the rest from the store."""
        got = self.ctx.inputs
        if all(n in got for n in names):
            return [got[n] for n in names]
        return self.store.inputs(self.record.id, names)

    @property
    def store(self) -> JobStore:
        return runtime.store()

    @property
    def settings(self) -> Settings:
        return runtime.settings()

    @property
    def gateway(self) -> LLMGateway:
        return runtime.gateway()


Logic = Callable[[StepCall], StepOutput]
