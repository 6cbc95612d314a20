"""The README's first command: `genfleet demo` on a machine with no Redis configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ours(home: Path) -> list[str]:
    """Processes whose command line mentions this test's home (redis --dir, workers' logs)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(home) in text or env.get("GENFLEET_HOME") == str(home):
            found.append(text)
    return found


def test_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "OPENAI_", "LLM_", "WRITER_", "GENFLEET_"))}  # fmt: skip
    env.update({"GENFLEET_HOME": str(home), "PYTHONPATH": str(ROOT)})
    out = subprocess.run(
        [sys.executable, "-m", "producer.cli", "demo", "--latency-ms", "500"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(embedded)" in out.stderr and "built-in simulator" in out.stderr
    assert "succeeded" in out.stdout and "speed-up" in out.stdout
    results = list((home / "outputs").glob("*/results.json"))
    assert len(results) == 1 and '"status": "succeeded"' in results[0].read_text()
    aof = [p.name for p in (home / "redis").iterdir() if p.name.startswith("appendonly")]
    assert aof  # the append-only file: results survive a restart of Redis
    assert _ours(home) == []  # Redis, simulator and worker were all stopped


def _ctrl_c_as_on_a_terminal() -> None:
    """A command started in the background by a shell (``.ci/run &``) inherits SIGINT
    ignored; the demo's user presses Ctrl-C at a terminal, where it is not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a long fault or load test: `pytest -m slow`
def test_ctrl_c_twice_cancels_the_job_and_stops_everything(env, r, home: Path) -> None:
    demo_env = {k: v for k, v in env.items() if not k.startswith("OPENAI_")}  # its simulator
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "demo", "--latency-ms", "20000"],
        env=demo_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ctrl_c_as_on_a_terminal,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("submitted job "):
            break
    job_id = seen[-1].split()[2].rstrip(":")
    assert r.hget(f"genfleet:job:{job_id}", "status") in ("queued", "running")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # a second Ctrl-C must not leave the worker behind
    rest = proc.stderr.read()
    assert proc.wait(timeout=90) == 130, rest
    assert f"job {job_id} cancelled" in rest
    assert r.hget(f"genfleet:job:{job_id}", "status") == "cancelled"
    assert _ours(home) == []  # worker and simulator stopped
