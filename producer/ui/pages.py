"""What the job list and a job's page show, as plain values for the templates.

Everything is read through the store; nothing here writes. Text from models and
input files is passed on as it is: the templates escape it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from genfleet import constants as C
from genfleet.records import JobMetrics, JobView, StepResult
from genfleet.store import JobOverview, JobStore
from genfleet.summary import compute_metrics

MAX_LIST_JOBS = 200  # the job list shows at most this many of the newest jobs
MAX_STEP_ROWS = 500  # a bigger job's page lists its failed and running steps first


@dataclass(frozen=True)
class JobRow:
    """One line of the job list."""

    id: str
    kind: str
    status: str
    total: int
    ok: int
    failed: int
    running: int
    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    created_at: float

    @property
    def waiting(self) -> int:
        return max(0, self.total - self.ok - self.failed - self.running)

    @property
    def percent(self) -> int:
        return round(100 * (self.ok + self.failed) / self.total) if self.total else 0

    @property
    def ended(self) -> bool:
        return self.status in C.TERMINAL_STATUSES


def cost_of(metrics: Any) -> float | None:
    """A job's or step's cost in USD when it is recorded (None: unknown, never 0)."""
    if metrics is None:
        return None
    if isinstance(metrics, dict):
        value = metrics.get("cost_usd", (metrics.get("extra") or {}).get("cost_usd"))
    else:
        value = getattr(metrics, "cost_usd", None)
        extra = getattr(metrics, "extra", None)
        if value is None and isinstance(extra, dict):
            value = extra.get("cost_usd")
        meta = getattr(metrics, "meta", None)
        if value is None and isinstance(meta, dict):
            value = meta.get("cost_usd")
    return float(value) if isinstance(value, int | float) else None


def _row(o: JobOverview) -> JobRow:
    metrics = o.summary.get("metrics") or {}
    tokens_in = int(metrics.get("tokens_in", o.tokens[0]) or 0)
    tokens_out = int(metrics.get("tokens_out", o.tokens[1]) or 0)
    p = o.progress
    return JobRow(
        id=o.record.id, kind=o.record.kind, status=p.status, total=p.total, ok=p.ok,
        failed=p.failed, running=p.running, tokens_in=tokens_in, tokens_out=tokens_out,
        cost_usd=cost_of(metrics), created_at=o.record.created_at,
    )  # fmt: skip


def job_rows(store: JobStore) -> list[JobRow]:
    """The newest jobs, newest first."""
    return [_row(o) for o in store.overviews(store.recent(MAX_LIST_JOBS))]


def filtered(rows: list[JobRow], kind: str = "", status: str = "") -> list[JobRow]:
    """The rows of that kind and status ('' = any)."""
    return [r for r in rows if (not kind or r.kind == kind) and (not status or r.status == status)]


@dataclass(frozen=True)
class StepRow:
    """One step of a job's page."""

    id: str
    state: str  # ok, failed, running, waiting
    result: StepResult | None
    started_at: float | None  # of a running step

    @property
    def cost_usd(self) -> float | None:
        return cost_of(self.result)


def _step_state(view: JobView, step_id: str) -> str:
    if step_id in view.ok:
        return "ok"
    if step_id in view.failed:
        return "failed"
    return "running" if step_id in view.running else "waiting"


def step_rows(view: JobView) -> tuple[list[StepRow], int]:
    """The steps to list (all, or for a big job its failed and running ones first)
    and how many were left out."""
    ids = view.record.step_ids
    if len(ids) > MAX_STEP_ROWS:
        first = [s for s in ids if _step_state(view, s) in ("failed", "running")]
        chosen = set(first)
        ids = (first + [s for s in ids if s not in chosen])[:MAX_STEP_ROWS]
    rows = []
    for step_id in ids:
        state = _step_state(view, step_id)
        result = view.ok.get(step_id) or view.failed.get(step_id)
        started = view.running.get(step_id) if state == "running" else None
        rows.append(StepRow(step_id, state, result if state != "running" else None, started))
    return rows, view.total - len(rows)


@dataclass(frozen=True)
class JobPage:
    """Everything the page of one job shows above its content."""

    view: JobView
    metrics: JobMetrics
    steps: list[StepRow]
    steps_left_out: int
    counts: dict[str, int]
    cost_usd: float | None

    @property
    def percent(self) -> int:
        return round(100 * self.view.done / self.view.total) if self.view.total else 0

    @property
    def ended(self) -> bool:
        return self.view.status in C.TERMINAL_STATUSES

    @property
    def can_resume(self) -> bool:
        """Resume re-runs the steps without a result, once the job has ended and no
        step is still running (a cancelled job's running steps finish first)."""
        return self.ended and not self.view.running and len(self.view.ok) < self.view.total


def job_page(view: JobView) -> JobPage:
    now = time.time()
    metrics = view.metrics or compute_metrics(view, now)
    steps, left_out = step_rows(view)
    failed = len(set(view.failed) - set(view.ok))
    counts = {
        "ok": len(view.ok),
        "failed": failed,
        "running": len(view.running),
        "waiting": max(0, view.total - len(view.ok) - failed - len(view.running)),
    }
    return JobPage(view, metrics, steps, left_out, counts, cost_of(metrics))
