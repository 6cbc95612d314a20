"""``genfleet demo``: a whole run on one machine, leaving nothing running after it."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from genfleet.connection import sanitize_url, stop_owned_redis, use_redis
from genfleet.errors import GenfleetError
from genfleet.records import JobView
from genfleet.settings import load_settings
from producer.api import submit_chapter
from producer.control import cancel
from producer.processes import ChildProcess, start_worker
from producer.views import results_text, speedup_text

DEMO_OUTLINE = (
    "A young cartographer wakes in a mountain village where every map she draws comes true. "
    "In this chapter she draws a bridge over the gorge to reach her missing brother, and the "
    "villagers argue about what else she should draw."
)


INTERRUPTED_STOP_S = 3.0  # after Ctrl-C: the worker's grace before SIGKILL


def _exit_on_sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(versions: int = 3, latency_ms: int = 1500) -> JobView:
    """Run a chapter job of ``versions`` versions end to end and print a summary.

    Ctrl-C (or SIGTERM) cancels the job, so it ends ``cancelled`` instead of staying
    ``running``, and stops the worker at once (its calls' answers are not wanted any
    more); a second Ctrl-C cannot cut that short, so nothing is left running.
    """
    console = Console(stderr=True)
    settings = load_settings()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with contextlib.ExitStack() as stack:
        stack.callback(stop_owned_redis)
        url = use_redis(settings)
        console.print(f"Redis: {sanitize_url(url)}" + ("" if settings.redis_url else " (embedded)"))
        env = dict(os.environ)
        if not settings.openai_base_url:
            from simulator.process import SimulatorProcess

            sim = stack.enter_context(
                SimulatorProcess(latency_ms=latency_ms, jitter_ms=latency_ms / 10)
            )
            env["OPENAI_BASE_URL"] = os.environ["OPENAI_BASE_URL"] = sim.base_url
            env.setdefault("OPENAI_API_KEY", "demo-key-not-secret")
            console.print(f"LLM provider: built-in simulator at {sim.base_url} (pid {sim.pid})")
        log_path = settings.genfleet_home / "logs" / "demo-worker.log"
        with console.status("starting an LLM worker (celery -A workers worker -Q llm,control)"):
            worker = start_worker(
                ["llm", "control"], concurrency=max(4, versions), pool="threads",
                name=f"demo{os.getpid()}", env=env, log_path=log_path,
            )  # fmt: skip
        stop_worker = stack.enter_context(_Stopper(worker))
        console.print(f"LLM worker: pid {worker.pid}, log {log_path}")
        handle = submit_chapter("demo-novel", 1, DEMO_OUTLINE, versions)
        try:  # from here a Ctrl-C cancels the job (one right after this line included)
            console.print(f"submitted job {handle.id}: {versions} chapter versions in parallel")
            view = handle.wait(timeout=300)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cleanup below must finish
            _cancel(console, handle.id)
            console.print("interrupted: stopping the worker, the simulator and Redis")
            stop_worker.grace_s = INTERRUPTED_STOP_S
            raise
        out = _write_results(settings.genfleet_home, view)
        _print_summary(console, view, out)
    return view


class _Stopper(contextlib.AbstractContextManager["_Stopper"]):
    """Stops the demo's worker by PID: a warm shutdown normally, a short one after
    Ctrl-C (then SIGKILL)."""

    def __init__(self, worker: ChildProcess) -> None:
        self.worker = worker
        self.grace_s = 20.0

    def __exit__(self, *exc: object) -> None:
        self.worker.stop(timeout=self.grace_s)


def _cancel(console: Console, job_id: str) -> None:
    try:
        revoked = cancel(job_id)
    except GenfleetError as e:  # it ended meanwhile
        console.print(f"job {job_id}: {e}")
        return
    console.print(f"job {job_id} cancelled ({revoked} steps not started were revoked)")


def _write_results(home: Path, view: JobView) -> Path:
    out = home / "outputs" / view.id / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(results_text(view) + "\n", encoding="utf-8")
    return out


def _print_summary(console: Console, view: JobView, out: Path) -> None:
    m = view.metrics
    table = Table(title=f"chapter job {view.id}: {view.status}")
    for column in ("versions ok", "failed", "wall time", "serial-equivalent", "speed-up"):
        table.add_column(column, justify="right")
    if m is not None:
        table.add_row(
            str(m.steps_ok), str(m.steps_failed), f"{m.elapsed_s:.2f}s",
            f"{m.serial_equivalent_s:.2f}s", speedup_text(view, m),
        )  # fmt: skip
    Console(file=sys.stdout).print(table)
    console.print(f"results: {out}")
    console.print(
        f"also in Redis (key genfleet:job:{view.id}, kept RESULT_TTL_S); "
        f"read them again with: genfleet results {view.id}"
    )
