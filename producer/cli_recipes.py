"""``genfleet submit recipe`` and ``genfleet recipe check``: users' own kinds."""

from __future__ import annotations

from pathlib import Path

import click

from producer.cli_common import report_submitted, spend_options

FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("recipe")
@click.argument("recipe", type=FILE)
@click.option("--input", "rows", type=FILE, required=True,
              help="Input rows: JSONL, a JSON list of objects, or CSV with a header.")  # fmt: skip
@spend_options
@click.option("--wait", is_flag=True, help="Wait for the job, with a progress bar.")
def submit_recipe_cmd(
    recipe: Path, rows: Path, mode: str, max_cost: float | None, wait: bool
) -> None:
    """Run a recipe (YAML or JSON) over input rows; each row runs its stage graph."""
    from producer.recipes import submit_recipe

    report_submitted(submit_recipe(recipe, rows, mode=mode, max_cost_usd=max_cost), wait)


@click.group("recipe")
def recipe_group() -> None:
    """Recipes: users' own job kinds, declared in a file."""


@recipe_group.command("check")
@click.argument("recipe", type=FILE)
@click.option("--input", "rows", type=FILE, required=True, help="Input rows (JSONL, JSON, CSV).")
def check_cmd(recipe: Path, rows: Path) -> None:
    """Check a recipe and its rows; print the stage graph, the steps and a token
    estimate. Enqueues nothing."""
    from producer.recipes import check_recipe

    click.echo(check_recipe(recipe, rows))


def register(cli: click.Group, submit: click.Group) -> None:
    """Add ``submit recipe`` and ``recipe check``."""
    submit.add_command(submit_recipe_cmd)
    cli.add_command(recipe_group)
