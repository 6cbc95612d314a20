"""Text the command line shows: job status, results, job lists."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.records import JobView
from genfleet.store import JobStore, Progress
from genfleet.summary import compute_metrics, final_batch_steps
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
    failed = len(set(view.failed) - set(view.ok))
    counts = Progress(view.status, view.total, len(view.ok), failed, len(view.running))
    lines = [describe(view.id, counts)]
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


def output_records(view: JobView) -> list[dict[str, Any]]:
    """What a job produced, one record per thing made (an item, a tweet, a persona...)."""
    kind = view.record.kind
    if kind == C.KIND_BATCH:
        return [
            {"step_id": r.step_id, **item}
            for r in final_batch_steps(view)
            for item in r.output["items"]
        ]
    ok = [r for r in view.step_results() if r.ok]
    if kind == C.KIND_PERSONA:
        return [r.output["persona"] for r in ok if r.step_id.endswith(".merge")]
    if kind == C.KIND_TWEETS:
        images = {
            r.step_id.removesuffix(".image"): r.output for r in ok if r.step_id.endswith(".image")
        }
        return [
            {**r.output, "image": images.get(r.step_id)}
            for r in ok
            if not r.step_id.endswith(".image")
        ]
    return [
        {"step_id": r.step_id, **(r.output if isinstance(r.output, dict) else {"output": r.output})}
        for r in ok
    ]


def results_text(view: JobView, fmt: str = "json") -> str:
    """JSON lines of what the job made, or one JSON document with every step."""
    if fmt == "jsonl":
        return "\n".join(json.dumps(rec, ensure_ascii=False) for rec in output_records(view))
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
