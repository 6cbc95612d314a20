"""Recipes from files: reading and checking a recipe and its input rows, the plan
``genfleet recipe check`` prints, and ``submit_recipe``.

Everything is checked before anything is enqueued: the recipe (fields, graph, JSON
schemas, templates), every row against the recipe's ``inputs``, every template
rendered for every row (with stand-ins shaped like the schemas for the outputs of
earlier stages), every image read and checked. A problem is one ``InputError``
line naming the file, the row, the stage and what is wrong.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.kinds.checks import one_line
from genfleet.kinds.recipe import KIND as RECIPE
from genfleet.kinds.recipe import (
    MAX_ROWS,
    VERSIONS_SUFFIX,
    Recipe,
    RecipeSpec,
    image_input,
    row_input,
    step_id,
)
from genfleet.settings import Settings, load_settings
from genfleet.templates import TemplateProblem, check_template, render, sample_for_schema
from genfleet.tokens import estimate_messages_tokens

MAX_RECIPE_BYTES = 1024 * 1024
MAX_ROWS_BYTES = 64 * 1024 * 1024
MAX_ROW_JSON_CHARS = 100_000
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Prepared:
    """A checked recipe (models and max_tokens resolved) and its rows, ready to run."""

    recipe: Recipe
    rows: list[dict[str, Any]]
    source: str
    inputs: dict[str, str] = field(default_factory=dict)  # job inputs: rows, images
    prompt_tokens: int = 0  # estimated, over every step


def load_recipe(recipe: Path | str | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The recipe's data and a name for it in messages (the file, or ``recipe``)."""
    if isinstance(recipe, Mapping):
        return dict(recipe), "recipe"
    if isinstance(recipe, str) and ("\n" in recipe or recipe.lstrip().startswith("{")):
        return _parse_recipe_text(recipe, "recipe"), "recipe"
    if not isinstance(recipe, str | Path):
        raise InputError(
            f"recipe: give a path, a YAML/JSON text or a dict, not {type(recipe).__name__}"
        )
    from producer.inputs import read_text_file

    path = Path(recipe)
    return _parse_recipe_text(
        read_text_file(path, MAX_RECIPE_BYTES, "recipe file"), str(path)
    ), str(path)


