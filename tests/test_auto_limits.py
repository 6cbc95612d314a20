"""``LLM_RPM_LIMIT=auto`` / ``LLM_TPM_LIMIT=auto``: limits read from the provider's headers."""

from __future__ import annotations

import pytest
import redis

from genfleet import constants as C
from producer import submit_chapter
from tests.conftest import Workers
from workers.limiter import Limits, Scope
from workers.ratelimit_headers import LearnedLimits, parse_duration, parse_headers

OUTLINE = "Two clockmakers race to finish a tower clock before the new year."


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1.5s", 1.5), ("2", 2.0), ("1h2m", 3720.0)],
)
def test_reset_durations_as_providers_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_unusable_headers_are_no_hint() -> None:
    seen = parse_headers(
        {"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-tokens": "-3",
         "x-ratelimit-reset-tokens": "soon", "x-ratelimit-limit-tokens": "1e400"}
    )  # fmt: skip
    assert seen.limit_requests is None and seen.remaining_tokens is None
    assert seen.reset_tokens_s is None and seen.limit_tokens is None


def test_the_token_ratio_follows_the_providers_count(r: redis.Redis) -> None:
    scope = Scope("https://p.test/v1", "key1", "m")
    base = Limits(8, auto_rpm=True, auto_tpm=True)
    learned = LearnedLimits(r)
    # The provider charged 3,000 of its 10,000 while genfleet holds 1,500: it counts double.
    headers = {"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "7000",
               "x-ratelimit-limit-requests": "500"}  # fmt: skip
    assert learned.limits(scope, base).rpm == 0  # nothing learned yet: no pacing
    for _ in range(60):
        learned._cache.clear()
        learned.observe(scope, base, headers, 1500)
    learned._cache.clear()
    got = learned.learned(scope)
    assert got.rpm == 500 and got.tpm == 10_000
    assert got.ratio == pytest.approx(2.0, rel=0.05)
    limits = learned.limits(scope, base)
    # paced at 95% (requests) and 93% (tokens) of the provider's limits; tokens in
    # genfleet's units (half as many)
    assert limits.rpm == 475 and limits.tpm == pytest.approx(10_000 * 0.93 / 2, rel=0.05)


def test_auto_rpm_is_learned_from_the_first_answer(sim, workers: Workers, r) -> None:
    sim.configure(rpm=20, latency_ms=20)
    workers.start(concurrency=4, LLM_RPM_LIMIT="auto")
    first = submit_chapter("auto", 1, OUTLINE, versions=1)
    assert first.wait(timeout=60, progress=False).status == "succeeded"
    learned = [r.hget(k, "rpm") for k in r.scan_iter(C.KEY_LEARNED.format(scope="*"))]
    assert learned == ["20"]


@pytest.mark.slow
def test_auto_rpm_paces_every_worker_without_429s(sim, workers: Workers, monkeypatch) -> None:
    # 71 calls against a cap of 60 a minute, the workers told nothing: the first
    # answer teaches the cap, and the other 70 never meet a 429 (unpaced, the
    # 61st call of the minute would).
    sim.configure(rpm=60, latency_ms=20)
    monkeypatch.setenv("WRITER_MAX_PARALLEL_REQUESTS", "10")
    for n in range(2):
        workers.start(f"w{n}", concurrency=4, LLM_RPM_LIMIT="auto")
    first = submit_chapter("auto", 1, OUTLINE, versions=1)
    assert first.wait(timeout=60, progress=False).status == "succeeded"
    handles = [submit_chapter("auto", n + 2, OUTLINE, versions=10) for n in range(7)]
    assert [h.wait(timeout=300, progress=False).status for h in handles] == ["succeeded"] * 7
    assert sim.stats()["by_status"] == {"200": 71}


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_auto_tpm_learns_the_cap_and_the_providers_count(sim, workers: Workers, r) -> None:
    sim.configure(tpm=6000, latency_ms=20)
    workers.start(concurrency=4, LLM_TPM_LIMIT="auto", LLM_MAX_TOKENS=1024)
    first = submit_chapter("tpm", 1, OUTLINE, versions=1)
    assert first.wait(timeout=60, progress=False).status == "succeeded"
    second = submit_chapter("tpm", 2, OUTLINE, versions=6)
    assert second.wait(timeout=120, progress=False).status == "succeeded"
    (key,) = list(r.scan_iter(C.KEY_LEARNED.format(scope="*")))
    assert r.hget(key, "tpm") == "6000"
    # The simulator charges prompt + 200 completion tokens, not prompt + max_tokens
    # (1024) as genfleet reserves: the ratio says the provider counts fewer.
    assert float(r.hget(key, "ratio") or 1) < 0.9
    assert sim.stats()["by_status"] == {"200": 7}
