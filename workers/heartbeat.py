"""Renewing short leases while work runs: one background thread per process.

A step's claim and a call's concurrency lease live only ``LEASE_S`` in Redis, so
those of a worker that dies come back within seconds. While the work is alive this
thread renews each one every ``LEASE_RENEW_S`` to twice that (it beats every
``LEASE_RENEW_S`` and renews what was renewed or begun at least that long ago), so
work shorter than ``LEASE_RENEW_S`` renews nothing and a lease is never older than
half its life. A renewal that fails (Redis restarting) is tried again on the next
beat; the work itself never waits for it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from genfleet import constants as C

logger = logging.getLogger(__name__)

Renew = Callable[[], object]


@dataclass
class _Renewal:
    what: str  # for the log
    renew: Renew
    last: float  # monotonic time it was registered or last renewed


class Heartbeat:
    """Calls every registered renewal every ``interval_s`` to ``2 * interval_s``
    seconds (none sooner than ``interval_s`` after it was registered), in a daemon
    thread."""

    def __init__(self, interval_s: float = C.LEASE_RENEW_S) -> None:
        self.interval_s = interval_s
        self._renewals: dict[int, _Renewal] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def renewing(self, what: str, renew: Renew) -> _Renewing:
        """Keep ``renew`` called while the block runs."""
        return _Renewing(self, what, renew)

    def _add(self, what: str, renew: Renew) -> int:
        token = next(self._ids)  # itertools.count and a dict's item set are atomic
        self._renewals[token] = _Renewal(what, renew, time.monotonic())
        if self._no_thread():
            with self._lock:
                if self._no_thread():
                    self._pid = os.getpid()
                    self._thread = threading.Thread(target=self._run, name="lease-heartbeat",
                                                    daemon=True)  # fmt: skip
                    self._thread.start()
        return token

    def _no_thread(self) -> bool:
        """No beating thread in this process (none yet, or a forked child's)."""
        return self._thread is None or self._pid != os.getpid() or not self._thread.is_alive()

    def _drop(self, token: int) -> None:
        self._renewals.pop(token, None)

    def _run(self) -> None:
        while not self._wake.wait(self.interval_s):
            now = time.monotonic()
            due = [r for r in list(self._renewals.values()) if now - r.last >= self.interval_s]
            for renewal in due:
                try:
                    renewal.renew()
                    renewal.last = now
                except Exception as e:  # Redis restarting: the next beat tries again
                    logger.warning("could not renew %s (%s)", renewal.what, e.__class__.__name__)


class _Renewing:
    """The block ``Heartbeat.renewing`` keeps renewed (a plain context manager: two of
    them go around every LLM call)."""

    __slots__ = ("beat", "what", "renew", "token")

    def __init__(self, beat: Heartbeat, what: str, renew: Renew) -> None:
        self.beat, self.what, self.renew = beat, what, renew
        self.token = -1

    def __enter__(self) -> None:
        self.token = self.beat._add(self.what, self.renew)

    def __exit__(self, *exc: object) -> None:
        self.beat._drop(self.token)


_heartbeat = Heartbeat()


def renewing(what: str, renew: Renew) -> AbstractContextManager[None]:
    """The process's heartbeat keeps ``renew`` called while the block runs."""
    return _heartbeat.renewing(what, renew)
