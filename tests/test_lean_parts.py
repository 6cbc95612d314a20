"""The lean step path's parts on a real Redis (issue 15): scripts on connections of
their own that fall back to redis-py's way, keys' counters summed in the process,
and rpm waiters given times of their own."""

from __future__ import annotations

import time

import redis

from genfleet import constants as C
from genfleet.scripts import LeanScript
from workers import callstats
from workers.callstats import CallStats, read_stats
from workers.limiter import ClusterLimiter, Denied, Grant, Limits, Scope

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_a_lean_script_survives_a_dropped_connection_and_a_flushed_script_cache(
    r: redis.Redis,
) -> None:
    script = LeanScript(r, INCR)
    assert script(keys=["n"], args=[2]) == 2
    # Redis drops every client connection: the script's own one is broken now.
    for client in r.client_list():
        r.client_kill_filter(_id=client["id"], skipme=False)
    assert script(keys=["n"], args=[3]) == 5  # one call, sent again the ordinary way
    r.script_flush()  # as after a restart without persistence
    assert script(keys=["n"], args=[4]) == 9
    assert r.get("n") == "9"  # each call ran once
    pipe = r.pipeline()
    script(keys=["n"], args=[1], client=pipe)  # through redis-py: it loads the script first
    assert pipe.execute() == [10]


def test_an_error_reply_keeps_the_connection(r: redis.Redis) -> None:
    bad = LeanScript(r, "return redis.error_reply('no such thing')")
    good = LeanScript(r, INCR)
    for _ in range(3):
        try:
            bad(keys=[], args=[])
            raise AssertionError("an error reply must raise")
        except redis.ResponseError as e:
            assert "no such thing" in str(e)
        assert good(keys=["m"], args=[1]) > 0
    assert r.get("m") == "3"


def test_key_counters_are_written_when_the_process_has_no_call_in_flight(
    r: redis.Redis, monkeypatch
) -> None:
    stats = CallStats(r, ttl_s=600)
    key = C.KEY_STATS_KEY.format(key_id="k1")
    stats.started("k1")
    stats.started("k1")
    ops = stats.ended(stats.ops("job1", "k1", {"ok": 1, "tokens_in": 7}))
    assert ops is not None
    stats._apply(keys=ops.keys, args=ops.args)
    # Another call is in flight and a second has not passed: the key's counters wait.
    assert read_stats(r, key)["calls"] == 0
    assert read_stats(r, C.KEY_STATS_JOB.format(job_id="job1"))["ok"] == 1  # a job's don't
    ops = stats.ended(stats.ops("job1", "k1", {"ok": 1, "tokens_in": 5}))
    assert ops is not None
    stats._apply(keys=ops.keys, args=ops.args)
    counters = read_stats(r, key)
    assert (counters["calls"], counters["ok"], counters["tokens_in"]) == (2, 2, 12)
    assert 0 < r.ttl(key) <= 600
    # A busy process writes them at least every KEY_STATS_FLUSH_S.
    monkeypatch.setattr(callstats, "KEY_STATS_FLUSH_S", 0.05)
    stats.started("k1")
    stats.started("k1")
    time.sleep(0.1)
    ops = stats.ended(None)
    assert ops is not None
    stats._apply(keys=ops.keys, args=ops.args)
    assert read_stats(r, key)["calls"] == 4
    stats.add("job1", None, cache_hits=1)  # any command sent takes what is held along
    assert read_stats(r, key)["calls"] == 4


def test_rpm_waiters_get_times_of_their_own(r: redis.Redis) -> None:
    limiter = ClusterLimiter(r)
    scope = Scope("https://api.example.test/v1", "key1", "model-a")
    limits = Limits(max_concurrent=100, rpm=600)  # burst 30, then one per 0.1 s
    now = 1_000.0
    assert all(isinstance(limiter.try_acquire(scope, limits, 1, now=now), Grant)
               for _ in range(30))  # fmt: skip
    waits = []
    for _ in range(3):
        denied = limiter.try_acquire(scope, limits, 1, now=now)
        assert isinstance(denied, Denied) and denied.reason == "rpm"
        waits.append(round(denied.wait_s, 6))
    assert waits == [0.1, 0.2, 0.3]  # not all at the first free time
    # Each comes back at its time and is admitted; the cap still holds.
    for k in range(1, 4):
        assert isinstance(limiter.try_acquire(scope, limits, 1, now=now + k / 10), Grant)
    assert isinstance(limiter.try_acquire(scope, limits, 1, now=now + 0.3), Denied)
