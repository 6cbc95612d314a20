"""Job progress and control from the command line: status, watch, jobs, cancel."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from genfleet import constants as C
from producer import get_job, submit_chapter, submit_tweets
from tests.conftest import Workers, genfleet_cmd, wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(genfleet_cmd(*args), env=env, capture_output=True, text=True, timeout=90)


def _wait_running(handle, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while handle.view().running.__len__() < count:
        assert time.monotonic() < deadline, "steps did not start"
        time.sleep(0.05)


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_cancel_revokes_what_has_not_started(sim, workers: Workers, env, r) -> None:
    sim.configure(latency_ms=6000)  # the status command must see them still running
    workers.start(concurrency=2)
    handle = submit_tweets(EXAMPLES / "personas" / "mika.json",
                           EXAMPLES / "calendars" / "mika.json", count=8)  # fmt: skip
    _wait_running(handle, 2)
    status = _run(env, "status", handle.id)
    assert status.returncode == 0 and status.stdout.count("running for") == 2
    assert "6 waiting of 8" in status.stdout
    out = _run(env, "cancel", handle.id)
    assert out.returncode == 0, out.stderr
    assert "6 step(s) not started were revoked" in out.stdout
    deadline = time.monotonic() + 30
    while len(handle.view().ok) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # The worker has taken (and dropped) the revoked messages: nothing queued or unacked.
    wait_for(lambda: r.llen("llm") == 0 and r.hlen("unacked") == 0, 30, "revoked dropped")
    view = handle.view()
    assert view.status == C.STATUS_CANCELLED  # the running steps' results did not revive it
    assert len(view.ok) == 2 and not view.running
    assert sim.stats()["by_status"] == {"200": 2}  # nothing after the cancel reached the model
    again = _run(env, "cancel", handle.id)
    assert again.returncode != 0
    assert (
        again.stderr.strip()
        == f"genfleet: job {handle.id} has already ended (cancelled): nothing to cancel"
    )


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_watch_prints_plain_lines_when_not_a_terminal(sim, workers: Workers, env) -> None:
    sim.configure(latency_ms=600)
    workers.start(concurrency=4)
    handle = submit_chapter("watch", 1, "An outline.", versions=3)
    out = _run(env, "watch", handle.id)
    assert out.returncode == 0, out.stderr
    progress = out.stderr.splitlines()
    assert progress[0].startswith(f"job {handle.id} ")
    assert progress[-1].startswith(f"job {handle.id} succeeded: 3 ok")
    assert "\x1b[" not in out.stderr  # no terminal control codes
    assert "steps/s" in out.stdout and "LLM calls 3" in out.stdout


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_jobs_lists_recent_jobs_and_kinds_are_checked(sim, workers: Workers, env) -> None:
    workers.start(concurrency=4)
    chapter = submit_chapter("jobs", 1, "An outline.", versions=2)
    assert chapter.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    out = _run(env, "jobs")
    assert out.returncode == 0
    line = next(row for row in out.stdout.splitlines() if row.startswith(chapter.id))
    assert line.split()[1:6] == ["chapter", "succeeded", "2", "0", "2"]
    wrong = _run(env, "submit", "tweets", "--persona-job", chapter.id,
                 "--calendar", str(EXAMPLES / "calendars" / "mika.json"))  # fmt: skip
    assert wrong.returncode != 0
    assert wrong.stderr.strip() == (
        f"genfleet: job {chapter.id} is a chapter job, not a persona job"
    )
    assert get_job(chapter.id).status() == C.STATUS_SUCCEEDED
