"""The step execution core against a hostile provider: the real gateway, a real Redis,
the real ``openai`` SDK over HTTP to the simulator. Counts are the simulator's.

Malformed 200s, a dripping body, a garbage ``Retry-After`` and an error that echoes
the ``Authorization`` header each end as a typed error or a retried success, with
the concurrency lease given back every time; step claims let one attempt call;
resume is one compare-and-set; job records live as long as the job; a refused key
is locked out by its fingerprint.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from genfleet import constants as C
from genfleet.claims import StepClaims
from genfleet.errors import (
    CallDeadlineError,
    JobBusyError,
    MalformedAnswerError,
    PermanentLLMError,
)
from genfleet.records import JobMetrics, JobRecord, StepResult
from genfleet.settings import load_settings
from genfleet.store import JobKeys, JobStore
from producer.clusterstats import disabled_reasons
from simulator.textgen import prompt_hash
from workers.gateway import CallContext, ChatRequest, LLMGateway
from workers.keypool import ApiKey, KeyPool, disabled_key
from workers.limiter import Limits, Scope

KEY = "sk-test-secret-0123456789"


def _gateway(sim, r: redis.Redis, **settings: object) -> LLMGateway:
    values = {"openai_base_url": sim.base_url, "openai_api_key": KEY, "llm_cache_ttl_s": 0}
    return LLMGateway(load_settings(**{**values, **settings}), r)


def _request(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], model="gpt-4o-mini",
                       max_tokens=50)  # fmt: skip


def _calls(sim, request: ChatRequest) -> int:
    return int(sim.stats()["chat_calls_by_prompt"].get(prompt_hash(request.messages), 0))


def _in_flight(gateway: LLMGateway) -> int:
    key = gateway.pool.keys[0]
    snap = gateway.limiter.snapshot(Scope(key.provider, key.key_id, "gpt-4o-mini"), key.limits)
    return int(snap["in_flight"])


@pytest.mark.parametrize("kind", ["html", "empty", "not_json", "{}", "no_choices", "null_content"])
def test_a_malformed_200_is_retried_and_its_lease_comes_back(sim, r, kind: str) -> None:
    sim.configure(latency_ms=0, malformed_patterns={f"bad {kind}": f"{kind}*1"})
    gateway = _gateway(sim, r, llm_max_retries=2)
    request = _request(f"bad {kind}")
    result = gateway.chat(request, CallContext(job_id="j", step="s"))
    assert result.text and result.attempts == 2
    assert _calls(sim, request) == 2
    assert _in_flight(gateway) == 0


def test_an_always_malformed_answer_is_a_typed_error_naming_status_provider_model(sim, r) -> None:
    sim.configure(latency_ms=0, malformed_patterns={"always bad": "null_content"})
    gateway = _gateway(sim, r, llm_max_retries=1)
    request = _request("always bad")
    with pytest.raises(MalformedAnswerError) as caught:
        gateway.chat(request, CallContext(job_id="j", step="s"))
    text = str(caught.value)
    assert "status=200" in text and sim.base_url in text and "gpt-4o-mini" in text
    assert caught.value.attempts == 2 and _calls(sim, request) == 2
    assert _in_flight(gateway) == 0


def test_llm_timeout_is_a_wall_clock_deadline_against_a_drip(sim, r) -> None:
    sim.configure(latency_ms=0, drip_s=0.2)  # a ~1 KB answer would take minutes
    gateway = _gateway(sim, r, llm_max_retries=0, llm_timeout_s=1.5)
    request = _request("drip")
    with pytest.raises(CallDeadlineError):
        gateway.chat(request, CallContext(job_id="j", step="s"))
    assert _calls(sim, request) == 1
    assert _in_flight(gateway) == 0


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_a_garbage_retry_after_is_no_hint_not_a_crash(sim, r) -> None:
    sim.configure(latency_ms=0, retry_after_text="soon", fail_patterns={})
    sim.configure(error_rates={"429": 1.0})
    gateway = _gateway(sim, r, llm_max_retries=0)
    request = _request("limited")
    ctx = CallContext(job_id="j", step="s")
    with pytest.raises(Exception) as caught:
        gateway.chat(request, ctx)
    assert caught.type.__name__ in ("RetryLater", "RateLimitedError")  # backoff, not ValueError
    assert _in_flight(gateway) == 0


def test_a_key_echoed_in_an_error_is_masked(sim, r) -> None:
    sim.configure(latency_ms=0, echo_auth=True, fail_patterns={"echo me": 400})
    gateway = _gateway(sim, r, llm_max_retries=0)
    with pytest.raises(PermanentLLMError) as caught:
        gateway.chat(_request("echo me"), CallContext(job_id="j", step="s"))
    text = str(caught.value)
    assert "Authorization" in text  # the provider did echo it ...
    assert KEY not in text and "[secret]" in text  # ... and the key is masked
    assert _in_flight(gateway) == 0


def test_a_live_claim_keeps_a_second_attempt_out_until_released_or_expired(r) -> None:
    claims = StepClaims(r, ttl_s=60, lease_s=1.0)
    assert claims.claim("job", "s1", "a").held
    second = claims.claim("job", "s1", "b")
    assert not second.held and second.owner == "a" and 0 < second.left_s <= 1.0
    assert claims.claim("job", "s1", "a").held  # renewing is claiming again
    assert claims.live("job") == ["s1"]
    assert not claims.release("job", "s1", "b")  # not b's to release
    assert claims.release("job", "s1", "a")
    assert claims.claim("job", "s1", "b").held and claims.live("job") == ["s1"]


def test_an_expired_claim_is_taken_over(r) -> None:
    claims = StepClaims(r, ttl_s=60, lease_s=0.2)
    assert claims.claim("job", "s1", "dead").held
    r.hset("genfleet:job:job:claims", "s1", "dead 1.000")  # expired long ago (Redis time)
    taken = claims.claim("job", "s1", "alive")
    assert taken.held and taken.took_over and taken.owner == "dead"
    assert claims.live("job") == ["s1"]


def _store(r: redis.Redis) -> JobStore:
    return JobStore(r, ttl_s=600)


def _job(store: JobStore, steps: int = 2) -> str:
    steps_ids = [f"v{n}" for n in range(steps)]
    record = JobRecord(
        id=f"chapter-{time.time_ns()}", kind="chapter", spec={}, step_ids=steps_ids,
        created_at=time.time(),
    )  # fmt: skip
    store.create(record, {"outline": "x"})
    return record.id


def test_a_job_lives_while_queued_or_running_and_expires_from_its_end(r) -> None:
    store = _store(r)
    job_id = _job(store)
    keys = JobKeys.of(job_id)
    store.mark_started(job_id, "v0")
    store.save_step(job_id, StepResult(step_id="v0", ok=True))
    assert all(r.ttl(k) == -1 for k in (keys.job, keys.inputs, keys.ok))  # no TTL while live
    assert store.finish(job_id, C.STATUS_PARTIAL, JobMetrics(), None)
    assert all(0 < r.ttl(k) <= 600 for k in (keys.job, keys.inputs, keys.ok))
    assert store.reopen(job_id) == 1
    assert r.ttl(keys.job) == -1  # live again
    store.cancel(job_id)
    store.save_step(job_id, StepResult(step_id="v1", ok=False))  # a late step of a cancelled job
    assert 0 < r.ttl(keys.failed) <= 600


def test_of_concurrent_resumes_exactly_one_reopens_the_job(r) -> None:
    store = _store(r)
    job_id = _job(store)
    store.finish(job_id, C.STATUS_FAILED, JobMetrics(), "boom")
    outcomes: list[object] = []

    def resume() -> None:
        try:
            outcomes.append(store.reopen(job_id))
        except JobBusyError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=resume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [o for o in outcomes if not isinstance(o, JobBusyError)] == [1]
    assert store.status(job_id) == C.STATUS_RUNNING


def test_resume_is_refused_while_a_step_holds_a_live_claim(r) -> None:
    store = _store(r)
    job_id = _job(store)
    claims = StepClaims(r, ttl_s=600)
    assert claims.claim(job_id, "v0", "worker-a").held
    assert store.cancel(job_id)
    with pytest.raises(JobBusyError, match="v0"):
        store.reopen(job_id)
    assert store.status(job_id) == C.STATUS_CANCELLED
    claims.release(job_id, "v0", "worker-a")
    assert store.reopen(job_id) == 1


def _claim(r: redis.Redis, job_id: str, step_id: str) -> tuple[str, float, float]:
    """A claim's owner, start and expiry as stored: "owner @started expiry"."""
    owner, started, expiry = r.hget(JobKeys.of(job_id).claims, step_id).rsplit(" ", 2)
    return owner, float(started.lstrip("@")), float(expiry)


