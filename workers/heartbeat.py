"""Renewing short leases while work runs: one background thread per process.

A step's claim and a call's concurrency lease live only ``LEASE_S`` in Redis, so
those of a worker that dies come back within seconds. While the work is alive this
thread renews them every ``LEASE_RENEW_S``. A renewal that fails (Redis restarting)
is tried again on the next beat; the work itself never waits for it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from genfleet import constants as C

logger = logging.getLogger(__name__)

Renew = Callable[[], object]


class Heartbeat:
    """Calls every registered renewal every ``interval_s`` seconds, in a daemon thread."""

    def __init__(self, interval_s: float = C.LEASE_RENEW_S) -> None:
        self.interval_s = interval_s
        self._renewals: dict[int, tuple[str, Renew]] = {}
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
            self._renewals[token] = (what, renew)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked child has no thread: start its own
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat",
                                                daemon=True)  # fmt: skip
                self._thread.start()
        return token

    def _run(self) -> None:
        while not self._wake.wait(self.interval_s):
            with self._lock:
                due = list(self._renewals.values())
            for what, renew in due:
                try:
                    renew()
                except Exception as e:  # Redis restarting: the next beat tries again
                    logger.warning("could not renew %s (%s)", what, e.__class__.__name__)


_heartbeat = Heartbeat()


def renewing(what: str, renew: Renew) -> AbstractContextManager[None]:
    """The process's heartbeat keeps ``renew`` called while the block runs."""
    return _heartbeat.renewing(what, renew)
