"""Text the command line shows: job status, results, job lists."""

from __future__ import annotations

import json
import time
from typing import Any

from genfleet import constants as C
from genfleet.kinds import ReadInputs, UnknownKindError, get_kind
from genfleet.prices import format_usd
from genfleet.records import JobMetrics, JobRecord, JobView
from genfleet.store import JobStore, Progress
from genfleet.summary import compute_metrics
from producer.cli_common import check_job_id
from producer.progress import describe

__all__ = ["check_job_id", "jobs_text", "output_records", "results_text", "status_text"]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


MAX_STEP_LINES = 20  # a bigger job lists only its failed and running steps


def _step_state(view: JobView, step_id: str, now: float) -> str:
    if step_id in view.ok:
        r = view.ok[step_id]
        cached = " (cached)" if r.cached else ""
        if _is_image(r.output):  # a picture: no tokens to speak of
            return f"ok in {r.seconds:.2f}s, {r.output['path']}, {format_usd(r.cost_usd)}"
        return f"ok in {r.seconds:.2f}s, {r.tokens_out} tokens, {format_usd(r.cost_usd)}{cached}"
    if step_id in view.failed:
        failed = view.failed[step_id]
        if failed.error_type == C.STEP_BUDGET_EXCEEDED:
            return f"{C.STEP_BUDGET_EXCEEDED}: {failed.error}"
        return f"failed: {failed.error}"
    if step_id in view.running:
        return f"running for {now - view.running[step_id]:.1f}s"
    return "not run (job cancelled)" if view.status == C.STATUS_CANCELLED else "waiting"


def _is_image(output: Any) -> bool:
    return isinstance(output, dict) and "path" in output and "backend" in output


def _step_lines(view: JobView, now: float) -> list[str]:
    shown = view.record.step_ids
    if len(shown) > MAX_STEP_LINES:
        failed = [s for s in shown if s in view.failed and s not in view.ok]
        shown = (failed[:10] + [s for s in shown if s in view.running][:10])[:MAX_STEP_LINES]
    lines = [f"  {step_id}: {_step_state(view, step_id, now)}" for step_id in shown]
    if len(shown) < view.total:
        lines.append(f"  ({view.total - len(shown)} more steps not listed)")
    return lines


def _pace_line(view: JobView, elapsed: float) -> str:
    """Elapsed time, steps per second, and an estimate of what is left."""
    line = f"  elapsed {elapsed:.1f}s"
    if view.done and elapsed > 0:
        rate = view.done / elapsed
        line += f", {rate:.2f} steps/s"
        if view.status not in C.TERMINAL_STATUSES:
            line += f", about {(view.total - view.done) / rate:.0f}s left"
    return line


def batch_lines(batches: dict[str, str]) -> list[str]:
    """A batch-mode job's batches (``genfleet:job:{id}:batches``): id, status, counts."""
    lines = []
    for batch_id, raw in sorted(batches.items()):
        info = json.loads(raw)
        c = info.get("counts") or {}
        lines.append(
            f"  batch {batch_id}: {info.get('status')}, {c.get('completed', 0)} completed, "
            f"{c.get('failed', 0)} failed of {c.get('total', 0)}"
        )
    return lines


def speedup_text(view: JobView, metrics: JobMetrics, rounds: int = 0) -> str:
    """The speed-up (serial-equivalent / elapsed), or why it means nothing here."""
    if view.status not in (C.STATUS_SUCCEEDED, C.STATUS_PARTIAL):
        return f"n/a ({view.status})"
    if rounds:
        return "n/a (resumed: the time between runs counts as elapsed)"
    return f"{metrics.speedup:.2f}x"


def _counts_tokens(record: JobRecord) -> bool:
    try:
        return get_kind(record.kind).counts_tokens
    except UnknownKindError:
        return True


