"""Redis' clock, read in the process instead of by every script.

Claims, leases and rate limits are dated by one clock, Redis', so that the workers'
own clocks never matter. Asking Redis for it (``TIME``) in each script cost a command
per script call; a ``RedisClock`` instead asks once per ``REDIS_CLOCK_SYNC_S`` and
adds the monotonic time passed since. Its error is half a round trip (under a
millisecond on a LAN) plus the monotonic clock's drift over that while: nothing next
to the seconds-long leases and the window margins. A script given no time (0) still
reads ``TIME`` itself (tests inject their own times).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

REDIS_CLOCK_SYNC_S = 10.0  # how often a process reads Redis' TIME again

_ATTR = "_genfleet_clock"  # the clock of a connection pool (one per Redis), per process


class RedisClock:
    """``now()``: Redis' time in seconds, as of this call, without a command (mostly)."""

    def __init__(self, client: redis.Redis, sync_s: float = REDIS_CLOCK_SYNC_S) -> None:
        self.client = client
        self.sync_s = sync_s
        self._offset = 0.0  # Redis' time minus the monotonic time
        self._synced_at = -float("inf")
        self._lock = threading.Lock()

    def now(self) -> float:
        mono = time.monotonic()
        if mono - self._synced_at >= self.sync_s:
            self._sync()
            mono = time.monotonic()
        return self._offset + mono

    def _sync(self) -> None:
        with self._lock:
            if time.monotonic() - self._synced_at < self.sync_s:
                return  # another thread just did
            before = time.monotonic()
            seconds, micros = self.client.time()
            after = time.monotonic()
            self._offset = seconds + micros / 1e6 - (before + after) / 2
            self._synced_at = after


def redis_clock(client: redis.Redis) -> RedisClock:
    """The process's clock of ``client``'s Redis (kept on its connection pool)."""
    pool: Any = client.connection_pool
    held = getattr(pool, _ATTR, None)
    if held is None or held[0] != os.getpid():
        held = (os.getpid(), RedisClock(client))
        setattr(pool, _ATTR, held)
    clock: RedisClock = held[1]
    return clock
