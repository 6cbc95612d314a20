"""``genfleet submit persona|tweets|batch`` and ``genfleet resume``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from genfleet.errors import InputError
from producer.cli_common import check_job_id, report_submitted, spend_options

FILE = click.Path(dir_okay=False, path_type=Path)


def _levels(value: str) -> list[int]:
    try:
        levels = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"--levels {value!r}: give integers separated by commas, e.g. 3,4"
        ) from None
    if not levels:
        raise InputError("--levels is empty: give integers separated by commas, e.g. 3,4")
    return levels


def _one_of(single: Path | None, many: str | None, what: str) -> list[Path]:
    if (single is None) == (many is None):
        raise InputError(f"give exactly one of --{what} and --{what}s")
    from producer.inputs import expand_glob

    return [single] if single is not None else expand_glob(many or "", f"--{what}s")


@click.command("persona")
@click.option("--image", type=FILE, default=None, help="One image (PNG, JPEG or WebP).")
@click.option("--images", default=None, help="A glob of images, e.g. 'faces/*.png'.")
@click.option("--serial", is_flag=True, help="Run the seven stages in sequence (the seed's way).")
@spend_options
@click.option("--wait", is_flag=True, help="Wait for the job, with a progress bar.")
def persona_cmd(
    image: Path | None, images: str | None, serial: bool, mode: str, max_cost: float | None,
    wait: bool,
) -> None:  # fmt: skip
    """Generate personas from images (seven stages as a graph, then a merge)."""
    from producer.pipelines import submit_persona

    paths = _one_of(image, images, "image")
    handle = submit_persona(paths, parallel=not serial, mode=mode, max_cost_usd=max_cost)
    report_submitted(handle, wait)


@click.command("tweets")
@click.option("--persona", type=FILE, default=None, help="A persona JSON file.")
@click.option("--personas", default=None, help="A glob of persona files (batch mode).")
@click.option("--persona-job", default=None, help="Use the personas of a finished persona job.")
@click.option("--calendar", type=FILE, default=None, help="A calendar JSON file.")
@click.option("--calendars", default=None, help="A glob of calendars, one per persona.")
@click.option("--count", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Tweets per persona (the calendar's first days).")  # fmt: skip
@click.option("--with-images", is_flag=True, help="Chain an image step after each tweet.")
@click.option("--gpu", type=click.IntRange(0, 7), default=None, help="Pin the images to a GPU.")
@spend_options
@click.option("--wait", is_flag=True)
def tweets_cmd(
    persona: Path | None, personas: str | None, persona_job: str | None, calendar: Path | None,
    calendars: str | None, count: int, with_images: bool, gpu: int | None, mode: str,
    max_cost: float | None, wait: bool,
) -> None:  # fmt: skip
    """Write tweets from persona calendars, all days in flight at once."""
    from producer.pipelines import personas_of_job, submit_tweets

    persona_files: list[Any]
    if persona_job is not None:
        if persona or personas:
            raise InputError("give --persona-job, or --persona/--personas, not both")
        persona_files = personas_of_job(check_job_id(persona_job))
    else:
        persona_files = _one_of(persona, personas, "persona")
    calendar_files = _one_of(calendar, calendars, "calendar")
    handle = submit_tweets(
        persona_files, calendar_files, count, with_images=with_images, gpu=gpu, mode=mode,
        max_cost_usd=max_cost,
    )  # fmt: skip
    report_submitted(handle, wait)


@click.command("batch")
@click.option("--kind", required=True, help="Item kind: cloze, vocab, translation.")
@click.option("--lang", required=True, help="Target language, e.g. ja.")
@click.option("--levels", required=True, help="Levels, e.g. 3,4.")
@click.option("--topics-file", type=FILE, required=True, help="One topic per line.")
@click.option("--per-combo", type=int, default=2, show_default=True)
@click.option("--batch-size", type=int, default=3, show_default=True)
@click.option("--concurrency", type=int, default=4, show_default=True)
@click.option("--retries", type=int, default=2, show_default=True)
@click.option("--throttle-ms", type=int, default=0, show_default=True)
@click.option("--model", default=None, help="Draft model [default: LLM_DRAFT_MODEL].")
@click.option("--review", is_flag=True, help="Review every call's items with LLM_REVIEW_MODEL.")
@spend_options
@click.option("--wait", is_flag=True)
def batch_cmd(
    kind: str, lang: str, levels: str, topics_file: Path, per_combo: int, batch_size: int,
    concurrency: int, retries: int, throttle_ms: int, model: str | None, review: bool, mode: str,
    max_cost: float | None, wait: bool,
) -> None:  # fmt: skip
    """Generate language-learning items for every topic x level."""
    from producer.inputs import read_topics
    from producer.pipelines import submit_batch

    handle = submit_batch(
        kind, lang, _levels(levels), read_topics(topics_file), per_combo, batch_size,
        concurrency, retries, throttle_ms, model, review=review, mode=mode, max_cost_usd=max_cost,
    )  # fmt: skip
    report_submitted(handle, wait)


@click.command("resume")
@click.argument("job_id")
@click.option("--max-cost", "max_cost", type=float, default=None, metavar="USD",
              help="A new total budget for the job (what it spent included).")  # fmt: skip
@click.option("--wait", is_flag=True)
def resume_cmd(job_id: str, max_cost: float | None, wait: bool) -> None:
    """Re-submit only the steps of a finished job that are missing or failed."""
    from producer.pipelines import resume

    handle, steps = resume(check_job_id(job_id), max_cost_usd=max_cost)
    if not steps:
        click.echo(f"job {job_id}: every step has a result; nothing to resume")
        return
    click.echo(f"job {job_id}: re-submitted {len(steps)} step(s): {', '.join(steps[:10])}"
               + (" ..." if len(steps) > 10 else ""))  # fmt: skip
    report_submitted(handle, wait)


def register(cli: click.Group, submit: click.Group) -> None:
    """Add the pipeline commands to ``genfleet`` and ``genfleet submit``."""
    for command in (persona_cmd, tweets_cmd, batch_cmd):
        submit.add_command(command)
    cli.add_command(resume_cmd)
