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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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

    @contextmanager
    def renewing(self, what: str, renew: Renew) -> Iterator[None]:
        """Keep ``renew`` called while the block runs."""
        token = self._add(what, renew)
        try:
            yield
        finally:
            with self._lock:
                self._renewals.pop(token, None)

    def _add(self, what: str, renew: Renew) -> int:
        with self._lock:
            token = next(self._ids)
            self._renewals[token] = _Renewal(what, renew, time.monotonic())
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked child has no thread: start its own
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat",
                                                daemon=True)  # fmt: skip
                self._thread.start()
        return token

    def _run(self) -> None:
        while not self._wake.wait(self.interval_s):
            now = time.monotonic()
            with self._lock:
                due = [r for r in self._renewals.values() if now - r.last >= self.interval_s]
            for renewal in due:
                try:
                    renewal.renew()
                    renewal.last = now
                except Exception as e:  # Redis restarting: the next beat tries again
                    logger.warning("could not renew %s (%s)", renewal.what, e.__class__.__name__)


_heartbeat = Heartbeat()


def renewing(what: str, renew: Renew) -> AbstractContextManager[None]:
    """The process's heartbeat keeps ``renew`` called while the block runs."""
    return _heartbeat.renewing(what, renew)
