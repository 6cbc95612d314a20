"""The values that go in and out of the LLM gateway."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genfleet.store import Rider


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make."""

    messages: list[dict[str, Any]]
    model: str
    max_tokens: int
    temperature: float = 0.7
    response_format: dict[str, Any] | None = None
    seed: int | None = None  # a version index: keeps parallel versions distinct

    def body(self) -> dict[str, Any]:
        """The chat completions body (the same online and in a batch input file)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.response_format is not None:
            body["response_format"] = self.response_format
        if self.seed is not None:
            body["seed"] = self.seed
        return body


@dataclass
class ChatResult:
    """What a chat call gave back, with its cost."""

    text: str
    model: str
    tokens_in: int
    tokens_out: int
    finish_reason: str
    attempts: int
    seconds: float
    cached: bool = False
    key_id: str = ""
    limiter_wait_s: float = 0.0
    effective_concurrency: int = 0
    cost_usd: float | None = 0.0  # None: the model has no price (see genfleet.prices)


@dataclass
class CallContext:
    """Who is calling and with which job options (never a key)."""

    job_id: str = ""
    step: str = ""
    attempts_used: int = 0  # attempts made by earlier deliveries of the same task
    rate_limited_used: int = 0  # of which answered 429 (they have their own budget)
    job_concurrency: int = 0  # this job's own cap on its calls in flight (0 = none)
    throttle_ms: int = 0  # minimum gap between this job's calls
    cache: bool | None = None  # None: within one run of a step, and temperature-0 calls
    max_retries: int | None = None  # the job's own retry count (None: LLM_MAX_RETRIES)
    max_cost_usd: float | None = None  # the job's budget (workers.budget)
    api_mode: str = "online"  # or "batch": through the provider's Batch API (workers.batch)
    run_round: int | None = None  # the job's resumes so far, when the step knows it
    asked_before: bool = True  # False: no earlier attempt of this step in this run
    inputs: dict[str, str | None] = field(default_factory=dict)  # read with the step's start
    hold_release: bool = False  # a success's release waits to ride with the step's result
    held: HeldRelease | None = None  # ... the one waiting now


@dataclass
class HeldRelease:
    """A successful call's lease release (with its counters and cache entry), held to
    ride in the same script call as the step's result (``JobStore.save_step``):
    ``rider_for(ok)`` for a result that is a success or not (a success's answer is not
    kept in the step's own cache entry too: the stored result serves a second
    delivery), then ``done(ridden)``; else ``flush()`` releases it on its own."""

    rider_for: Callable[[bool], Rider]
    flush: Callable[[], None]
    done: Callable[[Any], None]


class RetryLater(Exception):
    """The next attempt should happen in ``delay_s``; re-schedule rather than block."""

    def __init__(self, delay_s: float, attempts: int, reason: str, rate_limited: int = 0) -> None:
        super().__init__(f"retry in {delay_s:.1f}s after {attempts} attempt(s): {reason}")
        self.delay_s = delay_s
        self.attempts = attempts
        self.reason = reason
        self.rate_limited = rate_limited
