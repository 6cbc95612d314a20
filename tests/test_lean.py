"""Celery's own costs are paid only where they buy something: no stored task results,
task events only when asked for, one short log line per step (issue 15)."""

from __future__ import annotations

import threading
import time

import pytest
from celery.events import EventReceiver

from bench.harness import CommandCounter
from genfleet import constants as C
from producer import submit_chapter
from producer.client import connect
from tests.conftest import Workers

OUTLINE = "The heroine crosses the bridge she drew and finds the village empty."


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_a_job_stores_no_celery_results_and_logs_one_line_per_step(
    sim, workers: Workers, r
) -> None:
    worker = workers.start(concurrency=3)
    handle = submit_chapter("lean", 1, OUTLINE, versions=3)
    view = handle.wait(timeout=60, progress=False)
    # The chord still fires finalize: the job ends with every step stored.
    assert view.status == C.STATUS_SUCCEEDED and len(view.ok) == 3
    assert sim.stats()["requests"] == 3
    assert list(r.scan_iter("celery-task-meta-*")) == []
    log = worker.log_text()
    for step in ("v1", "v2", "v3"):
        assert log.count(f"job {handle.id} step {step}: ok in ") == 1, log
    assert " received" not in log and "succeeded in" not in log
    assert "HTTP Request" not in log  # the SDK's httpx line per request is at DEBUG too


class _Monitor:
    """Collects the task event types the cluster publishes (as Flower would)."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.seen: list[str] = []
        self.receiver: EventReceiver | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = EventReceiver(
                conn, handlers={"*": lambda e: self.seen.append(e["type"])}, app=self.app
            )
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> _Monitor:
        self.thread.start()
        self.ready.wait(10)
        time.sleep(0.5)  # the receiver's queue is bound
        return self

    def __exit__(self, *exc: object) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(5)

    def task_events(self) -> list[str]:
        return [t for t in self.seen if t.startswith("task-")]


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_task_events_are_off_until_a_monitor_turns_them_on(sim, workers: Workers) -> None:
    workers.start(concurrency=2)
    app = connect().app
    with _Monitor(app) as monitor:
        handle = submit_chapter("quiet", 1, OUTLINE, versions=2)
        assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
        time.sleep(1.0)
        assert monitor.task_events() == []
        app.control.enable_events()  # what genfleet flower (and Flower itself) sends
        time.sleep(1.0)
        handle = submit_chapter("loud", 1, OUTLINE, versions=2)
        assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
        deadline = time.monotonic() + 10
        while monitor.task_events().count("task-succeeded") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    # two versions and finalize
    assert monitor.task_events().count("task-succeeded") == 3, monitor.task_events()


def test_a_step_sends_few_redis_commands_and_its_job_ends_without_a_chord(
    sim, workers: Workers, r, redis_url: str
) -> None:
    from pathlib import Path

    from producer import submit_tweets

    examples = Path(__file__).resolve().parent.parent / "examples"
    workers.start(concurrency=4)
    time.sleep(1.0)  # the worker's own start-up commands are not the steps'
    with CommandCounter(redis_url) as seen:
        handle = submit_tweets(examples / "personas/mika.json",
                               examples / "calendars/mika.json", count=10)  # fmt: skip
        view = handle.wait(timeout=60, progress=False)
        time.sleep(0.5)
    assert view.status == C.STATUS_SUCCEEDED and len(view.ok) == 10
    assert sim.stats()["requests"] == 10  # counted at the provider
    # Everything the job cost, the producer's enqueue and its status polls included.
    assert len(seen.sent) / 10 <= 25, "\n".join(seen.sent)
    # Redis' clock is read by each process once in 10 s (genfleet.clock), not by each
    # script call (a worker, its pool processes and the producer: a few at most).
    clock_reads = [c for c in seen.sent + seen.scripted if c.split()[0].upper() == "TIME"]
    assert len(clock_reads) <= 2, clock_reads
    # A first ask has nothing in the cache to read, and its answer, stored as the step's
    # result in the same command, needs no entry there: a second delivery finds the result.
    assert not [c for c in seen.sent if c.startswith("GET genfleet:cache:")]
    assert list(r.scan_iter("genfleet:cache:*")) == []
    # Side by side steps end without a Celery chord: no chord counters in Redis, and the
    # step stored last sent finalize, once.
    assert list(r.scan_iter("celery-taskset-meta-*")) == []
    finalize = [c for c in seen.sent if c.startswith("LPUSH") and "finalize_job" in c]
    assert len(finalize) == 1, finalize
    # The broker's bookkeeping: a delivered message is one HSET, its ack one HDEL;
    # kombu's unacked_index sorted set is never written, by a client or by a script.
    assert not [c for c in seen.sent + seen.scripted if "unacked_index" in c]
    held = [c.split()[:3] for c in seen.sent + seen.scripted if c.split()[1:2] == ["unacked"]]
    recorded = sorted(tag for verb, _, tag in held if verb == "HSET")
    acked = sorted(tag for verb, _, tag in held if verb == "HDEL")
    assert len(recorded) == 11 and acked == recorded, held  # ten steps and finalize
