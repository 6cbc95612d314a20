"""A job's final status and metrics, derived from its step results."""

from __future__ import annotations

import time
from typing import Any

from genfleet import constants as C
from genfleet.prices import format_usd
from genfleet.records import JobMetrics, JobView, StepResult

# A job's LLM call counters (``genfleet:stats:job:{id}``) that a success adds are kept
# as one vector in one field (two commands per call, not one per counter): the
# gateway's ``workers.callstats`` writes it, readers add it to the plain counters.
SUCCESS_FIELD = "success"
SUCCESS_COUNTERS = ("ok", "tokens_in", "tokens_out", "cost_usd", "limiter_wait_s",
                    "unpriced_calls")  # fmt: skip


def success_counts(packed: str | bytes | None) -> dict[str, float]:
    """The counters a ``SUCCESS_FIELD`` value holds (empty when there is none)."""
    if not packed:
        return {}
    text = packed.decode() if isinstance(packed, bytes) else packed
    return dict(zip(SUCCESS_COUNTERS, map(float, text.split()), strict=False))


ALL_FAILED_HINT = (
    "check OPENAI_BASE_URL, OPENAI_API_KEY and LLM_MODEL, the network, "
    "and the provider's status; the worker log has each error"
)


def final_status(view: JobView) -> str:
    """``succeeded`` if every step is ok, ``failed`` if none is, else ``partial``.

    A job stopped by its budget is ``partial``: it can go on with a higher one.
    """
    ok = sum(1 for s in view.record.step_ids if s in view.ok)
    if ok == view.total:
        return C.STATUS_SUCCEEDED
    if ok == 0 and not over_budget(view):
        return C.STATUS_FAILED
    return C.STATUS_PARTIAL


def over_budget(view: JobView) -> list[str]:
    """The steps not called because a budget was reached."""
    return [
        r.step_id
        for r in view.step_results()
        if not r.ok and r.error_type == C.STEP_BUDGET_EXCEEDED
    ]


def job_cost(llm: dict[str, Any]) -> float | None:
    """A job's cost from its call counters; None when a call's model had no price."""
    if int(llm.get("unpriced_calls", 0)):
        return None
    return round(float(llm.get("cost_usd", 0.0)), 10)


def budget_error(view: JobView, spent: float | None) -> str:
    """What a job stopped by a budget spent, and how to continue it."""
    stopped = over_budget(view)
    budget = view.record.spec.get("max_cost_usd")
    by_day = any("LLM_BUDGET_USD_PER_DAY" in (view.failed[s].error or "") for s in stopped)
    head = f"{format_usd(spent)} spent; {len(stopped)} of {view.total} steps were not called"
    if by_day or not budget:
        return (
            f"the cluster's budget for the day (LLM_BUDGET_USD_PER_DAY) was reached: {head} "
            f"({C.STEP_BUDGET_EXCEEDED}). Continue tomorrow (UTC) or with a higher "
            f"LLM_BUDGET_USD_PER_DAY: genfleet resume {view.id}"
        )
    return (
        f"its budget of {format_usd(budget)} was reached: {head} ({C.STEP_BUDGET_EXCEEDED}). "
        f"Continue with: genfleet resume {view.id} --max-cost USD (the job's new total budget)"
    )


def final_error(view: JobView, spent: float | None = None) -> str | None:
    """What to tell the user when steps failed (None when all succeeded)."""
    failed = [r for r in view.step_results() if not r.ok]
    if not failed:
        return None
    if over_budget(view):
        return budget_error(view, spent)
    last = failed[-1].error or "unknown error"
    if len(failed) == view.total:
        return f"all {view.total} steps failed; last error: {last}; {ALL_FAILED_HINT}"
    return f"{len(failed)} of {view.total} steps failed; last error: {last}"


def compute_metrics(view: JobView, now: float | None = None) -> JobMetrics:
    """Elapsed, serial-equivalent time, speed-up, efficiency (seed 000), tokens."""
    results = view.step_results()
    end = view.finished_at or now or time.time()
    start = view.started_at or view.record.created_at
    if results:
        start = min(start, min(r.started_at for r in results))
        end = max(r.finished_at for r in results) if view.done == view.total else end
    elapsed = max(0.0, end - start)
    serial = sum(r.seconds for r in results)
    return JobMetrics(
        elapsed_s=round(elapsed, 3),
        serial_equivalent_s=round(serial, 3),
        mean_step_s=round(serial / len(results), 3) if results else 0.0,
        speedup=round(serial / elapsed, 3) if elapsed > 0 else 0.0,
        parallel_efficiency_pct=round((serial - elapsed) / serial * 100, 1) if serial > 0 else 0.0,
        steps_ok=sum(1 for r in results if r.ok),
        steps_failed=sum(1 for r in results if not r.ok),
        tokens_in=sum(r.tokens_in for r in results),
        tokens_out=sum(r.tokens_out for r in results),
        attempts=sum(r.attempts for r in results),
        cache_hits=sum(1 for r in results if r.cached),
        cost_usd=_steps_cost(results),
    )


def _steps_cost(results: list[StepResult]) -> float | None:
    """The cost of the successful steps (a running job's figure; see ``job_cost``)."""
    costs = [r.cost_usd for r in results if r.ok]
    if any(c is None for c in costs):
        return None
    return round(sum(c or 0.0 for c in costs), 10)
