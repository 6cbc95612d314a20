"""The counters behind ``GET /stats``."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RECENT_CALLS = 5000


def key_id(key: str | None) -> str:
    """How ``/stats`` names an API key without showing it: its last 4 characters."""
    return f"key-...{key[-4:]}" if key else "anonymous"


class Stats:
    """Counters that ``GET /stats`` reports and ``POST /stats/reset`` zeroes."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter; calls in flight stay counted as in flight."""
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.key_requests: Counter[str] = Counter()
        self.key_status: dict[str, Counter[str]] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.chat_by_prompt: Counter[str] = Counter()
        # every chat call that got past authentication, whatever its answer
        self.chat_calls_by_prompt: Counter[str] = Counter()
        self.batch_lines = 0  # requests answered through the Batch API
        self.max_in_flight = self.in_flight
        # (arrival time, status, key id) of the latest calls, for tests that check timing
        self.recent: deque[tuple[float, str, str]] = deque(maxlen=RECENT_CALLS)

    def record(self, path: str, key: str, status: str, arrived: float = 0.0) -> None:
        """Count one answered ``/v1`` call (``arrived``: its wall-clock arrival time)."""
        self.recent.append((round(arrived, 4), status, key))
        self.requests += 1
        self.by_status[status] += 1
        self.by_path[path] += 1
        self.key_requests[key] += 1
        self.key_status.setdefault(key, Counter())[status] += 1

    def record_chat(self, prompt_hash: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one successful chat answer and its tokens."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.chat_by_prompt[prompt_hash] += 1

    def record_chat_call(self, prompt_hash: str) -> None:
        """Count one chat call that reached the provider (before its answer is known)."""
        self.chat_calls_by_prompt[prompt_hash] += 1

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Count a call as in flight while the block runs."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        """The JSON document of ``GET /stats``."""
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "by_key": {
                key: {"requests": n, "by_status": dict(self.key_status[key])}
                for key, n in self.key_requests.items()
            },
            "by_path": dict(self.by_path),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "chat_by_prompt": dict(self.chat_by_prompt),
            "chat_calls_by_prompt": dict(self.chat_calls_by_prompt),
            "batch_lines": self.batch_lines,
            "recent": [list(call) for call in self.recent],
        }
