"""OpenAI-style error answers: one exception the server turns into a JSON body."""

from __future__ import annotations

import math
from collections.abc import Mapping

from simulator.caps import CapRejection

MODERATION_MESSAGE = "Your request was rejected as a result of our safety system."
_INJECTED_MESSAGES = {
    "400": "Simulated bad request.",
    "429": "Rate limit reached (simulated). Please try again in 1s.",
    "500": "The server had an error while processing your request.",
    "503": "The engine is currently overloaded, please try again later.",
}


class ApiError(Exception):
    """An error answer with OpenAI's body shape; the middleware sends it as JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        err_type: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
        self.headers = dict(headers or {})


def retry_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) and ``retry-after-ms`` for a wait."""
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def cap_error(rejection: CapRejection) -> ApiError:
    """The 429 for a request the per-key caps refused."""
    unit = "RPM" if rejection.kind == "requests" else "TPM"
    head = f"{rejection.kind} per min ({unit}): Limit {rejection.limit}."
    if rejection.too_large:
        message = f"Request too large for {head}"
    else:
        wait = rejection.retry_after_s
        message = f"Rate limit reached for {head} Please try again in {wait:.3f}s."
    headers = retry_headers(rejection.retry_after_s)
    return ApiError(429, message, rejection.kind, "rate_limit_exceeded", headers)


def injected_error(kind: str, retry_after_s: float = 1.0) -> ApiError:
    """The answer for an error drawn from ``error_rates`` (an HTTP status as text)."""
    status = int(kind)
    message = _INJECTED_MESSAGES.get(kind, f"Simulated error {status}.")
    if status == 429:
        return ApiError(
            429, message, "requests", "rate_limit_exceeded", retry_headers(retry_after_s)
        )
    return ApiError(status, message, "server_error" if status >= 500 else "invalid_request_error")


def moderation_error() -> ApiError:
    """The 400 for an image prompt the safety system rejects."""
    return ApiError(400, MODERATION_MESSAGE, code="content_policy_violation")
