"""``LLM_RPM_LIMIT=auto`` / ``LLM_TPM_LIMIT=auto``: limits learned from the provider.

OpenAI-compatible providers state their limits in every answer's headers:
``x-ratelimit-limit-requests``, ``x-ratelimit-limit-tokens``,
``x-ratelimit-remaining-{requests,tokens}`` and ``x-ratelimit-reset-{requests,tokens}``
(durations such as ``1s``, ``6m0s``, ``20ms``). The gateway hands every answer's
headers (429s included) to ``LearnedLimits.observe``, which keeps what it learned in
Redis (``genfleet:lim:learned:{scope}``) for the whole cluster; admission then paces
by the learned limits (``LearnedLimits.limits``).

Tokens: a provider may count a request differently from genfleet's estimate (another
tokenizer, ``max_tokens`` charged in full or not). The remaining-tokens header tells
how much the provider charged in its window; divided by what genfleet reserved in its
own window (its estimates, logged from the first call on) it gives the provider's
tokens per estimated token (``Learned.ratio``). Pacing then holds genfleet's window to
``limit x margin / ratio`` estimated tokens, so a TPM cap is held without 429 storms.
The ratio scales the limit, not the entries: the window keeps one unit whatever the
ratio was when each entry was made, so a measurement never feeds on earlier ones. In
auto-TPM mode a call keeps its reservation instead of being corrected to the usage,
as a provider's window does.

Unusable headers (missing, not numbers) are "no hint", never an error.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from genfleet import constants as C
from workers.limiter import Limits, Scope

logger = logging.getLogger(__name__)

CACHE_S = 1.0  # a process re-reads what the cluster learned at most this often
# Pace at this share of a learned limit: the provider's window and ours never align
# exactly (arrival delays, a 60 s window against our 61 s).
RPM_MARGIN = 0.95
TPM_MARGIN = 0.93  # tokens: the ratio is measured, so a little more room
UNKNOWN_TPM = 1_000_000_000  # before the limit is known: no pacing, but tokens are logged
RATIO_GAIN = 0.1  # how fast the token ratio follows a new measurement
RATIO_MIN, RATIO_MAX = 0.25, 8.0
MIN_SAMPLE_SHARE = 0.02  # measure the ratio only when our window holds this share of the limit
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateHeaders:
    """What one answer's ``x-ratelimit-*`` headers said (None: not said)."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None


def parse_duration(text: str) -> float | None:
    """``6m0s`` -> 360.0, ``20ms`` -> 0.02, ``1.5`` -> 1.5; None when unreadable."""
    text = text.strip()
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _count(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        return None
    return value if value >= 0 else None


def parse_headers(headers: Mapping[str, str]) -> RateHeaders:
    """The rate-limit headers of an answer (a case-insensitive mapping)."""
    reset_req = headers.get("x-ratelimit-reset-requests")
    reset_tok = headers.get("x-ratelimit-reset-tokens")
    return RateHeaders(
        limit_requests=_count(headers, "x-ratelimit-limit-requests"),
        limit_tokens=_count(headers, "x-ratelimit-limit-tokens"),
        remaining_requests=_count(headers, "x-ratelimit-remaining-requests"),
        remaining_tokens=_count(headers, "x-ratelimit-remaining-tokens"),
        reset_requests_s=parse_duration(reset_req) if reset_req else None,
        reset_tokens_s=parse_duration(reset_tok) if reset_tok else None,
    )


def limits_of(max_concurrent: int, rpm: int | str, tpm: int | str, lease_s: float) -> Limits:
    """``Limits`` from settings where rpm or tpm may be ``"auto"``."""
    auto_rpm, auto_tpm = rpm == "auto", tpm == "auto"
    return Limits(
        max_concurrent, 0 if auto_rpm else int(rpm), 0 if auto_tpm else int(tpm), lease_s,
        auto_rpm=auto_rpm, auto_tpm=auto_tpm,
    )  # fmt: skip


@dataclass(frozen=True)
class Learned:
    """What the cluster knows of one scope's limits."""

    rpm: int = 0
    tpm: int = 0
    ratio: float = 1.0


class LearnedLimits:
    """Reads and updates the limits learned from headers, per scope, in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._cache: dict[str, tuple[float, Learned]] = {}
        self._lock = threading.Lock()

    def learned(self, scope: Scope) -> Learned:
        """The scope's learned limits (cached for ``CACHE_S`` in this process)."""
        part = scope.redis_part()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(part)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
        raw = self.redis.hmget(C.KEY_LEARNED.format(scope=part), ["rpm", "tpm", "ratio"])
        value = Learned(int(float(raw[0] or 0)), int(float(raw[1] or 0)), float(raw[2] or 1.0))
        with self._lock:
            self._cache[part] = (now, value)
        return value

    def limits(self, scope: Scope, base: Limits) -> Limits:
        """``base`` with its auto limits replaced by the learned ones: no RPM limit
        until one is learned, and the token limit in genfleet's estimated tokens."""
        if not (base.auto_rpm or base.auto_tpm):
            return base
        got = self.learned(scope)
        tpm = base.tpm
        if base.auto_tpm:
            tpm = max(1, int(got.tpm * TPM_MARGIN / got.ratio)) if got.tpm else UNKNOWN_TPM
        rpm = max(1, int(got.rpm * RPM_MARGIN)) if got.rpm else 0
        return dataclasses.replace(base, rpm=rpm if base.auto_rpm else base.rpm, tpm=tpm)

    def observe(self, scope: Scope, base: Limits, headers: Mapping[str, str],
                tokens_in_window: int | None) -> None:  # fmt: skip
        """Learn from one answer's headers. ``tokens_in_window``: what our limiter
        holds for the scope now (for the token ratio), None when not measured."""
        seen = parse_headers(headers)
        fields: dict[str, str] = {}
        if base.auto_rpm and seen.limit_requests:
            fields["rpm"] = str(seen.limit_requests)
        if base.auto_tpm and seen.limit_tokens:
            fields["tpm"] = str(seen.limit_tokens)
            ratio = self._measured_ratio(scope, seen, tokens_in_window)
            if ratio is not None:
                fields["ratio"] = f"{ratio:.4f}"
        if not fields:
            return
        before = self.learned(scope)
        key = C.KEY_LEARNED.format(scope=scope.redis_part())
        with self.redis.pipeline(transaction=False) as pipe:
            fields["updated_at"] = f"{time.time():.3f}"
            pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
            pipe.expire(key, C.LEARNED_TTL_S)
            pipe.execute()
        if (before.rpm, before.tpm) != (int(fields.get("rpm", before.rpm)),
                                        int(fields.get("tpm", before.tpm))):  # fmt: skip
            logger.info("key %s model %s: the provider's limits are %s",
                        scope.key_id, scope.model, fields)  # fmt: skip
        with self._lock:
            self._cache.pop(scope.redis_part(), None)

    def _measured_ratio(self, scope: Scope, seen: RateHeaders, ours: int | None) -> float | None:
        """The provider's charged tokens over our estimated ones, smoothed."""
        if ours is None or seen.limit_tokens is None or seen.remaining_tokens is None:
            return None
        charged = seen.limit_tokens - seen.remaining_tokens
        if ours < seen.limit_tokens * MIN_SAMPLE_SHARE or charged <= 0:
            return None
        old = self.learned(scope).ratio
        new = old + RATIO_GAIN * (charged / ours - old)
        return min(RATIO_MAX, max(RATIO_MIN, new))
