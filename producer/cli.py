"""The ``genfleet`` command.

Every user error ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click

from genfleet import constants as C
from genfleet.errors import GenfleetError, InputError
from producer.cli_common import check_job_id, report_submitted, spend_options
from producer.cli_images import register as register_image_commands
from producer.cli_ops import register as register_ops_commands
from producer.cli_pipelines import register as register_pipeline_commands
from producer.cli_recipes import register as register_recipe_commands
from producer.cli_ui import ui_cmd

# Commands import what they need when they run: 'genfleet --help' loads no Redis
# client, Celery or SDK.

EXIT_USER_ERROR = 2
MAX_OUTLINE_BYTES = 4 * C.MAX_OUTLINE_CHARS  # UTF-8 takes at most 4 bytes a character
JOB_ID = click.argument("job_id")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genfleet", prog_name="genfleet", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """genfleet: a distributed content-generation farm on Celery and Redis."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.option("--versions", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option("--latency-ms", type=click.IntRange(0, 60_000), default=1500, show_default=True,
              help="The built-in simulator's latency per call.")  # fmt: skip
def demo(versions: int, latency_ms: int) -> None:
    """Start what is missing, generate chapter versions in parallel, show a summary."""
    from producer.demo import run_demo

    run_demo(versions=versions, latency_ms=latency_ms)


@cli.group()
def worker() -> None:
    """Run a worker (a wrapper over 'celery -A workers worker')."""


@worker.command("llm")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 1024),
    default=None,
    help="Calls this worker runs at once [default: LLM_MAX_CONCURRENT].",
)
@click.option(
    "--pool", type=click.Choice(["threads", "prefork"]), default="threads", show_default=True
)
@click.option("--name", default=None,
              help="Node name: NAME@host, unique on the host [default: llm-PID].")  # fmt: skip
@click.option("--loglevel", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              default="INFO", show_default=True)  # fmt: skip
def worker_llm(concurrency: int | None, pool: str, name: str | None, loglevel: str) -> None:
    """Run an LLM worker on the 'llm' and 'control' queues."""
    from genfleet.connection import use_redis
    from genfleet.settings import load_settings
    from producer.processes import celery_worker_command, replace_process, unique_node_name
    from workers.keypool import keys_from_settings

    settings = load_settings()
    keys_from_settings(settings)  # no key: one line now, not a failure in every step later
    use_redis(settings)
    args = celery_worker_command(
        ["llm", "control"],
        concurrency=concurrency or settings.llm_max_concurrent,
        pool=pool, name=name or unique_node_name("llm"), loglevel=loglevel,
    )  # fmt: skip
    sys.exit(replace_process(args))


@cli.group()
def submit() -> None:
    """Submit a job."""


@submit.command("chapter")
@click.option("--project", required=True, help="Project id.")
@click.option("--chapter", "chapter", type=click.IntRange(1, 100_000), required=True)
@click.option(
    "--versions",
    type=click.IntRange(1, 10),
    default=None,
    help="Candidate versions [default: WRITER_CHAPTER_VERSION_COUNT].",
)
@click.option("--outline-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The chapter's outline, UTF-8 text (e.g. examples/outline.txt).")  # fmt: skip
@spend_options
@click.option("--wait", is_flag=True, help="Wait for the job, with a progress bar.")
def submit_chapter_cmd(
    project: str, chapter: int, versions: int | None, outline_file: Path, mode: str,
    max_cost: float | None, wait: bool,
) -> None:  # fmt: skip
    """Generate candidate versions of a chapter from its outline."""
    outline = read_text(outline_file)
    from producer.api import submit_chapter

    handle = submit_chapter(project, chapter, outline, versions, mode=mode, max_cost_usd=max_cost)
    report_submitted(handle, wait)


def read_text(path: Path) -> str:
    """An outline file; more than an outline can hold (in UTF-8) is not read."""
    from producer.inputs import read_text_file

    return read_text_file(path, MAX_OUTLINE_BYTES)


@cli.command()
@JOB_ID
def status(job_id: str) -> None:
    """Show a job's status, steps and metrics."""
    from genfleet.outage import memory_warning
    from producer import views
    from producer.api import get_job
    from producer.client import connect

    handle = get_job(check_job_id(job_id))
    store = connect().store
    click.echo(views.status_text(handle.view(), store.round(job_id), handle.batches()))
    warning = memory_warning(store.r)
    if warning:
        click.echo(f"  warning: {warning}")


@cli.command()
@JOB_ID
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None)
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl"]), default="json",
              show_default=True)  # fmt: skip
def results(job_id: str, out: Path | None, fmt: str) -> None:
    """Print (or write to --out) a job's results."""
    from producer import views
    from producer.api import get_job
    from producer.client import connect

    view = get_job(check_job_id(job_id)).view()
    store = connect().store

    def read_inputs(names: list[str]) -> dict[str, str | None]:
        return dict(zip(names, store.inputs(view.id, names), strict=True))

    text = views.results_text(view, fmt, read_inputs)
    if out is None:
        click.echo(text)
        return
    try:
        out.write_text(text + "\n", encoding="utf-8")
    except OSError as e:
        raise InputError(f"{out}: cannot write ({e.strerror})") from None
    summary = views.results_summary(view, fmt, read_inputs)
    click.echo(f"wrote {summary} of {view.id} to {out}")


@cli.command()
@JOB_ID
def watch(job_id: str) -> None:
    """Follow a job with a live progress bar (plain lines when not a terminal)."""
    from producer.api import get_job
    from producer.cli_common import follow_to_the_end

    follow_to_the_end(get_job(check_job_id(job_id)))


@cli.command()
@JOB_ID
def cancel(job_id: str) -> None:
    """Cancel a job: revoke the steps not started; running steps keep their results."""
    from producer.control import cancel as cancel_job

    revoked = cancel_job(check_job_id(job_id))
    click.echo(f"job {job_id} cancelled; {revoked} step(s) not started were revoked")


@cli.command()
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def jobs(limit: int) -> None:
    """List recent jobs."""
    from producer import views
    from producer.client import connect

    click.echo(views.jobs_text(connect().store, limit))


@cli.command(
    context_settings={
        "ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": [],
    },
    add_help_option=False,
)  # fmt: skip
@click.pass_context
def simulate(ctx: click.Context) -> None:
    """Run the OpenAI-compatible simulator; 'genfleet simulate --help' lists its options."""
    from simulator.__main__ import main as simulator_main

    sys.exit(simulator_main(list(ctx.args), prog="genfleet simulate"))


@cli.group("redis", invoke_without_command=True)
@click.pass_context
def redis_cmd(ctx: click.Context) -> None:
    """Run the embedded Redis in the foreground (when REDIS_URL is unset); 'genfleet redis
    stop' stops it."""
    if ctx.invoked_subcommand is not None:
        return
    from genfleet.connection import sanitize_url, stop_owned_redis, use_redis
    from genfleet.settings import load_settings

    settings = load_settings()
    if settings.redis_url:
        raise InputError(f"REDIS_URL is set ({sanitize_url(settings.redis_url)}): nothing to start")
    url = use_redis(settings)
    click.echo(
        f"embedded Redis at {sanitize_url(url)} (password in {settings.genfleet_home}/redis/"
        "password); genfleet commands in other shells find it by GENFLEET_HOME. Ctrl-C stops "
        "it unless workers still use it (then: genfleet redis stop)."
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stop_owned_redis()


@redis_cmd.command("stop")
def redis_stop() -> None:
    """Stop the embedded Redis of GENFLEET_HOME (its data stays for the next start)."""
    from genfleet.connection import sanitize_url, stop_embedded_redis
    from genfleet.settings import load_settings

    settings = load_settings()
    if settings.redis_url:
        raise InputError(f"REDIS_URL is set ({sanitize_url(settings.redis_url)}): nothing to stop")
    stopped = stop_embedded_redis(settings)
    click.echo("embedded Redis stopped" if stopped else "no embedded Redis was running")


register_image_commands(worker, submit)
register_pipeline_commands(cli, submit)
register_ops_commands(cli)
cli.add_command(ui_cmd)
register_recipe_commands(cli, submit)


def _is_redis_error(error: Exception) -> bool:
    redis = sys.modules.get("redis")  # only a command that talked to Redis raises its errors
    return redis is not None and isinstance(error, redis.RedisError)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``genfleet`` command."""
    try:
        rc = cli.main(args=argv, prog_name="genfleet", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("genfleet: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("genfleet: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"genfleet: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except GenfleetError as e:
        click.echo(f"genfleet: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:
        if not _is_redis_error(e):
            raise
        click.echo(f"genfleet: lost the connection to Redis ({e.__class__.__name__})", err=True)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