def _parse_recipe_text(text: str, source: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.load(text, Loader=_no_alias_loader())  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{source}: not valid YAML or JSON{where}: {problem}") from None
    except RecursionError:
        raise InputError(f"{source}: nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError(f"{source}: a recipe is a mapping with name, inputs and stages")
    return data


@lru_cache(maxsize=1)
def _no_alias_loader() -> type:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """Safe YAML without aliases: ``*name`` could make a small file huge."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in a recipe", mark
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def parse_recipe(data: dict[str, Any], source: str, settings: Settings) -> Recipe:
    """The checked recipe, each stage's model and max_tokens resolved."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise InputError(_recipe_problem(e, data, source)) from None
    for stage in recipe.stages:
        for what, text in (
            ("prompt", stage.prompt),
            ("system", stage.system),
            ("image", stage.image),
        ):
            if text is not None:
                try:
                    check_template(text)
                except TemplateProblem as e:
                    raise InputError(f"{source}: stage {stage.name}: {what}: {e}") from None
        stage.model = stage.model or recipe.model or settings.llm_model
        stage.max_tokens = stage.max_tokens or settings.llm_max_tokens
    return recipe


def _recipe_problem(error: ValidationError, data: dict[str, Any], source: str) -> str:
    """``SOURCE: stage NAME: field: problem`` for the first problem."""
    first = error.errors()[0]
    loc = list(first["loc"])
    if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
        stages = data.get("stages")
        name = None
        if isinstance(stages, list) and loc[1] < len(stages) and isinstance(stages[loc[1]], dict):
            name = stages[loc[1]].get("name")
        label = f"stage {name}" if isinstance(name, str) else f"stage {loc[1] + 1}"
        rest = ".".join(str(p) for p in loc[2:]) or "value"
        return f"{source}: {label}: {rest}: {first['msg'].removeprefix('Value error, ')}"
    if not loc:
        return f"{source}: {first['msg'].removeprefix('Value error, ')}"
    return one_line(error, source)


def load_rows(rows: Path | str | Iterable[Mapping[str, Any]]) -> tuple[list[Any], str, Path]:
    """Rows from a JSONL, JSON (a list of objects) or CSV (with a header) file, or an
    iterable of dicts; also a name for messages and the folder images are read from."""
    if not isinstance(rows, str | Path):
        if isinstance(rows, Mapping):
            raise InputError("rows: give a list of dicts (or a file), not one dict")
        listed = []
        for n, row in enumerate(rows, 1):
            if n > MAX_ROWS:
                raise InputError(f"rows: more than {MAX_ROWS} rows")
            listed.append(row)
        return listed, "rows", Path.cwd()
    from producer.inputs import read_text_file

    path = Path(rows)
    text = read_text_file(path, MAX_ROWS_BYTES, "input file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        parsed = _csv_rows(text, path)
    elif suffix == ".jsonl" or (suffix != ".json" and not text.lstrip().startswith("[")):
        parsed = _jsonl_rows(text, path)
    else:
        parsed = _json_rows(text, path)
    return parsed, str(path), path.resolve().parent


def _jsonl_rows(text: str, path: Path) -> list[Any]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError) as e:
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                raise InputError(f"{path}: line {n}: not valid JSON ({msg})") from None
    return out


def _json_rows(text: str, path: Path) -> list[Any]:
    from producer.inputs import parse_json

    data = parse_json(text, path)
    if not isinstance(data, list):
        raise InputError(f"{path}: a JSON input file is a list of objects, one per row")
    return data


def _csv_rows(text: str, path: Path) -> list[Any]:
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        for n, row in enumerate(reader, 1):
            if None in row or any(v is None for v in row.values()):
                raise InputError(
                    f"{path}: row {n}: has a different number of fields than the header"
                )
            rows.append(dict(row))
    except csv.Error as e:
        raise InputError(f"{path}: not valid CSV ({e})") from None
    if reader.fieldnames is None:
        raise InputError(f"{path}: empty: a CSV input file starts with a header row")
    return rows


def check_rows(recipe: Recipe, rows: list[Any], source: str) -> list[dict[str, Any]]:
    """Every row an object with the recipe's inputs, no field named like a stage."""
    if not rows:
        raise InputError(f"{source}: no rows: give at least one")
    if len(rows) > MAX_ROWS:
        raise InputError(f"{source}: {len(rows)} rows, allowed at most {MAX_ROWS}")
    stage_names = {s.name for s in recipe.stages} | {
        s.name + VERSIONS_SUFFIX for s in recipe.stages
    }
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InputError(
                f"{source}: row {n}: a row is an object of fields, not {type(row).__name__}"
            )
        missing = [f for f in recipe.inputs if f not in row]
        if missing:
            allowed = ", ".join(recipe.inputs)
            raise InputError(
                f"{source}: row {n}: missing input field {missing[0]!r} (the recipe's inputs: "
                f"{allowed})"
            )
        clash = next((k for k in row if k in stage_names), None)
        if clash:
            raise InputError(f"{source}: row {n}: field {clash!r} has the name of a stage")
        if not all(isinstance(k, str) for k in row):
            raise InputError(f"{source}: row {n}: field names must be texts")
        if len(json.dumps(row, ensure_ascii=False)) > MAX_ROW_JSON_CHARS:
            raise InputError(
                f"{source}: row {n}: larger than {MAX_ROW_JSON_CHARS} characters of JSON"
            )
    return rows


def _stand_ins(recipe: Recipe) -> dict[str, Any]:
    """Values shaped like each stage's output, for rendering before any answer exists."""
    out: dict[str, Any] = {}
    for stage in recipe.stages:
        sample = sample_for_schema(stage.json_schema) if stage.json_schema else "..."
        out[stage.name] = sample
        out[stage.name + VERSIONS_SUFFIX] = [sample] * stage.versions
    return out


def prepare(
    recipe: Path | str | Mapping[str, Any],
    rows: Path | str | Iterable[Mapping[str, Any]],
    settings: Settings,
) -> Prepared:
    """Read and check a recipe and its rows; render every template for every row."""
    data, source = load_recipe(recipe)
    checked = parse_recipe(data, source, settings)
    raw_rows, rows_source, folder = load_rows(rows)
    row_list = check_rows(checked, raw_rows, rows_source)
    stand_ins = _stand_ins(checked)
    prepared = Prepared(checked, row_list, source)
    images: dict[Path, str] = {}
    for n, row in enumerate(row_list, 1):
        prepared.inputs[row_input(n)] = json.dumps(row, ensure_ascii=False)
        for stage in checked.stages:
            where = f"{rows_source}: row {n}: stage {stage.name}"
            context = {**row, **{k: stand_ins[k] for k in _visible(stage)}}
            prompt = _render(stage.prompt, context, where, "prompt")
            messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
            if stage.system:
                messages.append(
                    {"role": "system", "content": _render(stage.system, context, where, "system")}
                )
            if stage.image:
                name = _render(stage.image, row, where, "image")
                path = folder / name.strip()  # an absolute name stays as it is
                if path not in images:
                    images[path] = _read_image(path, where)
                prepared.inputs[image_input(step_id(n, stage.name))] = images[path]
                messages.append({"role": "user", "content": [{"type": "image_url"}]})
            prepared.prompt_tokens += estimate_messages_tokens(messages) * stage.versions
    return prepared


def _visible(stage: Any) -> list[str]:
    return [name for need in stage.needs for name in (need, need + VERSIONS_SUFFIX)]


def _render(source: str, context: dict[str, Any], where: str, what: str) -> str:
    try:
        return render(source, context)
    except TemplateProblem as e:
        raise InputError(f"{where}: {what}: {e}") from None


def _read_image(path: Path, where: str) -> str:
    from producer.inputs import read_image

    try:
        data_url, _ = read_image(path)
    except InputError as e:
        raise InputError(f"{where}: image: {e}") from None
    return data_url


def plan_text(prepared: Prepared) -> str:
    """What ``genfleet recipe check`` prints: the graph, the steps, a token estimate."""
    recipe = prepared.recipe
    rows = len(prepared.rows)
    per_row = sum(s.versions for s in recipe.stages)
    out_tokens = rows * sum(s.versions * (s.max_tokens or 0) for s in recipe.stages)
    lines = [
        f"recipe {recipe.name} ({prepared.source}): {rows} row(s), {len(recipe.stages)} stage(s), "
        f"{rows * per_row} steps ({per_row} per row)",
        "stages:",
    ]
    for s in recipe.stages:
        versions = f"{s.versions} version{'s' if s.versions > 1 else ''}"
        extra = ", JSON schema" if s.json_schema else ""
        extra += ", image" if s.image else ""
        needs = ", ".join(s.needs) if s.needs else "(the row)"
        lines.append(f"  {s.name}: {versions}, model {s.model}{extra}; needs {needs}")
    path = critical_path({s.name: list(s.needs) for s in recipe.stages})
    lines.append(f"critical path: {' -> '.join(path)} ({len(path)} call(s) a row)")
    lines.append(
        f"estimated tokens: about {prepared.prompt_tokens:,} in, at most {out_tokens:,} out "
        "(max_tokens; re-asks not counted)"
    )
    lines.append("nothing was enqueued")
    return "\n".join(lines)


def critical_path(needs: dict[str, list[str]]) -> list[str]:
    """The longest chain of stages that must run one after another."""
    memo: dict[str, list[str]] = {}

    def longest(name: str) -> list[str]:
        if name not in memo:
            before = max((longest(n) for n in needs[name]), key=len, default=[])
            memo[name] = [*before, name]
        return memo[name]

    return max((longest(n) for n in needs), key=len)


def check_recipe(
    recipe: Path | str | Mapping[str, Any],
    rows: Path | str | Iterable[Mapping[str, Any]],
    *,
    settings: Settings | None = None,
) -> str:
    """Check a recipe and its rows as ``submit_recipe`` would; returns the plan text.
    Enqueues nothing and needs no Redis."""
    return plan_text(prepare(recipe, rows, settings or load_settings()))


def submit_recipe(
    recipe: Path | str | Mapping[str, Any],
    rows: Path | str | Iterable[Mapping[str, Any]],
    *,
    cache: bool | None = None,
    mode: str = C.API_ONLINE,
    max_cost_usd: float | None = None,
    settings: Settings | None = None,
) -> Any:
    """Run a recipe over input rows; returns the job handle.

    ``recipe`` is a path, a YAML/JSON text or a dict; ``rows`` a path (JSONL, JSON
    list or CSV) or an iterable of dicts. Each row runs the stage graph on its own.
    Everything is checked first: a bad recipe or row raises ``InputError`` (one
    line) and nothing is enqueued. ``cache`` turns the response cache on or off;
    ``mode`` and ``max_cost_usd`` are the spending options every kind takes.
    """
    from producer.canvas import job_canvas
    from producer.client import connect
    from producer.jobs import enqueue, make_record
    from producer.spend import spend_spec

    prepared = prepare(recipe, rows, settings or load_settings())
    client = connect(settings)
    models = [stage.model for stage in prepared.recipe.stages]
    spend = spend_spec(client.settings, mode, max_cost_usd, models)
    spec = RecipeSpec(recipe=prepared.recipe, rows=len(prepared.rows), cache=cache,
                      source=prepared.source, **spend)  # fmt: skip
    record = make_record(
        RECIPE.name, spec.model_dump(by_alias=True), RECIPE.step_ids(spec), label=spec.recipe.name
    )
    return enqueue(client, record, job_canvas(client.app, record), prepared.inputs)
