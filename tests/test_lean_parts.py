"""The lean step path's parts on a real Redis (issue 15): scripts on connections of
their own that fall back to redis-py's way, keys' counters summed in the process,
and rpm waiters given times of their own."""

from __future__ import annotations

import time

import redis

from genfleet import constants as C
from genfleet.clock import RedisClock, redis_clock
from genfleet.scripts import LeanScript
from workers import callstats
from workers.callstats import CallStats, Cost, read_stats
from workers.gateway_types import ChatRequest
from workers.heartbeat import Heartbeat
from workers.keypool import ApiKey, KeyPool
from workers.limiter import ClusterLimiter, Denied, Grant, Limits, Scope
from workers.provider_call import call_chat

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


def test_key_counters_ride_with_a_release_once_a_second_and_a_timer_writes_the_last(
    r: redis.Redis, monkeypatch
) -> None:
    monkeypatch.setattr(callstats, "KEY_STATS_FLUSH_S", 0.3)
    stats = CallStats(r, ttl_s=600)
    key = C.KEY_STATS_KEY.format(key_id="k1")
    stats.started("k1")
    stats.started("k1")
    ops = stats.ended(stats.ops("job1", "k1", {"ok": 1, "tokens_in": 7}))
    assert ops is not None
    stats._apply(keys=ops.keys, args=ops.args)
    # Less than KEY_STATS_FLUSH_S since the last write: the key's counters wait.
    assert read_stats(r, key)["calls"] == 0
    assert read_stats(r, C.KEY_STATS_JOB.format(job_id="job1"))["ok"] == 1  # a job's don't
    # No release came within KEY_STATS_FLUSH_S (the process went quiet): the timer wrote them.
    deadline = time.monotonic() + 5
    while read_stats(r, key)["calls"] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    counters = read_stats(r, key)
    assert (counters["calls"], counters["ok"], counters["tokens_in"]) == (2, 1, 7)
    assert 0 < r.ttl(key) <= 600
    # KEY_STATS_FLUSH_S after that write, a release takes them along.
    time.sleep(0.35)
    stats.started("k1")
    ops = stats.ended(stats.ops("job1", "k1", {"ok": 1, "tokens_in": 5}))
    assert ops is not None
    stats._apply(keys=ops.keys, args=ops.args)
    counters = read_stats(r, key)
    assert (counters["calls"], counters["ok"], counters["tokens_in"]) == (3, 2, 12)
    # Any command sent takes what is held along; a stopping worker flushes the rest.
    stats.started("k1")
    stats.add("job1", None, cache_hits=1)
    assert read_stats(r, key)["calls"] == 4
    stats.started("k1")
    stats.flush()
    assert read_stats(r, key)["calls"] == 5


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


def test_a_call_only_the_rpm_limit_holds_back_is_admitted_for_its_time(r: redis.Redis) -> None:
    limiter = ClusterLimiter(r)
    scope = Scope("https://api.example.test/v1", "key1", "model-r")
    limits = Limits(max_concurrent=100, rpm=600)  # burst 30, then one per 0.1 s
    now = 1_000.0
    for _ in range(30):
        grant = limiter.try_acquire(scope, limits, 1, now=now, reserve_s=0.25)
        assert isinstance(grant, Grant) and grant.delay_s == 0 and grant.at == now
    # Past the burst: admitted for later, each a time of its own, one ask each.
    later = [limiter.try_acquire(scope, limits, 1, now=now, reserve_s=0.25) for _ in range(2)]
    times = [(round(g.delay_s, 6), round(g.at, 6)) for g in later if isinstance(g, Grant)]
    assert times == [(0.1, now + 0.1), (0.2, now + 0.2)]
    # The request log holds them at their times; they count as in flight now.
    rpm_log = f"{C.KEY_LIMITER_SCOPE.format(scope=scope.redis_part())}:rpm"
    assert round(max(score for _, score in r.zrange(rpm_log, 0, -1, withscores=True)), 6) == 1000.2
    assert limiter.snapshot(scope, limits, now=now)["in_flight"] == 32
    # Further than reserve_s ahead: refused with its time, as without reserving.
    refused = limiter.try_acquire(scope, limits, 1, now=now, reserve_s=0.25)
    assert isinstance(refused, Denied) and refused.reason == "rpm"
    assert round(refused.wait_s, 6) == 0.3
    # No other limit is waited for: a full slot still refuses.
    tight = Limits(max_concurrent=32, rpm=600)
    assert isinstance(limiter.try_acquire(scope, tight, 1, now=now, reserve_s=5), Denied)
    # A 429's cooldown that began after a grant's time is seen by the sleeping call.
    assert not limiter.cooled_down_since(later[1])  # type: ignore[arg-type]
    limiter.report_rate_limited(scope, limits, 2.0, now=now + 0.05)
    assert limiter.cooled_down_since(later[1])  # type: ignore[arg-type]


