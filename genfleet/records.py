"""The one schema of job records and step results, as stored in Redis."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StepResult(BaseModel):
    """The outcome of one step (one LLM call chain) of a job."""

    step_id: str
    index: int = 0
    ok: bool
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    raw: str | None = None  # the model's unusable answer, kept for a person to read
    attempts: int = 1
    started_at: float = 0.0
    finished_at: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = ""
    worker: str = ""
    cached: bool = False
    cost_usd: float | None = None  # USD of the step's calls; None: unknown (no price)
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished_at - self.started_at)


class JobRecord(BaseModel):
    """What was asked for: written once by the producer."""

    id: str
    kind: str
    spec: dict[str, Any]
    step_ids: list[str] = Field(default_factory=list)  # stored apart: see JobStore.create
    created_at: float
    mode: str = "parallel"  # or "serial"
    max_parallel: int = 0  # this job's own cap on its steps in flight (0 = none)


class JobMetrics(BaseModel):
    """Figures computed when a job finishes (and estimated while it runs)."""

    elapsed_s: float = 0.0
    serial_equivalent_s: float = 0.0
    mean_step_s: float = 0.0
    speedup: float = 0.0
    parallel_efficiency_pct: float = 0.0
    steps_ok: int = 0
    steps_failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 0
    cache_hits: int = 0
    cost_usd: float | None = None  # USD; None when a call's model had no price
    extra: dict[str, Any] = Field(default_factory=dict)


class JobView(BaseModel):
    """Everything known about a job now: record, status, steps and metrics."""

    record: JobRecord
    status: str
    started_at: float | None = None
    finished_at: float | None = None
    ok: dict[str, StepResult] = Field(default_factory=dict)
    failed: dict[str, StepResult] = Field(default_factory=dict)
    running: dict[str, float] = Field(default_factory=dict)
    metrics: JobMetrics | None = None
    error: str | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def total(self) -> int:
        return len(self.record.step_ids)

    @property
    def done(self) -> int:
        return len(self.ok) + len(set(self.failed) - set(self.ok))

    def step_results(self) -> list[StepResult]:
        """One result per finished step, in step order; a success beats a failure."""
        out = []
        for step_id in self.record.step_ids:
            result = self.ok.get(step_id) or self.failed.get(step_id)
            if result is not None:
                out.append(result)
        return out
