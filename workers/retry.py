"""The one retry layer: how a provider error is classified and how long to wait.

The SDK's own retries are off (``max_retries=0``); only this module decides.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from genfleet import constants as C
from genfleet.errors import (
    LLMError,
    PermanentLLMError,
    RateLimitedError,
    TransientLLMError,
)

if TYPE_CHECKING:
    import openai

TRANSIENT_STATUSES = frozenset({408, 409, 429})


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a provider asked us to wait (``retry-after-ms`` or ``Retry-After``).

    Never raises: a value that is not a number of seconds or an HTTP date (``soon``,
    ``nan``, an impossible date) is no hint at all.
    """
    if not headers:
        return None
    try:
        raw_ms, raw = headers.get("retry-after-ms"), headers.get("retry-after")
    except Exception:  # a header mapping that cannot even be read
        return None
    from_ms = _seconds(raw_ms, scale=1000.0)
    return from_ms if from_ms is not None else _seconds(raw) if raw else None


def _seconds(raw: object, scale: float = 1.0) -> float | None:
    """A delay from a number of (milli)seconds or, at scale 1, an HTTP date."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        value = float(raw) / scale
    except ValueError:
        return _date_delay(raw) if scale == 1.0 else None
    return max(0.0, value) if math.isfinite(value) else None


def _date_delay(raw: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
        delay = parsed.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, delay) if math.isfinite(delay) else None


def classify(exc: Exception, *, provider: str, model: str) -> LLMError:
    """Map an ``openai`` SDK exception to genfleet's error tree."""
    import openai  # here: the producer imports this module without needing the SDK

    if isinstance(exc, openai.APITimeoutError):
        return TransientLLMError("the provider timed out", provider=provider, model=model)
    if isinstance(exc, openai.APIConnectionError):
        return TransientLLMError("cannot connect to the provider", provider=provider, model=model)
    if isinstance(exc, openai.APIStatusError):
        retry_after = parse_retry_after(exc.response.headers)
        return error_for_status(
            exc.status_code, _short_message(exc), retry_after, provider=provider, model=model
        )
    return PermanentLLMError(
        f"unexpected error: {exc.__class__.__name__}", provider=provider, model=model
    )


def error_for_status(
    status: int, message: str, retry_after: float | None, *, provider: str, model: str
) -> LLMError:
    """The error class of an HTTP status: 429, other transient, or permanent."""
    if status == 429:
        return RateLimitedError(
            message, status=status, retry_after_s=retry_after, provider=provider, model=model
        )
    if status in TRANSIENT_STATUSES or status >= 500:
        return TransientLLMError(
            message, status=status, retry_after_s=retry_after, provider=provider, model=model
        )
    return PermanentLLMError(message, status=status, provider=provider, model=model)


def _short_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        detail = body.get("message") or (body.get("error") or {}).get("message")
        if detail:
            return f"the provider refused the call: {str(detail)[:200]}"
    return f"the provider answered HTTP {exc.status_code}"


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter for the ``attempt``-th retry (1-based)."""
    cap = min(C.RETRY_MAX_DELAY_S, C.RETRY_INITIAL_DELAY_S * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, cap)


def retry_delay(error: TransientLLMError, attempt: int) -> float:
    """How long to wait before the next attempt: Retry-After if given, else backoff."""
    if error.retry_after_s is not None:
        return min(error.retry_after_s, C.RETRY_AFTER_MAX_S)
    return backoff_delay(attempt)
