"""Operations tooling on real workers: ``genfleet stats``, the exporter, Flower."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from genfleet import constants as C
from genfleet.records import JobView
from producer import submit_chapter
from simulator.process import SimulatorProcess
from tests.conftest import Workers, child_pids, free_port, genfleet_cmd

OUTLINE = "A lighthouse keeper trades letters with a passing ship."
API_KEY = "test-key-0001"  # the env fixture's OPENAI_API_KEY
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _run_job_with_429s(sim: SimulatorProcess, workers: Workers) -> JobView:
    # The simulator's errors are drawn from a seeded PRNG: with seed 0 the 4th call is a 429.
    sim.configure(latency_ms=20, retry_after_s=0.1, error_rates={"429": 0.3})
    workers.start(concurrency=4, LLM_MAX_RETRIES=5)
    handle = submit_chapter("ops", 1, OUTLINE, versions=6)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == "succeeded"
    assert sim.stats()["by_status"].get("429", 0) > 0
    return view


@contextlib.contextmanager
def _genfleet(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``genfleet`` subprocess, stopped by PID (SIGTERM, then SIGKILL) at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(genfleet_cmd(*args), env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _get(url: str, auth: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        with contextlib.suppress(OSError):
            _get(url, timeout=2)
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} not answering after {timeout}s: {log.read_text(errors='replace')}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_stats_json_shows_workers_keys_and_429s(sim, workers: Workers, env) -> None:
    _run_job_with_429s(sim, workers)
    done = subprocess.run(
        genfleet_cmd("stats", "--json"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert API_KEY not in done.stdout + done.stderr
    stats = json.loads(done.stdout)
    assert [w.split("@")[0] for w in stats["workers"]["llm"]] == ["w1"]
    assert stats["queues"]["llm"] == 0
    assert stats["jobs"] == {"succeeded": 1}
    (key,) = stats["keys"]
    seen = sim.stats()["by_status"]
    assert key["key_id"] == "key1"
    assert key["counters"]["calls"] == sum(seen.values()) > 0
    assert key["rate_limited_ratio"] == seen["429"] / sum(seen.values()) > 0
    (scope,) = key["models"]
    assert scope["model"] == "gpt-4o-mini"
    assert 1 <= scope["effective_concurrency"] <= scope["max_concurrent"]
    assert scope["rate_limited_total"] == seen["429"]
    plain = subprocess.run(
        genfleet_cmd("stats"), env=env, capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 0 and "key1" in plain.stdout and "\x1b[" not in plain.stdout


def _scrape(port: int) -> dict[str, float]:
    status, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert API_KEY not in text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_exporter_matches_the_simulators_counts(sim, workers: Workers, env, tmp_path) -> None:
    view = _run_job_with_429s(sim, workers)
    port = free_port()
    log = tmp_path / "metrics.log"
    with _genfleet(env, log, "metrics", "--port", str(port)) as proc:
        _wait_http(f"http://127.0.0.1:{port}/metrics", proc, log)
        m = _scrape(port)
    assert proc.returncode is not None  # stopped by PID
    seen = sim.stats()["by_status"]
    assert m["genfleet_redis_up{}"] == 1
    assert m["genfleet_llm_rate_limited_total{key_id=key1}"] == seen["429"]
    assert m["genfleet_llm_calls_total{key_id=key1,outcome=ok}"] == seen["200"]
    assert m["genfleet_llm_calls_total{key_id=key1,outcome=retried}"] == seen["429"]
    assert m["genfleet_llm_calls_total{key_id=key1,outcome=failed}"] == 0  # none given up on
    assert m["genfleet_llm_retries_total{key_id=key1}"] == seen["429"]
    # The exporter and `genfleet stats --json` read the same counters the same way.
    done = subprocess.run(
        genfleet_cmd("stats", "--json"), env=env, capture_output=True, text=True, timeout=60
    )
    (key,) = json.loads(done.stdout)["keys"]
    assert [key["counters"][n] for n in ("ok", "retries", "failed")] == [
        m[f"genfleet_llm_calls_total{{key_id=key1,outcome={o}}}"]
        for o in ("ok", "retried", "failed")
    ]
    assert view.metrics is not None
    assert m["genfleet_llm_tokens_total{direction=out,key_id=key1}"] == view.metrics.tokens_out
    assert m["genfleet_jobs{status=succeeded}"] == 1
    assert m["genfleet_workers_online{queue=llm}"] == 1
    assert m["genfleet_queue_depth{queue=llm}"] == 0
    assert m["genfleet_key_effective_concurrency{key_id=key1,model=gpt-4o-mini}"] >= 1
    assert "genfleet_key_cooldown_seconds{key_id=key1,model=gpt-4o-mini}" in m


def test_exporter_on_a_port_in_use_says_so_in_one_line(env) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            genfleet_cmd("metrics", "--port", str(port)),
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"genfleet: port {port} is in use on 127.0.0.1 (an exporter already running, or "
        "another program): stop it or choose another --port"
    ]


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_flower_with_basic_auth_shows_tasks_without_the_key(
    sim, workers: Workers, env, tmp_path
) -> None:
    workers.start(concurrency=2)
    port, auth = free_port(), "ops:s3cret"
    root, log = f"http://127.0.0.1:{port}", tmp_path / "flower.log"
    with _genfleet({**env, "FLOWER_BASIC_AUTH": auth}, log, "flower", "--port", str(port)) as proc:
        _wait_http(root + "/healthcheck", proc, log)
        assert _get(root + "/", auth)[0] == 200
        assert _get(root + "/")[0] == 401
        assert _get(root + "/metrics", auth)[0] == 200
        assert auth not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        (flower_pid,) = child_pids(proc.pid)
        assert auth not in Path(f"/proc/{flower_pid}/cmdline").read_text()
        sim.configure(fail_patterns={"version 2 of 3": 400})
        handle = submit_chapter("flower", 1, OUTLINE, versions=3)
        assert handle.wait(timeout=60, progress=False).status == "partial"
        tasks = _version_tasks(root, auth, handle.id, ["v1", "v2", "v3"])
        status, page = _get(f"{root}/task/{tasks['v1']['uuid']}", auth)
        failed = json.loads(_get(root + "/api/tasks?state=FAILURE", auth)[1])
        metrics = _get(root + "/metrics", auth)[1]
    assert proc.returncode is not None
    assert not _alive(flower_pid)
    assert status == 200 and handle.id in page and "v1" in page and API_KEY not in page
    assert API_KEY not in json.dumps(tasks)
    # The failed version is FAILURE in Flower (with its error); its siblings SUCCESS.
    assert {s: t["state"] for s, t in tasks.items()} == {
        "v1": "SUCCESS", "v2": "FAILURE", "v3": "SUCCESS"
    }  # fmt: skip
    assert "400" in tasks["v2"]["exception"]
    assert list(failed) == [tasks["v2"]["uuid"]]
    assert _flower_count(metrics, "task-failed") == 1
    assert _flower_count(metrics, "task-succeeded") == 2


def _flower_count(metrics: str, event: str) -> float:
    """Flower's own counter of ``event`` for chapter versions, summed over workers."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "flower_events_total"
        and sample.labels.get("type") == event
        and sample.labels.get("task") == "genfleet.llm.chapter_version"
    )


def _version_tasks(
    root: str, auth: str, job_id: str, steps: list[str], timeout: float = 20
) -> dict[str, dict]:
    """Step id -> Flower's chapter_version task of that step, once every step has
    ended (events arrive later)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = _get(root + "/api/tasks", auth)
        assert status == 200, body
        found = {
            step: task
            for task in json.loads(body).values()
            for step in steps
            if task.get("name") == "genfleet.llm.chapter_version"
            and f"('{job_id}', '{step}'," in str(task.get("args"))
            and task.get("state") in ("SUCCESS", "FAILURE")
        }
        if len(found) == len(steps) or time.monotonic() > deadline:
            assert sorted(found) == steps, body
            return found
        time.sleep(0.5)


def test_flower_on_a_port_in_use_says_so_before_starting(env) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            genfleet_cmd("flower", "--port", str(port)),
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"genfleet: port {port} is in use on 127.0.0.1 (Flower already running, or "
        "another program): stop it or choose another --port"
    ]


def test_stats_reads_the_models_recorded_for_a_key(env, r) -> None:
    r.sadd(C.KEY_MODELS.format(key_id="key1"), "gpt-other")  # as the gateway records it
    done = subprocess.run(
        genfleet_cmd("stats", "--json"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (key,) = json.loads(done.stdout)["keys"]
    assert [m["model"] for m in key["models"]] == ["gpt-4o-mini", "gpt-other"]
    assert all(m["effective_concurrency"] == m["max_concurrent"] for m in key["models"])


def test_stats_table_shows_a_keys_counters_once(env, r) -> None:
    r.sadd(C.KEY_MODELS.format(key_id="key1"), "gpt-other")
    r.hset(C.KEY_STATS_KEY.format(key_id="key1"), mapping={"calls": 777, "ok": 555})
    done = subprocess.run(genfleet_cmd("stats"), env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "gpt-" in line]
    assert len(rows) == 2, done.stdout
    assert "777" in rows[0] and "555" in rows[0]
    assert "777" not in rows[1] and "555" not in rows[1]
