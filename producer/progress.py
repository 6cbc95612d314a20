"""Showing a job's progress: a rich bar on a terminal, plain lines otherwise.

Progress is read with ``JobStore.progress`` (counts only), so following a job of
10,000 steps does not parse 10,000 results twice a second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genfleet import constants as C
from genfleet.outage import through_outage
from genfleet.store import Progress as JobProgress


def describe(job_id: str, p: JobProgress) -> str:
    """One line: status and counts."""
    waiting = max(0, p.total - p.done - p.running)
    left = "not run" if p.status == C.STATUS_CANCELLED else "waiting"
    return (
        f"job {job_id} {p.status}: {p.ok} ok, {p.failed} failed, {p.running} running, "
        f"{waiting} {left} of {p.total}"
    )


STALL_CHECK_AFTER_S = 3.0  # with nothing running this long, look for missing workers
STALL_CHECK_EVERY_S = 15.0


class StallCheck:
    """Asks ``check`` (what is missing, or None) when a job has had nothing running
    for a few seconds, and says each new answer once."""

    def __init__(self, check: Callable[[], str | None] | None, say: Callable[[str], None]) -> None:
        self.check = check
        self.say = say
        self.idle_since: float | None = None
        self.next_at = 0.0
        self.said: str | None = None

    def __call__(self, p: JobProgress) -> None:
        now = time.monotonic()
        if self.check is None or p.running or p.status in C.TERMINAL_STATUSES:
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = now
        if now - self.idle_since < STALL_CHECK_AFTER_S or now < self.next_at:
            return
        self.next_at = now + STALL_CHECK_EVERY_S
        message = self.check()
        if message and message != self.said:
            self.say(f"genfleet: warning: {message}")
        self.said = message


def follow(
    job_id: str,
    load: Callable[[], JobProgress],
    *,
    timeout: float | None = None,
    poll_s: float = 0.1,
    show: bool = True,
    stream: TextIO | None = None,
    stall_check: Callable[[], str | None] | None = None,
) -> JobProgress:
    """Poll a job until it ends (or ``timeout``), showing progress when ``show``.

    ``stall_check`` is asked, when nothing of the job has run for a few seconds, what
    is missing (e.g. a worker for its queue); its answer is shown as a warning. Redis
    restarting meanwhile is waited for (``REDIS_OUTAGE_MAX_WAIT_S``).
    """
    stream = stream or sys.stderr
    deadline = None if timeout is None else time.monotonic() + timeout
    load = _riding_out_restarts(load, job_id)

    if show and stream.isatty():
        return _follow_bar(job_id, load, deadline, poll_s, stream, stall_check)
    stalled = StallCheck(stall_check if show else None, lambda m: print(m, file=stream, flush=True))
    last = ""
    while True:
        p = load()
        line = describe(job_id, p)
        if show and line != last:
            print(line, file=stream, flush=True)
            last = line
        if p.status in C.TERMINAL_STATUSES or _past(deadline):
            return p
        stalled(p)
        time.sleep(poll_s)


def _riding_out_restarts(load: Callable[[], JobProgress], job_id: str) -> Callable[[], JobProgress]:
    return lambda: through_outage(load, f"following job {job_id}")


def _follow_bar(
    job_id: str, load: Callable[[], JobProgress], deadline: float | None, poll_s: float,
    stream: TextIO, stall_check: Callable[[], str | None] | None,
) -> JobProgress:  # fmt: skip
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        stalled = StallCheck(stall_check, lambda m: bar.console.print(m, markup=False))
        p = load()
        task = bar.add_task(job_id, total=p.total, detail="")
        while True:
            detail = f"{p.status}: {p.running} running, {p.failed} failed"
            bar.update(task, completed=p.done, detail=detail)
            if p.status in C.TERMINAL_STATUSES or _past(deadline):
                return p
            stalled(p)
            time.sleep(poll_s)
            p = load()


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline
