"""Where Redis is, and clients for it.

``REDIS_URL`` wins. Without it, an embedded server under ``GENFLEET_HOME`` is used:
one that is already running, or a new one owned (and stopped at exit) by this process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from genfleet import constants as C
from genfleet.embedded import EmbeddedRedis
from genfleet.errors import RedisUnavailableError
from genfleet.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
_owned: list[EmbeddedRedis] = []


def sanitize_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def resolve_redis_url(settings: Settings, *, start: bool = True) -> str:
    """The Redis URL to use, starting the embedded server when needed and allowed."""
    if settings.redis_url:
        return settings.redis_url
    embedded = EmbeddedRedis(settings.genfleet_home)
    running = embedded.running_url()
    if running:
        return running
    if not start:
        raise RedisUnavailableError(
            "REDIS_URL is unset and no embedded Redis is running; "
            "set REDIS_URL or run 'genfleet redis'"
        )
    url = embedded.start()
    if embedded.owned:
        _owned.append(embedded)
        atexit.register(embedded.stop)
    return url


def use_redis(settings: Settings) -> str:
    """Resolve the URL and export it as ``REDIS_URL`` for this process and its children."""
    url = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = url
    return url


def stop_owned_redis() -> None:
    """Stop an embedded server this process started (also done at exit)."""
    while _owned:
        _owned.pop().stop()


def redis_client(url: str) -> redis.Redis:
    """A decoded-strings client; raises ``RedisUnavailableError`` if it cannot connect."""
    client = redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        with contextlib.suppress(Exception):
            client.close()
        raise RedisUnavailableError(
            f"cannot reach Redis at {sanitize_url(url)}: {e.__class__.__name__}"
        ) from None
    return client


def through_outage(run: Callable[[], T], what: str) -> T:
    """Run ``run`` again until Redis answers (a restart), for ``REDIS_OUTAGE_MAX_WAIT_S``.

    Only for idempotent work; ``what`` says in the log what is waiting.
    """
    deadline = time.monotonic() + C.REDIS_OUTAGE_MAX_WAIT_S
    delay = 0.5
    while True:
        try:
            return run()
        except REDIS_DOWN:
            if time.monotonic() > deadline:
                raise
            logger.warning("%s: Redis unreachable; trying again in %.1fs", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
