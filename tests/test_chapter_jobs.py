"""Chapter versions end to end: real Celery workers, real Redis, the simulator over HTTP."""

from __future__ import annotations

import json
import subprocess

import pytest

from genfleet import constants as C
from producer import get_job, submit_chapter
from tests.conftest import ROOT, Workers, genfleet_cmd

OUTLINE_FILE = ROOT / "examples" / "outline.txt"
OUTLINE = "The heroine crosses the bridge she drew and finds the village empty."


def _overlapping(results: list[dict]) -> bool:
    """True if every version started before any version finished."""
    return max(r["started_at"] for r in results) < min(r["finished_at"] for r in results)


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_parallel_versions_run_at_once(sim, workers: Workers) -> None:
    sim.configure(latency_ms=800)
    workers.start(concurrency=4)
    handle = submit_chapter("p1", 1, OUTLINE, versions=3)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_SUCCEEDED
    results = handle.results()
    assert [r["output"]["version"] for r in results] == [1, 2, 3]
    assert len({r["output"]["content"] for r in results}) == 3  # distinct versions
    assert _overlapping(results)
    assert sim.stats()["max_in_flight"] == 3
    assert view.metrics is not None and view.metrics.steps_ok == 3
    # The metric's definition (speed is measured in bench/, not asserted here):
    serial = sum(r["finished_at"] - r["started_at"] for r in results)
    assert view.metrics.serial_equivalent_s == pytest.approx(serial, abs=0.01)


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_serial_mode_runs_one_at_a_time(sim, workers: Workers, monkeypatch) -> None:
    monkeypatch.setenv("WRITER_PARALLEL_GENERATION", "false")
    workers.start(concurrency=4)
    handle = submit_chapter("p1", 2, OUTLINE, versions=3)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_SUCCEEDED
    assert view.record.mode == "serial"
    results = handle.results()
    for earlier, later in zip(results, results[1:], strict=False):
        assert earlier["finished_at"] <= later["started_at"]
    assert sim.stats()["max_in_flight"] == 1


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_job_cap_on_versions_in_flight(sim, workers: Workers, monkeypatch) -> None:
    monkeypatch.setenv("WRITER_MAX_PARALLEL_REQUESTS", "2")
    sim.configure(latency_ms=400)
    workers.start(concurrency=8)
    handle = submit_chapter("p1", 3, OUTLINE, versions=5)
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["max_in_flight"] == 2
    assert len(handle.results()) == 5


def test_one_failed_version_makes_the_job_partial(sim, workers: Workers) -> None:
    sim.configure(fail_patterns={"version 2 of 3": 400})
    workers.start()
    handle = submit_chapter("p1", 4, OUTLINE, versions=3)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_PARTIAL
    by_step = {r["step_id"]: r for r in handle.results()}
    assert by_step["v1"]["ok"] and by_step["v3"]["ok"]
    assert not by_step["v2"]["ok"]
    assert "400" in by_step["v2"]["error"]
    assert by_step["v2"]["attempts"] == 1  # a 400 is permanent: no retry
    assert view.error and "1 of 3 steps failed" in view.error


def test_every_version_failed_says_what_to_check(sim, workers: Workers, monkeypatch) -> None:
    workers.start(OPENAI_API_KEY="not-a-valid-key")
    sim.configure(valid_keys=["test-key-0001"])
    handle = submit_chapter("p1", 5, OUTLINE, versions=2)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_FAILED
    assert view.error and "all 2 steps failed" in view.error and "OPENAI_API_KEY" in view.error
    assert "not-a-valid-key" not in json.dumps(handle.results())


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_results_readable_after_the_worker_is_gone(sim, workers: Workers, env) -> None:
    worker = workers.start()
    handle = submit_chapter("p1", 6, OUTLINE, versions=2)
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    worker.stop()
    out = subprocess.run(
        genfleet_cmd("results", handle.id), env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "succeeded" and len(doc["steps"]) == 2
    assert get_job(handle.id).status() == "succeeded"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("status", "no-such-job"), "no job 'no-such-job'"),
        (("status", "bad id!"), "malformed"),
        (
            (
                "submit",
                "chapter",
                "--project",
                "p",
                "--chapter",
                "1",
                "--versions",
                "11",
                "--outline-file",
                str(OUTLINE_FILE),
            ),
            "11",
        ),
        (("submit", "chapter", "--project", "p", "--chapter", "1"), "--outline-file"),
        (
            ("submit", "chapter", "--project", "p", "--chapter", "1", "--outline-file", "/nope"),
            "/nope",
        ),
    ],
)
def test_bad_input_is_one_line_and_nothing_enqueued(env, r, args, needle) -> None:
    out = subprocess.run(genfleet_cmd(*args), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert r.llen("llm") == 0 and r.zcard(C.KEY_JOB_INDEX) == 0


def test_unreachable_redis_is_one_line(env) -> None:
    env = {**env, "REDIS_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run(
        genfleet_cmd("status", "chapter-x"), env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "genfleet: cannot reach Redis at redis://127.0.0.1:1/0: ConnectionError"
    ]
