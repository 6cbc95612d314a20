"""The LLM gateway on real workers: cluster-wide limits, Retry-After, key pool, cache."""

from __future__ import annotations

import json

import pytest

from genfleet import constants as C
from producer import submit_chapter
from tests.conftest import Workers

OUTLINE = "Two rival bakers share one oven for a night."


def _wait_all(handles: list, timeout: float = 120) -> list:
    return [h.wait(timeout=timeout, progress=False) for h in handles]


@pytest.mark.slow  # a long fault or load test: `pytest -m slow`
def test_three_workers_under_the_simulators_hard_cap_see_no_429(
    sim, workers: Workers, monkeypatch
) -> None:
    sim.configure(rpm=240, latency_ms=50)
    monkeypatch.setenv("WRITER_MAX_PARALLEL_REQUESTS", "10")
    for n in range(3):
        workers.start(f"w{n}", concurrency=4, LLM_RPM_LIMIT=240)
    handles = [submit_chapter("cap", n + 1, OUTLINE, versions=10) for n in range(4)]
    views = _wait_all(handles)
    assert [v.status for v in views] == ["succeeded"] * 4
    stats = sim.stats()
    assert stats["by_status"] == {"200": 40}  # not one 429 from the provider
    workers_used = {r.worker for v in views for r in v.ok.values()}
    assert len(workers_used) == 3  # the work really was spread over the three processes


@pytest.mark.slow  # a long fault or load test: `pytest -m slow`
def test_retry_after_holds_back_every_worker(sim, workers: Workers, monkeypatch) -> None:
    sim.configure(latency_ms=50, retry_after_s=2, fail_patterns={"version 1 of 1": 429})
    for n in range(2):
        workers.start(f"w{n}", concurrency=2, LLM_MAX_RETRIES=0)
    first = submit_chapter("ra", 1, OUTLINE, versions=1)
    assert first.wait(timeout=60, progress=False).status == "failed"
    after = submit_chapter("ra", 2, OUTLINE, versions=4)
    assert after.wait(timeout=60, progress=False).status == "succeeded"
    calls = sim.stats()["recent"]
    t_429 = max(t for t, status, _ in calls if status == "429")
    later_ok = [t for t, status, _ in calls if status == "200" and t > t_429]
    assert len(later_ok) == 4
    assert min(later_ok) >= t_429 + 1.95  # Retry-After: 2 honoured by both workers


def test_401_fails_at_once_without_retry(sim, workers: Workers, r) -> None:
    sim.configure(valid_keys=["some-other-key"])
    worker = workers.start(LLM_MAX_RETRIES=3)
    handle = submit_chapter("auth", 1, OUTLINE, versions=1)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == "failed"
    assert sim.stats()["by_status"] == {"401": 1}
    step = handle.results()[0]
    assert step["attempts"] == 1 and "no usable API key" in step["error"]
    assert r.hkeys(C.KEY_DISABLED_KEYS) == ["key1"]
    log = worker.log_text()
    assert "API key key1" in log and "taken out of the pool" in log
    assert "test-key-0001" not in log


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_a_refused_key_is_taken_out_and_the_pool_goes_on(sim, workers: Workers, r) -> None:
    sim.configure(valid_keys=["good-key-2"])
    workers.start(OPENAI_API_KEYS="bad-key-1,good-key-2", concurrency=4)
    first = submit_chapter("pool", 1, OUTLINE, versions=4)
    assert first.wait(timeout=60, progress=False).status == "succeeded"
    refused = sim.stats()["by_status"].get("401", 0)
    assert 1 <= refused <= 4  # calls already in flight may each meet the bad key once
    assert r.hkeys(C.KEY_DISABLED_KEYS) == ["key1"]
    assert {s["meta"]["key_id"] for s in first.results()} == {"key2"}
    sim.reset()
    second = submit_chapter("pool", 2, OUTLINE, versions=3)
    assert second.wait(timeout=60, progress=False).status == "succeeded"
    assert sim.stats()["by_status"] == {"200": 3}


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_cache_hit_costs_no_call(sim, workers: Workers) -> None:
    workers.start()
    first = submit_chapter("cache", 1, OUTLINE, versions=2, cache=True)
    assert first.wait(timeout=60, progress=False).status == "succeeded"
    assert sim.stats()["by_status"] == {"200": 2}
    second = submit_chapter("cache", 1, OUTLINE, versions=2, cache=True)
    view = second.wait(timeout=60, progress=False)
    assert view.status == "succeeded"
    assert sim.stats()["by_status"] == {"200": 2}  # no new call
    assert all(s["cached"] for s in second.results())
    assert [s["output"] for s in second.results()] == [s["output"] for s in first.results()]
    assert view.metrics is not None and view.metrics.extra["llm"]["cache_hits"] == 2
    assert view.metrics.extra["llm"]["calls"] == 0
    uncached = submit_chapter("cache", 1, OUTLINE, versions=2)  # temperature 0.9: off
    assert uncached.wait(timeout=60, progress=False).status == "succeeded"
    assert sim.stats()["by_status"] == {"200": 4}


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_job_metrics_count_calls_retries_and_429s(sim, workers: Workers) -> None:
    sim.configure(latency_ms=20, retry_after_s=0.2, fail_patterns={})
    sim.configure(error_rates={"429": 0.3, "503": 0.2})
    workers.start(concurrency=4, LLM_MAX_RETRIES=5)
    handle = submit_chapter("m", 1, OUTLINE, versions=8)
    view = handle.wait(timeout=120, progress=False)
    llm = view.metrics.extra["llm"] if view.metrics else {}
    seen = sim.stats()["by_status"]
    assert llm["calls"] == sum(seen.values())
    assert llm["rate_limited"] == seen.get("429", 0)
    assert llm["server_errors"] == seen.get("503", 0)
    assert llm["ok"] == seen.get("200", 0) == view.metrics.steps_ok
    assert llm["retries"] >= seen.get("429", 0) + seen.get("503", 0) - view.metrics.steps_failed
    assert llm["tokens_out"] == view.metrics.tokens_out
    assert "effective_concurrency" in llm
    assert json.loads(json.dumps(llm)) == llm  # stored in the job record as JSON


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_effective_concurrency_drops_after_429s(sim, workers: Workers, r) -> None:
    from workers.limiter import ClusterLimiter, Limits, Scope

    sim.configure(latency_ms=20, retry_after_s=0.1, error_rates={"429": 1.0})
    workers.start(concurrency=4, LLM_MAX_RETRIES=2, LLM_MAX_CONCURRENT=8)
    handle = submit_chapter("aimd", 1, OUTLINE, versions=2)
    assert handle.wait(timeout=60, progress=False).status == "failed"
    limiter = ClusterLimiter(r)
    snap = limiter.snapshot(Scope(sim.base_url, "key1", "gpt-4o-mini"), Limits(8))
    assert snap["effective_concurrency"] < 8
    assert snap["rate_limited_total"] == sim.stats()["by_status"]["429"]
