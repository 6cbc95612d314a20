"""The LLM gateway: every LLM call of the project goes through ``LLMGateway.chat``.

One ``openai`` client per worker process (connection reuse), SDK retries off, and
the retry decisions of ``workers.retry``. Short waits block here; a wait longer than
``INLINE_WAIT_MAX_S`` raises ``RetryLater`` so the task re-schedules itself instead of
holding a worker slot.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import openai

from genfleet import constants as C
from genfleet.errors import SettingsError, TransientLLMError
from genfleet.settings import Settings
from workers.retry import classify, retry_delay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make."""

    messages: list[dict[str, Any]]
    model: str
    max_tokens: int
    temperature: float = 0.7
    response_format: dict[str, Any] | None = None
    seed: int | None = None


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


@dataclass
class CallContext:
    """Who is calling, for logs and errors (never a key)."""

    job_id: str = ""
    step: str = ""
    attempts_used: int = 0  # attempts made by earlier deliveries of the same task
    meta: dict[str, Any] = field(default_factory=dict)


class RetryLater(Exception):
    """The next attempt should happen in ``delay_s``; re-schedule rather than block."""

    def __init__(self, delay_s: float, attempts: int, cause: TransientLLMError) -> None:
        super().__init__(f"retry in {delay_s:.1f}s after {attempts} attempt(s): {cause}")
        self.delay_s = delay_s
        self.attempts = attempts
        self.cause = cause


class LLMGateway:
    """Makes chat calls with the project's one retry policy."""

    def __init__(self, settings: Settings) -> None:
        key = settings.api_key()
        if not key:
            raise SettingsError("OPENAI_API_KEY is not set: the LLM worker needs an API key")
        self.settings = settings
        self.provider = settings.openai_base_url or "https://api.openai.com/v1"
        self.max_retries = settings.llm_max_retries
        self.client = openai.OpenAI(
            api_key=key,
            base_url=self.provider,
            max_retries=0,
            timeout=settings.llm_timeout_s,
        )

    def chat(self, request: ChatRequest, ctx: CallContext) -> ChatResult:
        """Make the call, retrying transient errors; raises ``LLMError`` or ``RetryLater``."""
        attempts = ctx.attempts_used
        while True:
            attempts += 1
            try:
                return self._call_once(request, attempts)
            except TransientLLMError as e:
                e.job_id, e.step, e.attempts = ctx.job_id, ctx.step, attempts
                if attempts > self.max_retries:
                    raise
                delay = retry_delay(e, attempts)
                logger.warning(
                    "job %s step %s: attempt %d failed (%s); retry in %.2fs",
                    ctx.job_id, ctx.step, attempts, e, delay,
                )  # fmt: skip
                if delay > C.INLINE_WAIT_MAX_S:
                    raise RetryLater(delay, attempts, e) from e
                time.sleep(delay)

    def _call_once(self, request: ChatRequest, attempts: int) -> ChatResult:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        if request.seed is not None:
            kwargs["seed"] = request.seed
        started = time.monotonic()
        try:
            completion = self.client.chat.completions.create(**kwargs)
        except openai.OpenAIError as e:
            error = classify(e, provider=self.provider, model=request.model)
            error.attempts = attempts
            raise error from e
        choice = completion.choices[0]
        usage = completion.usage
        return ChatResult(
            text=choice.message.content or "",
            model=completion.model or request.model,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "",
            attempts=attempts,
            seconds=time.monotonic() - started,
        )


_lock = threading.Lock()
_gateway: LLMGateway | None = None


def get_gateway(settings: Settings) -> LLMGateway:
    """The process's one gateway (created on first use; reset after a fork)."""
    global _gateway
    with _lock:
        if _gateway is None:
            _gateway = LLMGateway(settings)
        return _gateway


def reset_gateway() -> None:
    """Forget the process's gateway (a forked child must not share the parent's sockets)."""
    global _gateway
    with _lock:
        _gateway = None