def test_a_step_runs_while_it_holds_its_claim_whose_start_survives_renewals(r) -> None:
    store = _store(r)
    job_id = _job(store)
    assert store.progress(job_id).running == 0
    before = time.time()
    assert store.begin_step(job_id, "v0", "worker-a", C.LEASE_S).record is not None
    _, started, expiry = _claim(r, job_id, "v0")
    assert before - 1 <= started <= time.time() + 1  # Redis time, on this machine
    p = store.progress(job_id)
    assert (p.status, p.running, p.ok) == (C.STATUS_RUNNING, 1, 0)
    assert store.load(job_id).running == {"v0": started}
    time.sleep(0.05)
    assert store.claims.renew(job_id, "v0", "worker-a")
    assert store.claims.claim(job_id, "v0", "worker-a").held  # claiming again renews too
    owner, kept, renewed = _claim(r, job_id, "v0")
    assert (owner, kept) == ("worker-a", started) and renewed > expiry
    assert store.load(job_id).running == {"v0": started}
    store.save_step(job_id, StepResult(step_id="v0", ok=True), "worker-a")
    p = store.progress(job_id)
    assert (p.running, p.ok) == (0, 1) and store.load(job_id).running == {}
    assert not store.claims.renew(job_id, "v0", "worker-a")  # given back with the result
    assert not r.exists(JobKeys.of(job_id).running)  # nothing writes the old hash


