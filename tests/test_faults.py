"""Faults survived: killed workers, a Redis restart, a misbehaving provider, many steps.

These are the slower tests (marked ``slow``); .ci/run runs them too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from genfleet import constants as C
from genfleet.embedded import find_redis_server
from producer.client import forget_default
from producer.pipelines import submit_tweets
from simulator.textgen import prompt_hash
from tests.conftest import Workers, free_port
from workers.tweets import Tweet, tweet_messages

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PERSONA = json.loads((EXAMPLES / "personas" / "mika.json").read_text())
FAST_REDELIVERY = {"BROKER_VISIBILITY_TIMEOUT_S": "5", "LLM_TIMEOUT_S": "5"}


def calendar(days: int) -> dict:
    start = 738_000  # an ordinal date in 2021
    return {"calendar": {dt.date.fromordinal(start + n).isoformat(): {"theme": f"day {n}"}
                         for n in range(days)}}  # fmt: skip


def tweet_prompt_hash(date: str, plan: dict) -> str:
    """The simulator's key for the first request of a tweet step (messages only)."""
    return prompt_hash(tweet_messages(PERSONA, date, plan))


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _calls_per_step(sim, cal: dict, counter: str = "chat_by_prompt") -> dict[str, int]:
    by_prompt = sim.stats()[counter]
    return {date: by_prompt.get(tweet_prompt_hash(date, plan), 0)
            for date, plan in cal["calendar"].items()}  # fmt: skip


