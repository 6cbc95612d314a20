"""Text the command line shows: job status, results, job lists."""

from __future__ import annotations

import json
import re
import time

from genfleet.errors import InputError
from genfleet.records import JobView
from genfleet.store import JobStore
from genfleet.summary import compute_metrics
from producer.progress import describe

_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")


def check_job_id(job_id: str) -> str:
    """Refuse a job id that cannot be one (before touching Redis)."""
    if not _JOB_ID.match(job_id):
        raise InputError(
            f"job id {job_id!r} is malformed: letters, digits, '-', '_', '.', ':' only"
        )
    return job_id


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def status_text(view: JobView) -> str:
    """A few lines: status and counts, each step's state, metrics, error."""
    metrics = view.metrics or compute_metrics(view)
    lines = [describe(view)]
    lines.append(
        f"  kind {view.record.kind}, mode {view.record.mode}, "
        f"created {_age(time.time() - view.record.created_at)} ago"
    )
    for step_id in view.record.step_ids:
        if step_id in view.ok:
            r = view.ok[step_id]
            state = f"ok in {r.seconds:.2f}s, {r.tokens_out} tokens" + (
                " (cached)" if r.cached else ""
            )
        elif step_id in view.failed:
            state = f"failed: {view.failed[step_id].error}"
        elif step_id in view.running:
            state = f"running for {time.time() - view.running[step_id]:.1f}s"
        else:
            state = "waiting"
        lines.append(f"  {step_id}: {state}")
    m = metrics
    lines.append(
        f"  elapsed {m.elapsed_s:.2f}s, serial-equivalent {m.serial_equivalent_s:.2f}s, "
        f"speed-up {m.speedup:.2f}x, tokens in/out {m.tokens_in}/{m.tokens_out}"
    )
    if view.error:
        lines.append(f"  error: {view.error}")
    return "\n".join(lines)


def results_text(view: JobView, fmt: str = "json") -> str:
    """The job's step results as one JSON document or JSON lines."""
    steps = [r.model_dump() for r in view.step_results()]
    if fmt == "jsonl":
        return "\n".join(json.dumps(s, ensure_ascii=False) for s in steps)
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
    rows = [f"{'JOB':<28} {'KIND':<10} {'STATUS':<10} {'OK':>4} {'FAIL':>4} {'TOTAL':>5}  AGE"]
    for job_id in store.recent(limit):
        view = store.load(job_id)
        failed = len(set(view.failed) - set(view.ok))
        age = _age(time.time() - view.record.created_at)
        rows.append(
            f"{view.id:<28} {view.record.kind:<10} {view.status:<10} "
            f"{len(view.ok):>4} {failed:>4} {view.total:>5}  {age}"
        )
    return "\n".join(rows) if len(rows) > 1 else "no jobs"
