"""Per-key request and token caps over an exact sliding 60-second window.

An admission made at time ``t`` counts until ``t + window`` and frees its share at
that instant, so a client that spreads exactly ``rpm`` requests over a minute is never
refused, and one that bursts ``rpm + 1`` is refused exactly once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass(frozen=True)
class CapRejection:
    """Why a request was refused and how long until the window frees enough."""

    kind: str  # "requests" or "tokens", as in OpenAI's error type
    limit: int
    retry_after_s: float
    too_large: bool = False  # the request alone needs more than the whole cap


@dataclass
class _KeyWindow:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0

    def evict(self, now: float, window_s: float) -> None:
        while self.requests and self.requests[0] + window_s <= now:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] + window_s <= now:
            self.token_sum -= self.tokens.popleft()[1]


class KeyCaps:
    """Sliding-window RPM and TPM caps for many API keys; the clock is injectable."""

    def __init__(self, now: Callable[[], float] = time.monotonic, window_s: float = WINDOW_S):
        self._now = now
        self._window_s = window_s
        self._keys: dict[str, _KeyWindow] = {}

    def admit(self, key: str, tokens: int, rpm: int, tpm: int) -> CapRejection | None:
        """Record one request of ``tokens`` for ``key`` or say why it must wait.

        A cap of 0 means no cap. A refused request is not recorded.
        """
        if rpm <= 0 and tpm <= 0:
            return None
        now = self._now()
        win = self._keys.setdefault(key, _KeyWindow())
        win.evict(now, self._window_s)
        request_wait = self._request_wait(win, now, rpm)
        token_wait = self._token_wait(win, now, tokens, tpm)
        if request_wait is not None:
            wait = max(request_wait, token_wait or 0.0)
            return CapRejection("requests", rpm, wait)
        if token_wait is not None:
            return CapRejection("tokens", tpm, token_wait, too_large=tokens > tpm)
        win.requests.append(now)
        win.tokens.append((now, tokens))
        win.token_sum += tokens
        return None

    def reset(self) -> None:
        """Forget every admission."""
        self._keys.clear()

    def _request_wait(self, win: _KeyWindow, now: float, rpm: int) -> float | None:
        if rpm <= 0 or len(win.requests) < rpm:
            return None
        # The request that must expire is the one rpm places from the end.
        return win.requests[len(win.requests) - rpm] + self._window_s - now

    def _token_wait(self, win: _KeyWindow, now: float, tokens: int, tpm: int) -> float | None:
        if tpm <= 0 or win.token_sum + tokens <= tpm:
            return None
        if tokens > tpm:
            return self._window_s
        excess = win.token_sum + tokens - tpm
        for stamp, amount in win.tokens:
            excess -= amount
            if excess <= 0:
                return stamp + self._window_s - now
        return self._window_s  # unreachable: the sum covers the excess

    def headers(self, key: str, rpm: int, tpm: int) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for ``key`` now (only the capped kinds)."""
        now = self._now()
        win = self._keys.setdefault(key, _KeyWindow())
        win.evict(now, self._window_s)
        out: dict[str, str] = {}
        if rpm > 0:
            oldest = win.requests[0] if win.requests else now
            out |= {
                "x-ratelimit-limit-requests": str(rpm),
                "x-ratelimit-remaining-requests": str(max(0, rpm - len(win.requests))),
                "x-ratelimit-reset-requests": _duration(oldest + self._window_s - now),
            }
        if tpm > 0:
            oldest = win.tokens[0][0] if win.tokens else now
            out |= {
                "x-ratelimit-limit-tokens": str(tpm),
                "x-ratelimit-remaining-tokens": str(max(0, tpm - win.token_sum)),
                "x-ratelimit-reset-tokens": _duration(oldest + self._window_s - now),
            }
        return out


def _duration(seconds: float) -> str:
    """A wait as OpenAI writes it: ``20ms``, ``1.5s``, ``1m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{seconds % 60:.0f}s"