def _check_exactly_once(handle, sim, cal: dict, done_before: set[str]) -> None:
    view = handle.wait(timeout=120, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == len(cal["calendar"]) and not view.failed
    calls = _calls_per_step(sim, cal)
    for step in done_before:  # finished before the kill: never called again
        assert calls[step.split(".", 1)[1]] == 1, step
    assert all(n >= 1 for n in calls.values())
    for result in view.ok.values():
        Tweet.model_validate({k: result.output[k] for k in ("text", "hashtags", "image_prompt")})


def test_whole_worker_killed_mid_job(sim, workers: Workers) -> None:
    sim.configure(latency_ms=1500)
    cal = calendar(6)
    first = workers.start("a", concurrency=2, **FAST_REDELIVERY)
    handle = submit_tweets(PERSONA, cal, count=6)
    wait_for(lambda: len(handle.view().ok) >= 2 and len(handle.view().running) == 2, 30,
             "two steps done and two running")  # fmt: skip
    done_before = set(handle.view().ok)
    first.signal(signal.SIGKILL)
    first.proc.wait()  # type: ignore[union-attr]
    workers.start("b", concurrency=4, **FAST_REDELIVERY)
    _check_exactly_once(handle, sim, cal, done_before)


def test_pool_child_killed_mid_job(sim, workers: Workers) -> None:
    sim.configure(latency_ms=1500)
    cal = calendar(6)
    worker = workers.start("p", concurrency=2, pool="prefork", **FAST_REDELIVERY)
    handle = submit_tweets(PERSONA, cal, count=6)
    wait_for(lambda: len(handle.view().ok) >= 2 and len(handle.view().running) == 2, 30,
             "two steps done and two running")  # fmt: skip
    done_before = set(handle.view().ok)
    children = psutil.Process(worker.pid).children()
    assert len(children) == 2
    os.kill(children[0].pid, signal.SIGKILL)  # only one pool process dies
    _check_exactly_once(handle, sim, cal, done_before)
    assert worker.proc is not None and worker.proc.poll() is None  # the worker lives on


def test_a_killed_workers_message_is_restored_once_from_its_one_hash_entry(
    sim, workers: Workers, r: redis.Redis
) -> None:
    sim.configure(latency_ms=3000)
    cal = calendar(1)
    doomed = workers.start("doomed", concurrency=1, **FAST_REDELIVERY)
    handle = submit_tweets(PERSONA, cal, count=1)
    wait_for(lambda: sim.stats()["in_flight"] == 1, 30, "the step's call in flight")
    # The delivery is one entry of the unacked hash, dated inside; no unacked_index.
    (record,) = r.hvals("unacked")
    _message, _exchange, routing_key, delivered_at = json.loads(record)
    assert routing_key == C.QUEUE_LLM and isinstance(delivered_at, float)
    assert not r.exists("unacked_index")
    doomed.signal(signal.SIGKILL)
    doomed.proc.wait()  # type: ignore[union-attr]
    workers.start("b", concurrency=2, **FAST_REDELIVERY)  # two sweeps race for the record
    workers.start("c", concurrency=2, **FAST_REDELIVERY)
    view = handle.wait(timeout=120, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    # The call the kill cut short, and one from the restored message: never a third.
    calls = _calls_per_step(sim, cal, "chat_calls_by_prompt")
    assert calls == dict.fromkeys(cal["calendar"], 2)
    wait_for(lambda: r.hlen("unacked") == 0, 10, "the last ack")  # finalize's, after the job's
    assert not r.exists("unacked_index")


def test_messages_an_older_worker_held_are_restored(sim, workers: Workers, r: redis.Redis) -> None:
    cal = calendar(2)
    handle = submit_tweets(PERSONA, cal, count=2)  # no worker yet: both steps wait queued
    wait_for(lambda: r.llen(C.QUEUE_LLM) == 2, 30, "two queued steps")
    tags = []
    for _ in range(2):  # popped and recorded as an older worker (or kombu itself) did
        envelope = json.loads(r.rpop(C.QUEUE_LLM))  # type: ignore[arg-type]
        info = envelope["properties"]["delivery_info"]
        tags.append(envelope["properties"]["delivery_tag"])
        r.hset("unacked", tags[-1], json.dumps([envelope, info["exchange"], info["routing_key"]]))
    # The first is dated in the index, a minute ago: overdue. The second is not in it:
    # as the old sweep did, it waits while the index exists, then counts as old.
    r.zadd("unacked_index", {tags[0]: time.time() - 60})
    workers.start("new", concurrency=2, **FAST_REDELIVERY)
    view = handle.wait(timeout=120, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert _calls_per_step(sim, cal) == dict.fromkeys(cal["calendar"], 1)
    wait_for(lambda: r.hlen("unacked") == 0, 10, "the last ack")  # finalize's, after the job's
    assert not r.exists("unacked_index")


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A Redis of this test's own (append-only), which the test may stop and restart."""
    port = free_port()
    args = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir",
            str(tmp_path), "--appendonly", "yes", "--save", ""]  # fmt: skip
    state = {"url": f"redis://127.0.0.1:{port}/0", "args": args}

    def start() -> None:
        state["proc"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=port)
        wait_for(lambda: _pings(client), 10, "redis to start")

    state["start"] = start
    start()
    monkeypatch.setenv("REDIS_URL", state["url"])
    forget_default()
    try:
        yield state
    finally:
        proc = state["proc"]
        proc.terminate()
        proc.wait(timeout=10)
        forget_default()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_restarted_mid_job(sim, workers: Workers, own_redis: dict) -> None:
    sim.configure(latency_ms=800)
    cal = calendar(8)
    workers.start("r", concurrency=2, REDIS_URL=own_redis["url"], **FAST_REDELIVERY)
    handle = submit_tweets(PERSONA, cal, count=8)
    wait_for(lambda: len(handle.view().ok) >= 2, 30, "two steps done")
    queued_before = handle.view()
    assert len(queued_before.ok) < 8  # work was still queued when Redis went down
    own_redis["proc"].terminate()  # a clean stop: the append-only file is flushed
    own_redis["proc"].wait(timeout=10)
    time.sleep(3)  # calls finish meanwhile and wait to store their results
    own_redis["start"]()
    view = handle.wait(timeout=120, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == 8 and not view.failed
    assert sum(_calls_per_step(sim, cal).values()) <= 8 + 2  # at most the two in flight again


def test_misbehaving_provider(sim, workers: Workers) -> None:
    sim.configure(
        latency_ms=20, retry_after_s=0.05, timeout_s=3,
        error_rates={"429": 0.2, "503": 0.1, "timeout": 0.02},
    )  # fmt: skip
    # LLM_TIMEOUT_S is a deadline for the whole call: short of the simulator's 3 s
    # timeouts, and wide enough that no 20 ms answer on a busy machine is abandoned (the
    # provider would count an abandoned answer as a second 200).
    env = {"LLM_MAX_RETRIES": "5", "LLM_TIMEOUT_S": "2"}
    workers.start("m1", concurrency=8, **env)
    workers.start("m2", concurrency=8, **env)
    handle = submit_tweets([PERSONA] * 5, calendar(100), count=100)
    view = handle.wait(timeout=600, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == 500
    attempts = sum(r.attempts for r in view.ok.values())
    seen = sim.stats()["by_status"]
    assert seen["200"] == 500 and seen.get("429", 0) > 0 and seen.get("503", 0) > 0
    assert attempts / 500 < 1.6
    llm = view.metrics.extra["llm"] if view.metrics else {}
    assert llm["calls"] == attempts and llm["ok"] == 500


def test_ten_thousand_steps_at_once(sim, workers: Workers, r) -> None:
    sim.configure(latency_ms=0)
    for n in range(2):
        workers.start(f"big{n}", concurrency=8)
    started = time.perf_counter()
    handle = submit_tweets([PERSONA] * 100, calendar(100), count=100)
    enqueue_s = time.perf_counter() - started
    view = handle.wait(timeout=900, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == 10_000 and not view.failed
    assert sim.stats()["by_status"] == {"200": 10_000}
    assert r.llen("llm") == 0
    print(
        f"\n10,000 steps: enqueued in {enqueue_s:.1f}s, "
        f"done in {time.perf_counter() - started:.1f}s"
    )
