"""Showing a job's progress: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genfleet import constants as C
from genfleet.records import JobView


def describe(view: JobView) -> str:
    """One line: status and counts."""
    failed = len(set(view.failed) - set(view.ok))
    return (
        f"job {view.id} {view.status}: {len(view.ok)} ok, {failed} failed, "
        f"{len(view.running)} running, {view.total - view.done - len(view.running)} waiting"
        f" of {view.total}"
    )


def follow(
    load: Callable[[], JobView],
    *,
    timeout: float | None = None,
    poll_s: float = 0.25,
    show: bool = True,
    stream: TextIO | None = None,
) -> JobView:
    """Poll a job until it ends (or ``timeout``), showing progress when ``show``."""
    stream = stream or sys.stderr
    deadline = None if timeout is None else time.monotonic() + timeout
    if show and stream.isatty():
        return _follow_bar(load, deadline, poll_s, stream)
    last = ""
    while True:
        view = load()
        line = describe(view)
        if show and line != last:
            print(line, file=stream, flush=True)
            last = line
        if view.status in C.TERMINAL_STATUSES or _past(deadline):
            return view
        time.sleep(poll_s)


def _follow_bar(
    load: Callable[[], JobView], deadline: float | None, poll_s: float, stream: TextIO
) -> JobView:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        view = load()
        task = bar.add_task(f"{view.record.kind} {view.id}", total=view.total, detail="")
        while True:
            detail = f"{len(view.running)} running, {len(set(view.failed) - set(view.ok))} failed"
            bar.update(task, completed=view.done, detail=f"{view.status}: {detail}")
            if view.status in C.TERMINAL_STATUSES or _past(deadline):
                return view
            time.sleep(poll_s)
            view = load()


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline
