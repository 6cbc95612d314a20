"""Pipelines on real workers: persona graph, tweets, batch items, exactly-once, resume."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from genfleet import constants as C
from producer.inputs import read_persona
from producer.pipelines import resume, submit_batch, submit_persona, submit_tweets
from tests.conftest import Workers, genfleet_cmd

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FACE = EXAMPLES / "face.png"
PERSONA = EXAMPLES / "personas" / "mika.json"
CALENDAR = EXAMPLES / "calendars" / "mika.json"
BRANCHES = ("strategy", "social", "authenticity", "visual", "book")


def _by_step(handle) -> dict:
    return {r["step_id"]: r for r in handle.results()}


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_persona_runs_as_its_dependency_graph(sim, workers: Workers, home: Path) -> None:
    sim.configure(latency_ms=400)
    workers.start(concurrency=8)
    handle = submit_persona(FACE)
    view = handle.wait(timeout=90, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    steps = _by_step(handle)
    assert len(steps) == 8
    core, merge = steps["p1.core"], steps["p1.merge"]
    branches = [steps[f"p1.{b}"] for b in BRANCHES]
    assert all(b["started_at"] >= core["finished_at"] for b in branches)
    assert max(b["started_at"] for b in branches) < min(b["finished_at"] for b in branches)
    assert steps["p1.examples"]["started_at"] >= steps["p1.strategy"]["finished_at"]
    assert merge["started_at"] >= max(s["finished_at"] for s in steps.values() if s is not merge)
    assert len(steps["p1.examples"]["output"]["tweets"]) == 8
    merged = merge["output"]["persona"]
    assert merged["missing_stages"] == [] and merged["core"] == core["output"]
    written = Path(merge["output"]["path"])
    assert written.parent == home / "outputs" / handle.id
    assert read_persona(written)["name"] == merged["name"]  # usable by a tweets job


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_serial_persona_runs_one_stage_at_a_time(sim, workers: Workers) -> None:
    workers.start(concurrency=8)
    handle = submit_persona(FACE, parallel=False)
    assert handle.wait(timeout=90, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["max_in_flight"] == 1


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_invalid_answer_is_reasked_then_kept_raw(sim, workers: Workers) -> None:
    sim.configure(
        garbage_patterns={
            "Describe this persona's social network": "invalid*1",
            "Describe this persona's visual profile": "truncated",
            "List what makes this persona feel like a real person": "empty",
        }
    )
    worker = workers.start(concurrency=8)
    handle = submit_persona(FACE)
    view = handle.wait(timeout=90, progress=False)
    assert view.status == C.STATUS_PARTIAL
    steps = _by_step(handle)
    assert steps["p1.social"]["ok"]  # the re-ask was answered well
    assert steps["p1.social"]["attempts"] == 2
    visual = steps["p1.visual"]
    assert not visual["ok"] and visual["error_type"] == "InvalidOutputError"
    assert visual["attempts"] == 3  # the answer and two re-asks
    assert visual["raw"] and visual["raw"].startswith("{")  # the truncated JSON, kept
    empty = steps["p1.authenticity"]
    assert not empty["ok"] and empty["raw"] is None and "empty" in empty["error"]
    merged = steps["p1.merge"]["output"]["persona"]
    assert merged["missing_stages"] == ["authenticity", "visual"]
    assert worker.proc is not None and worker.proc.poll() is None  # the worker never crashed
    sim.configure(garbage_patterns={})
    assert submit_persona(FACE).wait(timeout=90, progress=False).status == C.STATUS_SUCCEEDED


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_tweets_are_all_in_flight_at_once(sim, workers: Workers) -> None:
    sim.configure(latency_ms=600)
    workers.start(concurrency=10)
    handle = submit_tweets(PERSONA, CALENDAR, count=6)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_SUCCEEDED
    assert sim.stats()["max_in_flight"] == 6
    tweets = [r["output"] for r in handle.results()]
    assert [t["date"] for t in tweets] == [f"2026-03-0{d}" for d in range(1, 7)]
    assert all(0 < len(t["text"]) <= 280 and t["image_prompt"] for t in tweets)


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_tweet_batch_mode_from_the_command_line(sim, workers: Workers, env, tmp_path) -> None:
    workers.start(concurrency=8)
    out = subprocess.run(
        genfleet_cmd(
            "submit", "tweets", "--personas", str(EXAMPLES / "personas" / "*.json"),
            "--calendars", str(EXAMPLES / "calendars" / "*.json"), "--count", "3", "--wait",
        ),
        env={**env, "OPENAI_BASE_URL": sim.base_url}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.splitlines()[0]
    lines = tmp_path / "tweets.jsonl"
    done = subprocess.run(
        genfleet_cmd("results", job_id, "--format", "jsonl", "--out", str(lines)),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(records) == 6
    assert {r["persona"] for r in records} == {"Mika Tanaka", "Ken Ito"}


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_tweet_then_image(sim, workers: Workers) -> None:
    workers.start("llm", concurrency=4)
    workers.start("img", queues=("images", "control"), concurrency=1)
    handle = submit_tweets(PERSONA, CALENDAR, count=2, with_images=True)
    view = handle.wait(timeout=90, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    steps = _by_step(handle)
    for date in ("2026-03-01", "2026-03-02"):
        tweet, image = steps[f"p1.{date}"], steps[f"p1.{date}.image"]
        assert image["output"]["prompt"] == tweet["output"]["image_prompt"]
        assert image["started_at"] >= tweet["finished_at"]
        assert Path(image["output"]["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_batch_items_with_packing_and_reask_for_the_missing(sim, workers: Workers) -> None:
    sim.configure(garbage_patterns={"on the topic 'Campus'": "short*1"})
    workers.start(concurrency=8)
    handle = submit_batch("cloze", "ja", [3, 4], ["Daily life", "Campus"], per_combo=5,
                          batch_size=3, concurrency=4, retries=2)  # fmt: skip
    view = handle.wait(timeout=90, progress=False)
    assert view.status == C.STATUS_SUCCEEDED
    assert len(view.record.step_ids) == 8  # 2 topics x 2 levels x [3, 2] items
    outputs = [r["output"] for r in handle.results()]
    assert sum(len(o["items"]) for o in outputs) == 20
    reasked = [o for o in outputs if o["reasks"]]
    assert len(reasked) == 1 and reasked[0]["calls"] == 2
    items_metrics = view.metrics.extra["items"] if view.metrics else {}
    assert items_metrics["items_delivered"] == 20 and items_metrics["success_rate"] == 1.0
    assert items_metrics["calls"] == 9 == sim.stats()["by_status"]["200"]
    assert items_metrics["tokens_per_item"] > 0


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_batch_concurrency_and_throttle(sim, workers: Workers) -> None:
    sim.configure(latency_ms=300)
    workers.start(concurrency=8)
    handle = submit_batch("vocab", "ja", [1], ["a", "b", "c", "d", "e", "f"], per_combo=1,
                          batch_size=1, concurrency=2, retries=0, throttle_ms=0)  # fmt: skip
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["max_in_flight"] == 2
    sim.reset()
    handle = submit_batch("vocab", "ja", [1], ["a", "b", "c", "d"], per_combo=1,
                          batch_size=1, concurrency=8, retries=0, throttle_ms=400)  # fmt: skip
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    arrivals = sorted(t for t, status, _ in sim.stats()["recent"] if status == "200")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == 4 and min(gaps) >= 0.38


def test_draft_then_review(sim, workers: Workers, monkeypatch) -> None:
    monkeypatch.setenv("LLM_DRAFT_MODEL", "fast-model")
    monkeypatch.setenv("LLM_REVIEW_MODEL", "strong-model")
    workers.start(concurrency=4)
    handle = submit_batch("translation", "en", [2], ["Travel"], per_combo=4, batch_size=2,
                          review=True)  # fmt: skip
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_SUCCEEDED
    steps = _by_step(handle)
    assert set(steps) == {"t1.L2.c1", "t1.L2.c1.review", "t1.L2.c2", "t1.L2.c2.review"}
    assert steps["t1.L2.c1"]["model"] == "fast-model"
    assert steps["t1.L2.c1.review"]["model"] == "strong-model"
    assert steps["t1.L2.c1.review"]["started_at"] >= steps["t1.L2.c1"]["finished_at"]
    assert view.metrics and view.metrics.extra["items"]["items_delivered"] == 4


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_redelivered_step_is_not_called_again(sim, workers: Workers, r) -> None:
    worker = workers.start(concurrency=4)
    handle = submit_tweets(PERSONA, CALENDAR, count=3)
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    before = sim.stats()["by_status"]
    stored = r.hgetall(C.KEY_JOB_OK.format(job_id=handle.id))
    from producer.client import connect

    app = connect().app
    for n, step_id in enumerate(sorted(stored)):  # as if each came back after a lost worker
        app.send_task(C.TASK_TWEET, args=(handle.id, step_id, n))
    # Step tasks store no Celery result (nothing reads one): the worker's log says
    # what each redelivered message did.
    found = f"job {handle.id} step "

    def answered() -> int:
        return worker.log_text().count("result already stored; not calling again")

    deadline = time.monotonic() + 30
    while answered() < len(stored) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answered() == len(stored), worker.log_text()
    assert found in worker.log_text()
    assert sim.stats()["by_status"] == before  # nothing billed twice
    assert r.hgetall(C.KEY_JOB_OK.format(job_id=handle.id)) == stored  # nothing written twice


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_resume_runs_only_the_missing_steps(sim, workers: Workers) -> None:
    sim.configure(fail_patterns={"2026-03-02": 400})
    workers.start(concurrency=4)
    handle = submit_tweets(PERSONA, CALENDAR, count=4)
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_PARTIAL
    sim.configure(fail_patterns={})
    sim.reset()
    _, steps = resume(handle.id)
    assert steps == ["p1.2026-03-02"]
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_SUCCEEDED
    assert sim.stats()["by_status"] == {"200": 1}
    assert len(view.ok) == 4 and not view.failed


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("submit", "persona", "--image", "README.md"), "not a readable PNG, JPEG or WebP"),
        (("submit", "persona", "--images", "/nowhere/*.png"), "matches no file"),
        (("submit", "tweets", "--persona", "examples/calendars/mika.json", "--calendar",
          "examples/calendars/mika.json"), "mika.json: name: Field required"),
        (("submit", "tweets", "--persona", "examples/personas/mika.json", "--calendar",
          "examples/personas/mika.json"), "mika.json: calendar: Field required"),
        (("submit", "batch", "--kind", "poem", "--lang", "ja", "--levels", "3",
          "--topics-file", "examples/topics.txt"), "kind='poem' is unknown"),
        (("submit", "batch", "--kind", "cloze", "--lang", "ja", "--levels", "3",
          "--topics-file", "examples/topics.txt", "--batch-size", "11"), "batch_size"),
        (("submit", "batch", "--kind", "cloze", "--lang", "ja", "--levels", "3",
          "--topics-file", "pyproject.toml", "--throttle-ms", "5000"), "throttle_ms"),
        (("resume", "no-such-job"), "no job 'no-such-job'"),
    ],
)  # fmt: skip
def test_bad_pipeline_input_is_one_line_and_nothing_enqueued(env, r, args, needle) -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        genfleet_cmd(*args), env=env, capture_output=True, text=True, timeout=60, cwd=root
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert r.llen("llm") == 0 and r.zcard(C.KEY_JOB_INDEX) == 0


def test_empty_topics_file_is_refused(env, r, tmp_path) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_text("# nothing here\n\n")
    out = subprocess.run(
        genfleet_cmd("submit", "batch", "--kind", "cloze", "--lang", "ja", "--levels", "3",
                     "--topics-file", str(topics)),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "topic list is empty" in out.stderr
    assert r.zcard(C.KEY_JOB_INDEX) == 0
