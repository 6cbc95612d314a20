"""The cluster limiter against a real Redis (database 14 only, flushed around each test).

Most tests inject the clock (``now=``) so that minutes pass in milliseconds; the
multi-process tests use Redis' own clock.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.limiter import ClusterLimiter, Denied, Grant, Limits, Scope

SCOPE = Scope("https://api.example.test/v1", "key1", "model-a")
OTHER = Scope("https://api.example.test/v1", "key1", "model-b")
T0 = 1_000.0  # the injected clock starts here
IN_FLIGHT_KEY = "test:limiter:in_flight"


@pytest.fixture
def rdb(r: redis.Redis) -> Iterator[redis.Redis]:
    """The test database (see conftest: a real Redis, flushed before each test)."""
    yield r


@pytest.fixture
def limiter(rdb: redis.Redis) -> ClusterLimiter:
    return ClusterLimiter(rdb)


def _grant(result: Grant | Denied) -> Grant:
    assert isinstance(result, Grant), result
    return result


def _denied(result: Grant | Denied, reason: str) -> Denied:
    assert isinstance(result, Denied), result
    assert result.reason == reason
    assert result.wait_s > 0
    return result


def _greedy(
    limiter: ClusterLimiter, limits: Limits, size: Callable[[], int], span_s: float = 180.0
) -> list[tuple[float, int]]:
    """A client that calls as soon as it may, on a clock that jumps by ``wait_s``."""
    now, admitted = T0, []
    tokens = size()
    while now < T0 + span_s:
        result = limiter.try_acquire(SCOPE, limits, tokens, now=now)
        if isinstance(result, Denied):
            now += result.wait_s
            continue
        admitted.append((now, tokens))
        limiter.release(result, now=now)
        tokens = size()
    return admitted


def _max_in_any_window(admitted: list[tuple[float, int]], window_s: float = 60.0) -> int:
    """The most admitted (weight) in any closed window of ``window_s``."""
    times = sorted(admitted)
    best, total, start = 0, 0, 0
    for at, weight in times:
        total += weight
        while times[start][0] < at - window_s:
            total -= times[start][1]
            start += 1
        best = max(best, total)
    return best


def test_scope_is_a_short_stable_key_part_without_secrets() -> None:
    part = SCOPE.redis_part()
    assert len(part) == 16 and int(part, 16) >= 0
    assert part == Scope(SCOPE.provider, SCOPE.key_id, SCOPE.model).redis_part()
    assert part != OTHER.redis_part()
    assert {SCOPE: 1}[Scope(SCOPE.provider, SCOPE.key_id, SCOPE.model)] == 1


def test_bad_limits_and_requests_fail_clearly(limiter: ClusterLimiter) -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        Limits(max_concurrent=0)
    with pytest.raises(ValueError, match="tokens per minute"):
        limiter.try_acquire(SCOPE, Limits(4, tpm=100), 101, now=T0)
    with pytest.raises(ValueError, match="tokens"):
        limiter.try_acquire(SCOPE, Limits(4), -1, now=T0)


def test_concurrency_cap_and_release(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=3)
    grants = [_grant(limiter.try_acquire(SCOPE, limits, 10, now=T0)) for _ in range(3)]
    assert [g.in_flight for g in grants] == [1, 2, 3]
    assert {g.effective_concurrency for g in grants} == {3}
    _denied(limiter.try_acquire(SCOPE, limits, 10, now=T0), "concurrency")
    _grant(limiter.try_acquire(OTHER, limits, 10, now=T0))  # another scope is separate
    limiter.release(grants[0], now=T0)
    assert _grant(limiter.try_acquire(SCOPE, limits, 10, now=T0)).in_flight == 3


def test_expired_lease_frees_its_slot(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=1, lease_s=10.0)
    _grant(limiter.try_acquire(SCOPE, limits, 1, now=T0))  # its worker dies: never released
    _denied(limiter.try_acquire(SCOPE, limits, 1, now=T0 + 9.9), "concurrency")
    assert _grant(limiter.try_acquire(SCOPE, limits, 1, now=T0 + 10.0)).in_flight == 1


@pytest.mark.parametrize("rpm", [30, 60, 600])
def test_rpm_greedy_client_gets_the_rate_but_never_more(limiter: ClusterLimiter, rpm: int) -> None:
    admitted = _greedy(limiter, Limits(max_concurrent=1000, rpm=rpm), lambda: 1)
    assert _max_in_any_window(admitted) <= rpm
    assert len(admitted) >= 0.95 * rpm * 3


def test_rpm_paces_instead_of_bursting(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=1000, rpm=600)  # burst tolerance 30, then one per 0.1 s
    burst = [limiter.try_acquire(SCOPE, limits, 1, now=T0) for _ in range(31)]
    assert all(isinstance(b, Grant) for b in burst[:30])
    assert _denied(burst[30], "rpm").wait_s == pytest.approx(0.1)
    _grant(limiter.try_acquire(SCOPE, limits, 1, now=T0 + 0.1))


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    tpm=st.integers(min_value=100, max_value=500_000),
    max_share=st.sampled_from([20, 10, 4]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_tpm_greedy_client_gets_the_rate_but_never_more(
    rdb: redis.Redis, tpm: int, max_share: int, seed: int
) -> None:
    rdb.flushdb()
    largest = max(1, tpm // max_share)
    rng = random.Random(seed)
    admitted = _greedy(
        ClusterLimiter(rdb), Limits(max_concurrent=1000, tpm=tpm), lambda: rng.randint(1, largest)
    )
    assert _max_in_any_window(admitted) <= tpm
    total = sum(tokens for _, tokens in admitted)
    if max_share == 20:  # calls well under the burst tolerance: the full rate
        assert total >= 0.95 * tpm * 3
    else:  # big calls wait for whole calls to leave the window: allow two of them
        assert total >= 0.95 * tpm * 3 - 2 * largest


def test_actual_tokens_correction_frees_capacity(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=10, tpm=1000)
    first = _grant(limiter.try_acquire(SCOPE, limits, 600, now=T0))
    limiter.release(first, now=T0 + 1)
    late = T0 + 40  # past the token pacing (36 s for 600 tokens at 1000/min)
    # still in the window: wait for the first call to leave it
    denied = _denied(limiter.try_acquire(SCOPE, limits, 600, now=late), "tpm")
    assert denied.wait_s == pytest.approx(21)
    corrected = _grant(limiter.try_acquire(OTHER, limits, 600, now=T0))
    limiter.release(corrected, actual_tokens=100, now=T0 + 1)
    _grant(limiter.try_acquire(OTHER, limits, 600, now=late))
    assert limiter.snapshot(OTHER, limits, now=late)["tokens_in_window"] == 700


def test_a_denied_call_reserves_nothing(rdb: redis.Redis, limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=10, tpm=100)
    limiter.release(_grant(limiter.try_acquire(SCOPE, limits, 100, now=T0)), now=T0)
    denied = limiter.try_acquire(
        SCOPE, limits, 10, job_id="j", job_concurrency=1, throttle_ms=1000, now=T0 + 1
    )
    _denied(denied, "tpm")
    assert limiter.snapshot(SCOPE, limits, now=T0 + 1)["in_flight"] == 0
    assert rdb.keys("genfleet:lim:job:j:*") == []


def test_cooldown_blocks_everyone(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=10)
    assert limiter.report_rate_limited(SCOPE, limits, 5.0, now=T0) == pytest.approx(5.0)
    for job_id in ("", "a", "b"):
        wait = _denied(limiter.try_acquire(SCOPE, limits, 1, job_id=job_id, now=T0 + 4), "cooldown")
        assert wait.wait_s == pytest.approx(1.0)
    _grant(limiter.try_acquire(OTHER, limits, 1, now=T0 + 4))
    _grant(limiter.try_acquire(SCOPE, limits, 1, now=T0 + 5))


def test_cooldown_backoff_doubles_up_to_30s_and_resets_on_success(
    limiter: ClusterLimiter,
) -> None:
    limits = Limits(max_concurrent=10)
    applied = [limiter.report_rate_limited(SCOPE, limits, None, now=T0 + 100 * i) for i in range(7)]
    assert applied == pytest.approx([1, 2, 4, 8, 16, 30, 30])
    # an earlier, longer cooldown stands
    assert limiter.report_rate_limited(SCOPE, limits, 1.0, now=T0 + 600.5) == pytest.approx(29.5)
    later = T0 + 800
    limiter.release(_grant(limiter.try_acquire(SCOPE, limits, 1, now=later)), now=later)
    assert limiter.report_rate_limited(SCOPE, limits, None, now=later) == pytest.approx(1.0)
    assert limiter.snapshot(SCOPE, limits, now=later)["rate_limited_total"] == 9


def _succeed(limiter: ClusterLimiter, limits: Limits, times: int, now: float) -> int:
    """Makes ``times`` successful calls; returns the last effective concurrency."""
    for _ in range(times):
        limiter.release(_grant(limiter.try_acquire(SCOPE, limits, 1, now=now)), now=now)
    return int(limiter.snapshot(SCOPE, limits, now=now)["effective_concurrency"])


def test_aimd_halves_once_per_second_and_grows_back(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=8)
    limiter.report_rate_limited(SCOPE, limits, 0.0, now=T0)
    limiter.report_rate_limited(SCOPE, limits, 0.0, now=T0 + 0.5)  # same burst of 429s
    assert limiter.snapshot(SCOPE, limits, now=T0)["effective_concurrency"] == 4
    limiter.report_rate_limited(SCOPE, limits, 0.0, now=T0 + 1.0)
    now = T0 + 2
    assert _succeed(limiter, limits, 0, now) == 2
    held = [_grant(limiter.try_acquire(SCOPE, limits, 1, now=now)) for _ in range(2)]
    _denied(limiter.try_acquire(SCOPE, limits, 1, now=now), "concurrency")
    for grant in held:
        limiter.release(grant, ok=False, now=now)  # no growth from failures
    assert _succeed(limiter, limits, 1, now) == 2
    assert _succeed(limiter, limits, 1, now) == 3  # two successes at 2 -> 3
    assert _succeed(limiter, limits, 2, now) == 3
    assert _succeed(limiter, limits, 1, now) == 4  # three at 3 -> 4
    assert _succeed(limiter, limits, 100, now) == 8  # never above max_concurrent


def test_lowered_max_concurrent_clamps_the_learned_value(limiter: ClusterLimiter) -> None:
    _succeed(limiter, Limits(max_concurrent=8), 3, T0)
    smaller = Limits(max_concurrent=2)
    held = [_grant(limiter.try_acquire(SCOPE, smaller, 1, now=T0)) for _ in range(2)]
    assert held[-1].effective_concurrency == 2
    _denied(limiter.try_acquire(SCOPE, smaller, 1, now=T0), "concurrency")


def test_release_twice_counts_once(
    limiter: ClusterLimiter, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(max_concurrent=4)
    limiter.report_rate_limited(SCOPE, limits, 0.0, now=T0)  # effective 2
    grant = _grant(limiter.try_acquire(SCOPE, limits, 1, now=T0))
    limiter.release(grant, now=T0)
    limiter.release(grant, now=T0)
    assert "released twice" in caplog.text
    assert limiter.snapshot(SCOPE, limits, now=T0)["effective_concurrency"] == 2


def test_throttle_spaces_a_jobs_calls(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=10)

    def call(job_id: str, now: float) -> Grant | Denied:
        return limiter.try_acquire(SCOPE, limits, 1, job_id=job_id, throttle_ms=500, now=now)

    _grant(call("j", T0))
    assert _denied(call("j", T0 + 0.2), "throttle").wait_s == pytest.approx(0.3)
    _grant(call("k", T0 + 0.2))
    _grant(call("j", T0 + 0.5))


def test_job_concurrency(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=10, lease_s=30.0)

    def call(job_id: str, now: float = T0) -> Grant | Denied:
        return limiter.try_acquire(SCOPE, limits, 1, job_id=job_id, job_concurrency=2, now=now)

    held = [_grant(call("j")), _grant(call("j"))]
    _denied(call("j"), "job_concurrency")
    _grant(call("k"))
    limiter.release(held[0], now=T0)
    _grant(call("j"))
    _denied(call("j"), "job_concurrency")
    _grant(call("j", T0 + 30))  # leases of a killed worker expire for the job too


def test_every_key_expires(rdb: redis.Redis, limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=4, rpm=60, tpm=1000)
    grant = limiter.try_acquire(SCOPE, limits, 10, job_id="j", job_concurrency=1, throttle_ms=10)
    limiter.release(_grant(grant), actual_tokens=5)
    limiter.report_rate_limited(SCOPE, limits, None)
    keys = rdb.keys("genfleet:lim:*")
    assert len(keys) >= 5  # empty lease sets are gone already; the cooldown is in the state
    assert all(0 < rdb.pttl(key) <= 1_000_000 for key in keys)
    assert not any("key1" in key or "example" in key for key in keys)


def test_snapshot(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=4, rpm=60, tpm=100_000)
    _grant(limiter.try_acquire(SCOPE, limits, 100, now=T0))
    limiter.release(_grant(limiter.try_acquire(SCOPE, limits, 50, now=T0)), now=T0)
    limiter.report_rate_limited(SCOPE, limits, 2.0, now=T0)
    assert limiter.snapshot(SCOPE, limits, now=T0 + 0.5) == {
        "in_flight": 1,
        "effective_concurrency": 2,
        "requests_in_window": 2,
        "tokens_in_window": 150,
        "cooldown_left_s": pytest.approx(1.5),
        "rate_limited_total": 1,
    }
    assert limiter.snapshot(SCOPE, limits, now=T0 + 100)["tokens_in_window"] == 0


def test_acquire_returns_at_once_when_the_wait_is_too_long(
    limiter: ClusterLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = Limits(max_concurrent=1)
    limiter.report_rate_limited(SCOPE, limits, 10.0)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    result = limiter.acquire(SCOPE, limits, 1, max_wait_s=2.0)
    assert _denied(result, "cooldown").wait_s > 2.0
    assert slept == []  # did not sleep out max_wait_s first


def test_acquire_waits_for_a_slot(limiter: ClusterLimiter) -> None:
    limits = Limits(max_concurrent=1)
    held = _grant(limiter.acquire(SCOPE, limits, 1, max_wait_s=1.0))
    _denied(limiter.acquire(SCOPE, limits, 1, max_wait_s=0.1), "concurrency")
    timer = threading.Timer(0.1, limiter.release, args=(held,))
    timer.start()
    try:
        _grant(limiter.acquire(SCOPE, limits, 1, max_wait_s=10.0))
    finally:
        timer.join()


# Several processes, Redis' clock


def _mp_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _hold_slots(url: str, limits: Limits, job_id: str, job_concurrency: int, attempts: int) -> int:
    """Takes and holds grants; returns the most holders seen at once (a separate count)."""
    client = redis.Redis.from_url(url)
    limiter, peak = ClusterLimiter(client), 0
    for _ in range(attempts):
        result = limiter.acquire(
            SCOPE, limits, 1, max_wait_s=10.0, job_id=job_id, job_concurrency=job_concurrency
        )
        if isinstance(result, Denied):
            continue
        peak = max(peak, int(client.incr(IN_FLIGHT_KEY)))
        time.sleep(0.002)
        client.decr(IN_FLIGHT_KEY)
        limiter.release(result)
    client.close()
    return peak


@pytest.mark.parametrize(("max_concurrent", "job_concurrency", "cap"), [(3, 0, 3), (4, 2, 2)])
def test_processes_never_exceed_concurrency(
    rdb: redis.Redis, redis_url: str, max_concurrent: int, job_concurrency: int, cap: int
) -> None:
    limits = Limits(max_concurrent=max_concurrent)
    work = [(redis_url, limits, "job-1", job_concurrency, 40)] * 4
    with _mp_context().Pool(4) as pool:
        peaks = pool.starmap(_hold_slots, work)
    assert 2 <= max(peaks) <= cap
    assert int(rdb.get(IN_FLIGHT_KEY) or 0) == 0


def _greedy_until(
    url: str, limits: Limits, start_at: float, stop_at: float
) -> list[tuple[float, float]]:
    """Acquires as fast as allowed until a wall-clock time; returns when each grant
    happened, as (just before, just after) the limiter's call, on this host's clock."""
    client = redis.Redis.from_url(url)
    limiter, grants = ClusterLimiter(client), []
    time.sleep(max(0.0, start_at - time.time()))
    while (before := time.time()) < stop_at:
        result = limiter.try_acquire(SCOPE, limits, 1)
        if isinstance(result, Grant):
            grants.append((before, time.time()))
            limiter.release(result)
        else:
            time.sleep(max(0.0, min(result.wait_s, stop_at - time.time())))
    client.close()
    return grants


@pytest.mark.parametrize("rpm", [30, 1200])
def test_processes_share_the_rpm_pacing(rdb: redis.Redis, redis_url: str, rpm: int) -> None:
    limits = Limits(max_concurrent=100, rpm=rpm)
    burst, interval = max(1, rpm // 20), 60 / rpm
    with _mp_context().Pool(4) as pool:
        start_at = time.time() + 0.5
        per_process = pool.starmap(
            _greedy_until, [(redis_url, limits, start_at, start_at + 2.0)] * 4
        )
    grants = [g for grants in per_process for g in grants]
    # GCRA admits at most burst + span / interval calls in any span (Redis' clock is
    # this host's clock); the span is measured around the calls, so it only grows.
    span = max(after for _, after in grants) - min(before for before, _ in grants)
    assert burst <= len(grants) <= min(rpm, burst + math.floor(span / interval) + 1)


def _hold_forever(url: str, limits: Limits, ready: Any) -> None:
    limiter = ClusterLimiter(redis.Redis.from_url(url))
    assert isinstance(limiter.try_acquire(SCOPE, limits, 1), Grant)
    ready.set()
    time.sleep(600)  # killed long before this


def test_a_killed_workers_lease_expires(rdb: redis.Redis, redis_url: str) -> None:
    """A process holding the only slot is SIGKILLed: the slot frees itself after lease_s."""
    limits = Limits(max_concurrent=1, lease_s=1.5)
    ctx = _mp_context()
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(redis_url, limits, ready))
    holder.start()
    try:
        assert ready.wait(10)
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        holder.join(5)
        limiter = ClusterLimiter(rdb)
        denied = limiter.try_acquire(SCOPE, limits, 1)
        assert isinstance(denied, Denied) and denied.reason == "concurrency"
        granted = limiter.acquire(SCOPE, limits, 1, max_wait_s=5.0)
        assert isinstance(granted, Grant)  # freed by the lease's expiry, not held forever
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join()


def test_a_slot_waiter_is_woken_by_a_release_and_not_by_anything_else(
    limiter: ClusterLimiter, rdb: redis.Redis
) -> None:
    limits = Limits(max_concurrent=1)
    held = _grant(limiter.try_acquire(SCOPE, limits, 10))
    _denied(limiter.try_acquire(SCOPE, limits, 10), "concurrency")
    # Nobody releases: the waiter blocks (one BLPOP, no polling), then times out.
    assert limiter.wait_freed([SCOPE.redis_part()], 0.3) is False
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(limiter.wait_freed(
        [SCOPE.redis_part()], 20.0)))  # fmt: skip
    waiter.start()
    time.sleep(0.3)
    limiter.release(held)
    waiter.join(25)
    assert woken == [True]
    _grant(limiter.try_acquire(SCOPE, limits, 10))


def test_releases_nobody_waits_for_leave_no_stale_wake_ups(
    limiter: ClusterLimiter, rdb: redis.Redis
) -> None:
    from workers.limiter import wake_key

    limits = Limits(max_concurrent=1)
    key = wake_key(SCOPE.redis_part())
    limiter.release(_grant(limiter.try_acquire(SCOPE, limits, 10)))
    assert rdb.llen(key) == 0  # no waiter was marked: nothing pushed
    first = _grant(limiter.try_acquire(SCOPE, limits, 10))
    _denied(limiter.try_acquire(SCOPE, limits, 10), "concurrency")  # marks a waiter
    limiter.release(first)
    assert rdb.llen(key) == 1  # the waiter's wake-up, kept until it blocks
    second = _grant(limiter.try_acquire(SCOPE, limits, 10))  # someone else took it
    _denied(limiter.try_acquire(SCOPE, limits, 10), "concurrency")
    assert rdb.llen(key) == 0  # that wake-up was stale for this refused caller: dropped
    limiter.release(second)
