"""Riding out a Redis restart: run idempotent work again until Redis answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from genfleet import constants as C

logger = logging.getLogger(__name__)
T = TypeVar("T")
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


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
