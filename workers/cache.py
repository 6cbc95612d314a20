"""The LLM response cache in Redis.

Keyed by a hash of everything that shapes the answer (provider, model, messages,
parameters, and the seed that holds a version index, so parallel versions stay
distinct). A hit costs no call and no limiter capacity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import redis

from genfleet import constants as C
from workers.gateway_types import ChatRequest, ChatResult

logger = logging.getLogger(__name__)


def cache_digest(provider: str, request: ChatRequest) -> str:
    """A stable hash of a request (the API key is not part of it)."""
    shape = {"provider": provider, **dataclasses.asdict(request)}
    raw = json.dumps(shape, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


class ResponseCache:
    """get/put of chat results; ``ttl_s`` 0 turns the cache off."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    def wanted(self, request: ChatRequest, job_choice: bool | None) -> bool:
        """On by default for temperature-0 calls; a job may turn it on or off."""
        if self.ttl_s <= 0:
            return False
        return request.temperature == 0 if job_choice is None else job_choice

    def get(self, digest: str) -> ChatResult | None:
        raw = self.redis.get(C.KEY_CACHE.format(digest=digest))
        if raw is None:
            return None
        data = json.loads(raw)
        hit = {**data, "cached": True, "attempts": 0, "seconds": 0.0, "cost_usd": 0.0}
        return ChatResult(**hit)

    def put(self, digest: str, result: ChatResult) -> None:
        payload = json.dumps(dataclasses.asdict(result), ensure_ascii=False)
        self.redis.set(C.KEY_CACHE.format(digest=digest), payload, ex=self.ttl_s)
