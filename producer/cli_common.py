"""What the ``genfleet`` subcommands share: reporting a submitted job."""

from __future__ import annotations

import sys

import click

from genfleet import constants as C
from genfleet.records import JobView
from producer import views
from producer.jobs import JobHandle

OK_STATUSES = (C.STATUS_SUCCEEDED, C.STATUS_PARTIAL)


def report_submitted(handle: JobHandle, wait: bool) -> None:
    """Print the job id; with ``wait``, follow it and exit 0 only if it produced results."""
    click.echo(handle.id)
    sys.stdout.flush()  # a script reading the id from a pipe gets it now, not at the end
    if wait:
        follow_to_the_end(handle)


def follow_to_the_end(handle: JobHandle) -> JobView:
    """Follow a job until it ends, print its status; exit 1 unless it produced results
    (``succeeded`` or ``partial``): ``submit --wait`` and ``watch`` alike."""
    view = handle.wait()
    click.echo(views.status_text(view, batches=handle.batches()))
    if view.status not in OK_STATUSES:
        sys.exit(1)
    return view
