"""What the ``genfleet`` subcommands share: reporting a submitted job, job ids, the
spending options. Light on purpose: every command module imports it at start."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import click

from genfleet import constants as C
from genfleet.errors import InputError

if TYPE_CHECKING:
    from genfleet.records import JobView
    from producer.jobs import JobHandle

OK_STATUSES = (C.STATUS_SUCCEEDED, C.STATUS_PARTIAL)
MAX_BUDGET_USD = 1_000_000.0  # a job's budget at most (producer.spend checks it)
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")


def check_job_id(job_id: str) -> str:
    """Refuse a job id that cannot be one (before touching Redis)."""
    if not _JOB_ID.match(job_id):
        raise InputError(
            f"job id {job_id!r} is malformed: letters, digits, '-', '_', '.', ':' only"
        )
    return job_id


def report_submitted(handle: JobHandle, wait: bool) -> None:
    """Print the job id; with ``wait``, follow it and exit 0 only if it produced results."""
    click.echo(handle.id)
    sys.stdout.flush()  # a script reading the id from a pipe gets it now, not at the end
    if wait:
        follow_to_the_end(handle)


def follow_to_the_end(handle: JobHandle) -> JobView:
    """Follow a job until it ends, print its status; exit 1 unless it produced results
    (``succeeded`` or ``partial``): ``submit --wait`` and ``watch`` alike."""
    from producer import views

    view = handle.wait()
    click.echo(views.status_text(view, batches=handle.batches()))
    if view.status not in OK_STATUSES:
        sys.exit(1)
    return view


def spend_options(command: Any) -> Any:
    """``--mode`` and ``--max-cost`` for a ``genfleet submit`` command."""
    command = click.option(
        "--max-cost", "max_cost", type=click.FloatRange(0, MAX_BUDGET_USD, min_open=True),
        default=None, metavar="USD",
        help="The job's budget in USD: steps past it are not called (budget_exceeded).",
    )(command)  # fmt: skip
    return click.option(
        "--mode", type=click.Choice(list(C.API_MODES)), default=C.API_ONLINE, show_default=True,
        help="online: one call at a time; batch: the provider's Batch API (about half price).",
    )(command)  # fmt: skip
