"""One chat call over HTTP, under a wall-clock deadline, with its answer checked.

The SDK's timeout is per read: a provider that drips its body a byte at a time
would hold a call for ever. Here the body is read in chunks and the call is
abandoned once ``LLM_TIMEOUT_S`` has passed since it began, whatever the provider
does. The answer is parsed here too, so that an HTML page, an empty body, ``{}``,
``choices: []`` or ``content: null`` becomes a ``MalformedAnswerError`` (transient,
naming status, provider and model) instead of an exception from deep inside.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genfleet.errors import CallDeadlineError, MalformedAnswerError, TransientLLMError
from workers.gateway_types import ChatRequest, ChatResult
from workers.retry import classify

if TYPE_CHECKING:  # the SDK takes seconds to import: loaded by the first call, not by the producer
    import openai

HeaderSink = Callable[[Any], None]
MAX_BODY_BYTES = 32 * 1024 * 1024  # an answer bigger than this is not a chat answer


def call_chat(
    client: openai.OpenAI, request: ChatRequest, provider: str, timeout_s: float, attempts: int,
    on_headers: HeaderSink | None = None,
) -> ChatResult:  # fmt: skip
    """Make one chat call; raises ``LLMError`` (``TransientLLMError`` when a retry can help).

    ``on_headers`` gets the answer's headers, error answers' included (``auto`` limits).
    """
    import openai

    started = time.monotonic()
    deadline = started + timeout_s
    where = _Where(provider, request.model)
    try:
        # The SDK's own way to send a request as it is (``client.post``, its "custom
        # requests"): ``chat.completions.create`` would first walk every parameter,
        # message and JSON schema to transform them, which they never need. The
        # header asks for the answer unread (what ``with_streaming_response`` sets).
        response = client.post(
            "/chat/completions", cast_to=_chat_completion(), body=request.body(),
            options={"timeout": timeout_s, "headers": _request_headers()},
        )  # fmt: skip
        try:
            status = response.status_code
            if on_headers is not None:
                on_headers(response.headers)
            cut = _deadlines.add(deadline, lambda: _cut(response))
            try:
                body = _read_body(response, deadline, timeout_s, where)
            finally:
                _deadlines.cancel(cut)
        finally:
            response.close()
    except openai.OpenAIError as e:
        if isinstance(e, openai.APIStatusError) and on_headers is not None:
            on_headers(e.response.headers)
        raise classify(e, provider=provider, model=request.model) from e
    result = parse_answer(body, status, where)
    result.attempts = attempts
    result.seconds = time.monotonic() - started
    return result



# The SDK's raw-response header (openai._constants.RAW_RESPONSE_HEADER): "stream" sends
# the request with the body left unread and returns the SDK's APIResponse.
_RAW_RESPONSE = {"X-Stainless-Raw-Response": "stream"}

# The SDK's telemetry headers (its language, version, OS, runtime; each request's retry
# count and read timeout). No provider needs them, and each header is parsed, checked
# and written again on every request: genfleet's clients leave them out (``Omit``, the
# SDK's own way to drop a default header).
SDK_PLATFORM_HEADERS = (
    "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
    "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async",
)  # fmt: skip
_PER_REQUEST_HEADERS = ("x-stainless-retry-count", "x-stainless-read-timeout")


@functools.cache
def omitted(names: tuple[str, ...]) -> dict[str, Any]:
    """Headers that tell the SDK to leave ``names`` out."""
    import openai

    return {name: openai.Omit() for name in names}


@functools.cache
def _request_headers() -> dict[str, Any]:
    return {**_RAW_RESPONSE, **omitted(_PER_REQUEST_HEADERS)}


def _chat_completion() -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion


class _Deadlines:
    """Calls due at monotonic times, from one thread per process (a timer thread per
    call would cost a thread start on every call)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._pid = 0

    def add(self, at: float, action: Callable[[], None]) -> int:
        with self._cond:
            if self._pid != os.getpid():  # first use, or a forked child: its own thread
                self._pid = os.getpid()
                self._due, self._cancelled = [], set()
                threading.Thread(target=self._run, name="call-deadlines", daemon=True).start()
            token = next(self._ids)
            heapq.heappush(self._due, (at, token, action))
            if self._due[0][1] == token:
                self._cond.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._cancelled.add(token)
            if len(self._cancelled) > 64 and 2 * len(self._cancelled) > len(self._due):
                # Most entries are dead: drop them now rather than at their due time.
                self._due = [d for d in self._due if d[1] not in self._cancelled]
                heapq.heapify(self._due)
                self._cancelled.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._due and self._due[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._due)[1])
                wait = self._due[0][0] - time.monotonic() if self._due else None
                if wait is None or wait > 0:
                    self._cond.wait(wait)
                    continue
                _, token, action = heapq.heappop(self._due)
            action()


_deadlines = _Deadlines()


@dataclass(frozen=True)
class _Where:
    provider: str
    model: str

    def error(self, cls: type[TransientLLMError], message: str, status: int | None) -> Any:
        return cls(message, status=status, provider=self.provider, model=self.model)


def _read_body(response: Any, deadline: float, timeout_s: float, where: _Where) -> bytes:
    """The whole body, or an error once the deadline has passed or the body broke off."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():  # as received: no waiting for a full buffer
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                message = f"no complete answer within LLM_TIMEOUT_S={timeout_s:g}s; abandoned"
                raise where.error(CallDeadlineError, message, None)
            if size > MAX_BODY_BYTES:
                raise where.error(MalformedAnswerError, "the answer is too big", 200)
    except TransientLLMError:
        raise
    except Exception as e:  # the transport's own errors: the body broke off or stalled
        if time.monotonic() > deadline:  # cut by _cut at the deadline
            message = f"no complete answer within LLM_TIMEOUT_S={timeout_s:g}s; abandoned"
            raise where.error(CallDeadlineError, message, None) from None
        message = f"the answer broke off ({e.__class__.__name__})"
        raise where.error(TransientLLMError, message, None) from None
    return b"".join(chunks)


def _cut(response: Any) -> None:
    """At the deadline: shut the call's socket, so a read blocked on a provider that
    drips (each byte within the read timeout) returns at once."""
    try:
        stream = response.http_response.extensions["network_stream"]
        stream.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    except Exception:  # no socket to cut (already closed): the read ends by itself
        return


def parse_answer(body: bytes, status: int, where: _Where) -> ChatResult:
    """A ``ChatResult`` from a 2xx body; ``MalformedAnswerError`` if it is not a chat answer."""

    def bad(what: str) -> MalformedAnswerError:
        error: MalformedAnswerError = where.error(
            MalformedAnswerError, f"malformed answer: {what}", status
        )
        return error

    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad("not JSON" if body.strip() else "empty body") from None
    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad("no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise bad("no message content")
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    answered = doc.get("model")
    reason = choices[0].get("finish_reason")
    return ChatResult(
        text=content,
        model=answered if isinstance(answered, str) and answered else where.model,
        tokens_in=_count(usage.get("prompt_tokens")),
        tokens_out=_count(usage.get("completion_tokens")),
        finish_reason=reason if isinstance(reason, str) else "",
        attempts=1,
        seconds=0.0,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
