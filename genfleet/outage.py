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


def memory_warning(client: redis.Redis) -> str | None:
    """One line for an operator when Redis refuses writes for want of memory (it is at
    ``maxmemory`` and may not evict our keys); None when it is not, or cannot be asked."""
    try:
        info = client.info("memory")
    except redis.RedisError:
        return None
    limit, used = int(info.get("maxmemory", 0)), int(info.get("used_memory", 0))
    policy = str(info.get("maxmemory_policy", ""))
    if not limit or used < limit or policy.startswith("allkeys"):
        return None
    return (
        f"Redis is full ({used / 2**20:.1f} MiB used, maxmemory {limit / 2**20:.1f} MiB, "
        f"policy {policy}): steps wait to store their results and new jobs are refused; "
        "raise maxmemory or free memory and the job goes on by itself"
    )
