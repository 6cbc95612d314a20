"""What the ``genfleet`` subcommands share: reporting a submitted job."""

from __future__ import annotations

import sys

import click

from genfleet import constants as C
from producer import views
from producer.jobs import JobHandle

OK_STATUSES = (C.STATUS_SUCCEEDED, C.STATUS_PARTIAL)


def report_submitted(handle: JobHandle, wait: bool) -> None:
    """Print the job id; with ``wait``, follow it and exit 0 only if it produced results."""
    click.echo(handle.id)
    if not wait:
        return
    view = handle.wait()
    click.echo(views.status_text(view))
    sys.exit(0 if view.status in OK_STATUSES else 1)
