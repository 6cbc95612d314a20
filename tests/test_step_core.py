"""The step execution core against a hostile provider: the real gateway, a real Redis,
the real ``openai`` SDK over HTTP to the simulator. Counts are the simulator's.

Malformed 200s, a dripping body, a garbage ``Retry-After`` and an error that echoes
the ``Authorization`` header each end as a typed error or a retried success, with
the concurrency lease given back every time; step claims let one attempt call.
"""

from __future__ import annotations

import pytest
import redis

from genfleet.claims import StepClaims
from genfleet.errors import CallDeadlineError, MalformedAnswerError, PermanentLLMError
from genfleet.settings import load_settings
from simulator.textgen import prompt_hash
from workers.gateway import CallContext, ChatRequest, LLMGateway
from workers.limiter import Scope

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