def test_a_dead_attempts_claim_runs_until_taken_over_and_a_given_back_one_waits(r) -> None:
    store = _store(r)
    job_id = _job(store)
    claims = JobKeys.of(job_id).claims
    assert store.begin_step(job_id, "v0", "dead", C.LEASE_S).record is not None
    r.hset(claims, "v0", "dead @100.000 1.000")  # died long ago (Redis time)
    assert store.progress(job_id).running == 1  # until a redelivery takes it over
    assert store.load(job_id).running == {"v0": 100.0}
    start = store.begin_step(job_id, "v0", "alive", C.LEASE_S)
    assert start.took_over_from == "dead" and start.tried
    assert store.load(job_id).running["v0"] > time.time() - 60  # its own start
    assert store.claims.release(job_id, "v0", "alive")  # RetryLater: re-scheduled
    assert store.progress(job_id).running == 0 and store.load(job_id).running == {}
    store.mark_started(job_id, "v1")  # outside a claim: shown running, holds nothing
    assert store.progress(job_id).running == 1 and "v1" in store.load(job_id).running
    assert store.claims.live(job_id) == []
    store.save_step(job_id, StepResult(step_id="v1", ok=True))
    assert store.progress(job_id).running == 0


def test_a_claim_an_older_version_wrote_is_still_read(r) -> None:
    store = _store(r)
    job_id = _job(store)
    keys = JobKeys.of(job_id)
    r.hset(keys.running, "v0", "123.5")  # what an older worker's begin wrote
    r.hset(keys.claims, "v0", "old:1:ab 9999999999.000")  # live: "owner expiry"
    assert store.load(job_id).running == {"v0": 123.5}
    assert store.progress(job_id).running == 1
    busy = store.begin_step(job_id, "v0", "new", C.LEASE_S)
    assert busy.busy_owner == "old:1:ab" and busy.busy_left_s > 0
    assert store.claims.live(job_id) == ["v0"]
    assert store.cancel(job_id)
    with pytest.raises(JobBusyError, match="v0"):
        store.reopen(job_id)
    r.hset(keys.claims, "v0", "old:1:ab 1.000")  # ... expired: taken over
    assert store.reopen(job_id) == 1
    start = store.begin_step(job_id, "v0", "new", C.LEASE_S)
    assert start.took_over_from == "old:1:ab"
    assert _claim(r, job_id, "v0")[0] == "new"
    assert store.load(job_id).running["v0"] > 123.5


def test_a_refused_key_is_locked_by_fingerprint_briefly_then_longer(r) -> None:
    limits = Limits(4)
    old = ApiKey("key1", "http://p/v1", limits, "sk-old-0000000000")
    pool = KeyPool([old], r, 5.0)
    assert pool.disable(old, "HTTP 401") == C.DISABLED_KEY_FIRST_S
    assert pool.usable() == []
    assert 0 < r.ttl(disabled_key(old.secret)) <= C.DISABLED_KEY_FIRST_S
    assert pool.disable(old, "HTTP 401") == 2 * C.DISABLED_KEY_FIRST_S  # repeats: longer
    assert disabled_reasons(r) == {"key1": "HTTP 401"}
    fixed = ApiKey("key1", "http://p/v1", limits, "sk-new-1111111111")  # operator fixed it
    assert KeyPool([fixed], r, 5.0).usable() == [fixed]
