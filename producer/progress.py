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
from genfleet.store import Progress as JobProgress


def describe(job_id: str, p: JobProgress) -> str:
    """One line: status and counts."""
    waiting = max(0, p.total - p.done - p.running)
    return (
        f"job {job_id} {p.status}: {p.ok} ok, {p.failed} failed, {p.running} running, "
        f"{waiting} waiting of {p.total}"
    )


def follow(
    job_id: str,
    load: Callable[[], JobProgress],
    *,
    timeout: float | None = None,
    poll_s: float = 0.1,
    show: bool = True,
    stream: TextIO | None = None,
) -> JobProgress:
    """Poll a job until it ends (or ``timeout``), showing progress when ``show``."""
    stream = stream or sys.stderr
    deadline = None if timeout is None else time.monotonic() + timeout
    if show and stream.isatty():
        return _follow_bar(job_id, load, deadline, poll_s, stream)
    last = ""
    while True:
        p = load()
        line = describe(job_id, p)
        if show and line != last:
            print(line, file=stream, flush=True)
            last = line
        if p.status in C.TERMINAL_STATUSES or _past(deadline):
            return p
        time.sleep(poll_s)


def _follow_bar(
    job_id: str, load: Callable[[], JobProgress], deadline: float | None, poll_s: float,
    stream: TextIO,
) -> JobProgress:  # fmt: skip
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        p = load()
        task = bar.add_task(job_id, total=p.total, detail="")
        while True:
            detail = f"{p.status}: {p.running} running, {p.failed} failed"
            bar.update(task, completed=p.done, detail=detail)
            if p.status in C.TERMINAL_STATUSES or _past(deadline):
                return p
            time.sleep(poll_s)
            p = load()


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline
