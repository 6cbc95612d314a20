"""Settings of the simulated provider: one frozen dataclass that checks its own values."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simulator.faults import parse_malformed_rule
from simulator.garbage import parse_rule

TIMEOUT_ERROR = "timeout"  # the error_rates key that makes a request hang
INJECTABLE_STATUSES = frozenset(range(400, 600))
MAX_SIDE = 1024
MIN_SIDE = 16

# Fields that POST /admin/config may change while the server runs.
RUNTIME_FIELDS = frozenset(
    {
        "latency_ms",
        "jitter_ms",
        "per_token_ms",
        "rpm",
        "tpm",
        "error_rates",
        "timeout_s",
        "output_tokens",
        "image_task_seconds",
        "fail_patterns",
        "retry_after_s",
        "garbage_patterns",
        "valid_keys",
        "malformed_patterns",
        "drip_s",
        "retry_after_text",
        "echo_auth",
        "batch_seconds",
        "batch_expire_first",
    }
)


def _check_error_key(key: str) -> str:
    """Return ``key`` if it names an injectable error, else raise ValueError."""
    if key == TIMEOUT_ERROR:
        return key
    if key.isdigit() and int(key) in INJECTABLE_STATUSES:
        return key
    raise ValueError(f"error kind {key!r} must be an HTTP status 400-599 or 'timeout'")


def _check_rate(key: str, rate: float) -> float:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"error rate for {key!r} is {rate}; allowed range is 0..1")
    return rate


def parse_error_rate(text: str) -> tuple[str, float]:
    """Parse ``"429=0.1"`` into ``("429", 0.1)``; raise ValueError on bad input."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"error rate {text!r} must look like STATUS=RATE, e.g. 429=0.1")
    key = _check_error_key(key.strip())
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"error rate {text!r}: {value!r} is not a number") from None
    return key, _check_rate(key, rate)


def _check_min(name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ValueError(f"{name}={value} is out of range; it must be >= {minimum}")


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated provider behaves; see the fields' comments for units."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    latency_ms: float = 200.0  # base latency of every answer
    jitter_ms: float = 0.0  # uniform +- around the base latency
    per_token_ms: float = 0.0  # added per completion token
    rpm: int = 0  # requests per minute per API key; 0 = no cap
    tpm: int = 0  # tokens per minute per API key; 0 = no cap
    error_rates: Mapping[str, float] = field(default_factory=dict)
    timeout_s: float = 30.0  # how long an injected "timeout" hangs
    output_tokens: int = 200  # completion length when max_tokens allows
    valid_keys: tuple[str, ...] = ()  # non-empty: any other key gets 401
    forbidden_keys: tuple[str, ...] = ()  # these keys get 403
    seed: int = 0  # seeds error injection and jitter
    moderation_words: tuple[str, ...] = ("forbidden",)
    task_failure_words: tuple[str, ...] = ("task-failure",)  # async image tasks that fail
    image_task_seconds: float = 1.0  # how long an async image task takes
    # A chat request whose messages contain one of these texts gets that HTTP status:
    # deterministic fault injection for one chosen step of a job.
    fail_patterns: Mapping[str, int] = field(default_factory=dict)
    retry_after_s: float = 1.0  # the Retry-After of injected 429s
    # A chat request whose messages contain one of these texts gets a spoiled answer
    # (see simulator/garbage.py): "invalid", "truncated", "empty", "short", "kind*N".
    garbage_patterns: Mapping[str, str] = field(default_factory=dict)
    # A hostile provider (see simulator/faults.py): malformed 200 bodies for requests
    # with these texts, answers dripped a byte every drip_s, a garbage Retry-After on
    # injected 429s, error messages that repeat the Authorization header.
    malformed_patterns: Mapping[str, str] = field(default_factory=dict)
    drip_s: float = 0.0
    retry_after_text: str = ""
    echo_auth: bool = False
    batch_seconds: float = 2.0  # a batch is answered this long after it was created
    batch_expire_first: int = 0  # the first N batches (since start or reset) expire half-done

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port} is out of range; allowed range is 0..65535")
        for name in (
            "latency_ms",
            "jitter_ms",
            "per_token_ms",
            "timeout_s",
            "image_task_seconds",
            "retry_after_s",
            "drip_s",
            "batch_seconds",
        ):
            _check_min(name, getattr(self, name), 0.0)
        for name in ("rpm", "tpm", "batch_expire_first"):
            _check_min(name, getattr(self, name), 0)
        _check_min("output_tokens", self.output_tokens, 1)
        rates = {
            _check_error_key(str(k)): _check_rate(str(k), float(v))
            for k, v in self.error_rates.items()
        }
        total = sum(rates.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"error rates add up to {total:.3f}; they must add up to <= 1")
        object.__setattr__(self, "error_rates", rates)
        patterns = {str(k): int(_check_error_key(str(v))) for k, v in self.fail_patterns.items()}
        object.__setattr__(self, "fail_patterns", patterns)
        object.__setattr__(self, "valid_keys", tuple(self.valid_keys))
        for rule in self.garbage_patterns.values():
            parse_rule(str(rule))
        object.__setattr__(self, "garbage_patterns", dict(self.garbage_patterns))
        for rule in self.malformed_patterns.values():
            parse_malformed_rule(str(rule))
        object.__setattr__(self, "malformed_patterns", dict(self.malformed_patterns))

    def updated(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Return a copy with run-time ``changes`` applied; raise ValueError on bad ones."""
        unknown = sorted(set(changes) - RUNTIME_FIELDS)
        if unknown:
            raise ValueError(f"cannot change {', '.join(unknown)} at run time")
        return dataclasses.replace(self, **changes)

    def runtime_view(self) -> dict[str, Any]:
        """The fields that may change at run time, as JSON-ready values."""
        return {name: getattr(self, name) for name in sorted(RUNTIME_FIELDS)} | {
            "error_rates": dict(self.error_rates),
            "fail_patterns": dict(self.fail_patterns),
            "valid_keys": list(self.valid_keys),
            "garbage_patterns": dict(self.garbage_patterns),
            "malformed_patterns": dict(self.malformed_patterns),
        }
