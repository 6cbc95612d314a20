"""Riding out a Redis restart: run idempotent work again until Redis answers.

"Redis down" (``REDIS_DOWN``) is any state in which Redis cannot do our work for a
while but will again: not reachable, restarting, loading its data, out of memory
under ``noeviction``, a read-only replica during a failover.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from genfleet import constants as C

logger = logging.getLogger(__name__)
T = TypeVar("T")
REDIS_DOWN: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)


def is_redis_down(error: BaseException) -> bool:
    """``REDIS_DOWN``, or a Lua script that Redis refused for want of memory (it says
    so in a generic script error, not as ``OutOfMemoryError``)."""
    if isinstance(error, REDIS_DOWN):
        return True
    return isinstance(error, redis.ResponseError) and "OOM command not allowed" in str(error)


def through_outage(
    run: Callable[[], T], what: str, max_wait_s: float = C.REDIS_OUTAGE_MAX_WAIT_S
) -> T:
    """Run ``run`` again until Redis answers (a restart), for up to ``max_wait_s``.

    Only for idempotent work; ``what`` says in the log what is waiting.
    """
    deadline = time.monotonic() + max_wait_s
    delay = 0.5
    while True:
        try:
            return run()
        except redis.RedisError as e:
            if not is_redis_down(e) or time.monotonic() > deadline:
                raise
            logger.warning("%s: Redis unavailable (%s); trying again in %.1fs", what,
                           e.__class__.__name__, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
