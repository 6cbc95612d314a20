"""Tasks for bench/rate_limits.py only (workers load them with ``-I bench.celery_tasks``).

``bench.direct_call`` is what users write without genfleet: the SDK called straight
from a task, Celery's ``rate_limit`` as the only brake, and a retry after the
provider's Retry-After on a 429. ``bench.gateway_call`` makes the same call through
genfleet's gateway.
"""

from __future__ import annotations

import threading
from typing import Any

import openai
from celery import Task

from workers import runtime
from workers.app import app
from workers.gateway import CallContext, ChatRequest, RetryLater
from workers.retry import parse_retry_after

DONE_KEY = "bench:done"
SEEN_429_KEY = "bench:429"
_local = threading.local()


def _client() -> openai.OpenAI:
    if not hasattr(_local, "client"):
        s = runtime.settings()
        _local.client = openai.OpenAI(
            api_key=s.api_key(), base_url=s.openai_base_url, max_retries=0, timeout=60
        )
    return _local.client


def _messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


@app.task(name="bench.direct_call", bind=True, acks_late=True, max_retries=None)
def direct_call(self: Task, prompt: str, max_tokens: int) -> None:
    try:
        _client().chat.completions.create(
            model="bench",
            messages=_messages(prompt),  # type: ignore[arg-type]
            max_tokens=max_tokens,
        )
    except openai.RateLimitError as e:
        runtime.store().r.incr(SEEN_429_KEY)
        wait = parse_retry_after(e.response.headers) or 1.0
        raise self.retry(countdown=wait) from None
    runtime.store().r.incr(DONE_KEY)


@app.task(name="bench.gateway_call", bind=True, acks_late=True, max_retries=None)
def gateway_call(self: Task, prompt: str, max_tokens: int, n: int) -> None:
    request = ChatRequest(messages=_messages(prompt), model="bench", max_tokens=max_tokens)
    try:
        runtime.gateway().chat(request, CallContext(job_id="bench", step=str(n)))
    except RetryLater as e:
        raise self.retry(countdown=e.delay_s) from None
    runtime.store().r.incr(DONE_KEY)
