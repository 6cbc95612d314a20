"""Per-process resources of a worker: settings, the job store and the LLM gateway.

Created on first use and dropped after a fork, so each pool process has its own
connections.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from genfleet.connection import redis_client
from genfleet.settings import Settings, load_settings
from genfleet.store import JobStore
from workers.gateway import LLMGateway, get_gateway, reset_gateway

_lock = threading.Lock()


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()


@lru_cache(maxsize=1)
def store() -> JobStore:
    with _lock:
        from celery import current_app

        s = settings()
        return JobStore(redis_client(str(current_app.conf.broker_url)), s.result_ttl_s)


def gateway() -> LLMGateway:
    return get_gateway(settings(), store().r)


def reset() -> None:
    """Forget every resource (called in a freshly forked pool process)."""
    settings.cache_clear()
    store.cache_clear()
    reset_gateway()