def status_text(view: JobView, rounds: int = 0, batches: dict[str, str] | None = None) -> str:
    """Status and counts, elapsed time and an estimate of what is left, the steps
    (all of a small job; the failed and running ones of a big job), metrics, error.
    ``rounds``: how many times the job was resumed."""
    now = time.time()
    m = view.metrics or compute_metrics(view, now)
    failed = len(set(view.failed) - set(view.ok))
    counts = Progress(view.status, view.total, len(view.ok), failed, len(view.running))
    lines = [
        describe(view.id, counts),
        f"  kind {_label(view.record)}, mode {view.record.mode}, "
        f"created {_age(now - view.record.created_at)} ago",
        _pace_line(view, m.elapsed_s),
        *_step_lines(view, now),
        f"  serial-equivalent {m.serial_equivalent_s:.2f}s, "
        f"speed-up {speedup_text(view, m, rounds)}"
        + (f", tokens in/out {m.tokens_in}/{m.tokens_out}" if _counts_tokens(view.record) else ""),
    ]
    lines.append(cost_line(view, m.cost_usd))
    lines += batch_lines(batches or {})
    llm = m.extra.get("llm")
    if llm and llm.get("calls"):  # an image job makes no LLM call: no line of zeros
        lines.append(
            f"  LLM calls {llm['calls']} (ok {llm['ok']}, retries {llm['retries']}, "
            f"429s {llm['rate_limited']}, cache hits {llm['cache_hits']})"
        )
    if view.error:
        lines.append(f"  error: {view.error}")
    return "\n".join(lines)


def cost_line(view: JobView, cost: float | None) -> str:
    """The job's cost so far, against its budget when it has one."""
    line = f"  cost {format_usd(cost)}"
    if cost is None:
        line += " (a model without a price: see GENFLEET_PRICES)"
    budget = view.record.spec.get("max_cost_usd")
    if budget:
        line += f" of a budget of {format_usd(float(budget))}"
    if view.record.spec.get("api_mode") == C.API_BATCH:
        line += " (Batch API prices)"
    return line


def _no_inputs(names: list[str]) -> dict[str, str | None]:
    return dict.fromkeys(names)


def output_records(view: JobView, read_inputs: ReadInputs = _no_inputs) -> list[dict[str, Any]]:
    """What a job produced, one record per thing made (an item, a tweet, a persona, a
    recipe's row...), and a record for every failed step (``ok: false``, its error);
    the job's kind says how (``genfleet.kinds``). ``read_inputs`` reads its inputs."""
    return get_kind(view.record.kind).records(view, read_inputs)


def results_text(view: JobView, fmt: str = "json", read_inputs: ReadInputs = _no_inputs) -> str:
    """JSON lines of what the job made, or one JSON document with every step."""
    if fmt == "jsonl":
        records = output_records(view, read_inputs)
        return "\n".join(json.dumps(rec, ensure_ascii=False) for rec in records)
    steps = [r.model_dump() for r in view.step_results()]
    doc = {
        "job_id": view.id,
        "kind": view.record.kind,
        "status": view.status,
        "spec": view.record.spec,
        "metrics": (view.metrics or compute_metrics(view)).model_dump(),
        "error": view.error,
        "steps": steps,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)


def jobs_text(store: JobStore, limit: int) -> str:
    """A table of recent jobs: id, kind, status, counts, age."""
    rows = [f"{'JOB':<28} {'KIND':<10} {'STATUS':<10} {'OK':>6} {'FAIL':>6} {'TOTAL':>6}  AGE"]
    for job_id in store.recent(limit):
        record = store.record(job_id)
        p = store.progress(job_id)
        age = _age(time.time() - record.created_at)
        rows.append(
            f"{job_id:<28} {_label(record):<10} {p.status:<10} "
            f"{p.ok:>6} {p.failed:>6} {p.total:>6}  {age}"
        )
    return "\n".join(rows) if len(rows) > 1 else "no jobs"


def results_summary(view: JobView, fmt: str, read_inputs: ReadInputs = _no_inputs) -> str:
    """What ``results --out`` wrote, counted as it was written."""
    if fmt == "jsonl":
        records = output_records(view, read_inputs)
        failed = sum(1 for rec in records if rec.get("ok") is False or rec.get("errors"))
        return f"{len(records)} lines ({len(records) - failed} results, {failed} failed steps)"
    return f"{len(view.step_results())} step results"


def _label(record: JobRecord) -> str:
    try:
        return get_kind(record.kind).label(record)
    except UnknownKindError:
        return record.kind
