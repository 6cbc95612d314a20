"""Exactly once under faults, on real workers: each step is called once at the provider
(the simulator's per-prompt counters), except the calls a killed worker had in flight.

Slow (real calls of several seconds): marked ``slow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import redis

from genfleet import constants as C
from genfleet.errors import GenfleetError, JobBusyError
from producer.control import cancel
from producer.pipelines import resume, submit_tweets
from tests.conftest import Workers, genfleet_cmd, wait_for
from tests.test_faults import PERSONA, calendar, own_redis, tweet_prompt_hash

__all__ = ["own_redis"]  # a fixture used here

pytestmark = pytest.mark.slow

SHORT_VISIBILITY = {"BROKER_VISIBILITY_TIMEOUT_S": "5"}


def _calls(sim, cal: dict, counter: str = "chat_calls_by_prompt") -> dict[str, int]:
    by_prompt = sim.stats()[counter]
    return {date: by_prompt.get(tweet_prompt_hash(date, plan), 0)
            for date, plan in cal["calendar"].items()}  # fmt: skip


def _lease_expiries(r: redis.Redis) -> list[float]:
    out: list[float] = []
    for key in r.scan_iter(f"{C.KEY_LIMITER_PREFIX}:*:leases"):
        if ":job:" not in key:
            out += [score for _, score in r.zrange(key, 0, -1, withscores=True)]
    return out


def _redis_now(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1e6


def test_calls_longer_than_the_visibility_timeout_are_made_once(sim, workers: Workers) -> None:
    sim.configure(latency_ms=9000)  # each call outlives the 5 s visibility timeout
    cal = calendar(4)
    workers.start("v1", concurrency=4, **SHORT_VISIBILITY)
    workers.start("v2", concurrency=4, **SHORT_VISIBILITY)
    view = submit_tweets(PERSONA, cal, count=4).wait(timeout=180, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == 4 and not view.failed
    assert _calls(sim, cal) == dict.fromkeys(cal["calendar"], 1)  # redelivered copies never call
    llm = view.metrics.extra["llm"] if view.metrics else {}
    assert llm["calls"] == 4  # the job's count is the provider's


def test_a_long_retry_after_past_the_visibility_timeout_bills_each_step_once(
    sim, workers: Workers
) -> None:
    sim.configure(latency_ms=200, retry_after_s=12, fail_patterns={})
    sim.configure(error_rates={"429": 1.0})
    cal = calendar(4)
    workers.start("ra", concurrency=4, **SHORT_VISIBILITY)
    handle = submit_tweets(PERSONA, cal, count=4)
    wait_for(lambda: sim.stats()["by_status"].get("429", 0) >= 1, 60, "a 429")
    sim.configure(error_rates={})
    view = handle.wait(timeout=180, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert _calls(sim, cal, "chat_by_prompt") == dict.fromkeys(cal["calendar"], 1)  # paid once
    llm = view.metrics.extra["llm"] if view.metrics else {}
    assert llm["calls"] == sim.stats()["by_path"]["/v1/chat/completions"]


def test_a_killed_workers_leases_and_claims_come_back_within_seconds(
    sim, workers: Workers, r: redis.Redis
) -> None:
    sim.configure(latency_ms=6000)
    cal = calendar(4)
    env = {**SHORT_VISIBILITY, "LLM_MAX_CONCURRENT": "2"}  # LLM_TIMEOUT_S stays 120 s
    first = workers.start("k1", concurrency=2, **env)
    handle = submit_tweets(PERSONA, cal, count=4)
    wait_for(lambda: sim.stats()["in_flight"] == 2, 60, "two calls in flight")
    first.signal(signal.SIGKILL)
    first.proc.wait()  # type: ignore[union-attr]
    killed_at = _redis_now(r)
    expiries = _lease_expiries(r)
    assert len(expiries) == 2
    assert max(expiries) <= killed_at + C.LEASE_S  # the key is free again within LEASE_S
    claims = r.hgetall(C.KEY_JOB_CLAIMS.format(job_id=handle.id))
    assert len(claims) == 2
    assert max(float(v.rsplit(" ", 1)[1]) for v in claims.values()) <= killed_at + C.LEASE_S
    workers.start("k2", concurrency=2, **env)
    view = handle.wait(timeout=180, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    calls = _calls(sim, cal)
    assert all(n >= 1 for n in calls.values()) and sum(calls.values()) <= 4 + 2
    assert sum(1 for n in calls.values() if n > 1) <= 2  # only the two killed mid-call


def test_redis_out_of_memory_loses_nothing_and_calls_nothing_twice(
    sim, workers: Workers, own_redis: dict
) -> None:
    sim.configure(latency_ms=3000)
    cal = calendar(4)
    worker = workers.start("oom", concurrency=2, REDIS_URL=own_redis["url"])
    handle = submit_tweets(PERSONA, cal, count=4)
    wait_for(lambda: sim.stats()["in_flight"] == 2, 60, "two calls in flight")
    full = redis.Redis.from_url(own_redis["url"], decode_responses=True)
    jobs_before = len(full.keys(f"{C.KEY_PREFIX}:job:*"))
    full.config_set("maxmemory", 1)  # noeviction: every write is refused
    with pytest.raises(GenfleetError):
        submit_tweets(PERSONA, calendar(1), count=1)
    assert len(full.keys(f"{C.KEY_PREFIX}:job:*")) == jobs_before  # no orphan record
    cli_env = {**os.environ, "REDIS_URL": own_redis["url"]}
    status = subprocess.run(genfleet_cmd("status", handle.id), capture_output=True, text=True,
                            env=cli_env, timeout=60)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "warning: Redis is full" in status.stdout and "raise maxmemory" in status.stdout
    wait_for(lambda: sim.stats()["in_flight"] == 0, 60, "the paid calls to end")
    time.sleep(3)  # the results wait in memory; the next messages are popped and held
    assert worker.proc is not None and worker.proc.poll() is None
    full.config_set("maxmemory", 0)
    view = handle.wait(timeout=180, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == 4 and not view.failed
    assert _calls(sim, cal) == dict.fromkeys(cal["calendar"], 1)
    assert worker.proc.poll() is None


def test_a_worker_whose_clock_is_off_never_causes_a_second_call(sim, workers: Workers) -> None:
    sim.configure(latency_ms=4000)
    cal = calendar(4)
    env = {"BROKER_VISIBILITY_TIMEOUT_S": "10"}
    # kombu dates held messages by the worker's clock: to the others, these look
    # 60 s old at once, and are handed out again while their calls run.
    workers.start("skewed", concurrency=4, GENFLEET_TEST_CLOCK_OFFSET_S="-60", **env)
    workers.start("on-time", concurrency=4, **env)
    view = submit_tweets(PERSONA, cal, count=4).wait(timeout=180, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert _calls(sim, cal) == dict.fromkeys(cal["calendar"], 1)


def test_wait_rides_out_a_redis_restart_and_no_step_fails(
    sim, workers: Workers, own_redis: dict
) -> None:
    sim.configure(latency_ms=1500)
    cal = calendar(6)
    workers.start("rr", concurrency=2, REDIS_URL=own_redis["url"])
    handle = submit_tweets(PERSONA, cal, count=6)
    waited: list = []
    waiter = threading.Thread(target=lambda: waited.append(handle.wait(180, progress=False)))
    waiter.start()
    wait_for(lambda: sim.stats()["in_flight"] == 2, 60, "two calls in flight")
    own_redis["proc"].terminate()  # the producer's wait() and both calls see Redis go
    own_redis["proc"].wait(timeout=10)
    time.sleep(3)
    own_redis["start"]()
    waiter.join(timeout=200)
    assert waited, "wait() did not return"
    view = waited[0]
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == 6 and not view.failed  # no step failed by the restart
    calls = _calls(sim, cal)
    assert all(n >= 1 for n in calls.values()) and sum(calls.values()) <= 6 + 2


def test_cancel_then_resume_while_steps_run_calls_each_step_once(sim, workers: Workers) -> None:
    sim.configure(latency_ms=4000)  # the resume comes while two calls are in flight
    cal = calendar(6)
    workers.start("cr", concurrency=2)
    handle = submit_tweets(PERSONA, cal, count=6)
    wait_for(lambda: len(handle.view().running) == 2, 60, "two running steps")
    cancel(handle.id)
    with pytest.raises(JobBusyError, match="still being worked on"):
        resume(handle.id)  # a live claim: refused, nothing re-enqueued
    wait_for(lambda: not handle.view().running, 60, "the running steps to end")
    resumed, missing = resume(handle.id)
    assert len(missing) == 4
    view = resumed.wait(timeout=120, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert len(view.ok) == 6
    assert _calls(sim, cal) == dict.fromkeys(cal["calendar"], 1)  # no step called twice