def test_the_heartbeat_renews_no_work_younger_than_its_interval() -> None:
    beat = Heartbeat(interval_s=0.2)
    short: list[float] = []
    long: list[float] = []
    with beat.renewing("long", lambda: long.append(time.monotonic())):
        started = time.monotonic()
        for _ in range(4):  # short pieces of work, each over within an interval
            with beat.renewing("short", lambda: short.append(time.monotonic())):
                time.sleep(0.1)
        time.sleep(0.7)
    assert short == []
    # Renewed 1.1 s long: every 0.2 to 0.4 s, the first no sooner than 0.2 s in.
    assert 3 <= len(long) <= 5, long
    gaps = [b - a for a, b in zip([started, *long], long, strict=False)]
    assert all(0.19 <= g <= 0.45 for g in gaps), gaps


def test_a_successs_job_counters_are_one_vector_that_readers_add_up(r: redis.Redis) -> None:
    stats = CallStats(r, ttl_s=600)
    key = C.KEY_STATS_JOB.format(job_id="job-v")
    for tokens_in, usd in ((7, 0.25), (5, None)):
        ops = stats.ops("job-v", None, {"ok": 1, "tokens_in": tokens_in, "tokens_out": 3},
                        wait_s=0.5, cost=Cost("m", usd))  # fmt: skip
        assert ops.args[0] == "HADDV" and "HINCRBY" not in ops.args  # one vector
        stats._apply(keys=ops.keys, args=ops.args)
    stats.add("job-v", None, failed=1, tokens_in=100)  # a failure's counters stay plain
    assert set(r.hkeys(key)) == {"success", "failed", "tokens_in"}
    counters = read_stats(r, key)
    assert (counters["ok"], counters["tokens_in"], counters["tokens_out"], counters["failed"]) == (
        2, 112, 6, 1)  # fmt: skip
    assert counters["cost_usd"] == 0.25 and counters["unpriced_calls"] == 1
    assert counters["limiter_wait_s"] == 1.0


def test_the_redis_clock_reads_time_once_a_period_and_agrees_with_redis(
    r: redis.Redis, redis_url: str
) -> None:
    class Asked(redis.Redis):  # a real client that counts its TIME commands
        times = 0

        def time(self):  # type: ignore[no-untyped-def, override]
            Asked.times += 1
            return super().time()

    clock = RedisClock(Asked.from_url(redis_url), sync_s=0.5)
    readings = [clock.now() for _ in range(1000)]
    assert Asked.times == 1  # the first reading asked Redis, the rest did not
    assert readings == sorted(readings)
    time.sleep(0.6)
    clock.now()
    assert Asked.times == 2  # once the period was over

    def redis_now() -> float:
        seconds, micros = r.time()
        return seconds + micros / 1e6

    before, reading, after = redis_now(), clock.now(), redis_now()
    assert before - 0.05 <= reading <= after + 0.05  # within half a round trip (and load)
    assert redis_clock(r) is redis_clock(r)  # one per Redis in a process


def test_a_call_sends_no_sdk_telemetry_headers(r: redis.Redis) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []
    answer = json.dumps({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }).encode()  # fmt: skip

    class Provider(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        pool = KeyPool([ApiKey("key1", base, Limits(max_concurrent=4), "sk-test")], r, 10.0)
        request = ChatRequest([{"role": "user", "content": "hello"}], "m", 16)
        result = call_chat(pool.client_for(pool.keys[0]), request, base, 10.0, 1)
    finally:
        server.shutdown()
        server.server_close()
    assert result.text == "hi" and result.tokens_in == 3
    (headers,) = seen
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["content-type"] == "application/json"
    # The SDK's telemetry headers are left out; its switch for an unread body goes along.
    sdk = [name for name in headers if name.startswith("x-stainless")]
    assert sdk == ["x-stainless-raw-response"], headers
