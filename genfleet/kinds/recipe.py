"""The recipe kind: users' own pipelines, declared in a YAML or JSON file.

A recipe names its input fields and its stages; each stage has a prompt template,
optional JSON schema, model options, ``versions`` and the stages it ``needs``. Each
input row runs the stage graph on its own. Step ids: ``r{row}.{stage}``, or
``r{row}.{stage}.v{k}`` for a stage with several versions (rows 1-based). Job
inputs: ``row:{row}`` (the row as JSON) and ``image:{step}`` (a stage's image as a
data URL). Logic: ``workers.recipe``; reading and checking files: ``producer.recipes``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genfleet import constants as C
from genfleet.kinds.base import JobKind, ReadInputs, SpecBase, TaskDef, register
from genfleet.records import JobMetrics, JobRecord, JobView

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"  # goes into job ids and Flower task ids
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,39}$"  # a template variable
MAX_STAGES = 20
MAX_ROWS = 100_000
VERSIONS_SUFFIX = "_versions"


class Stage(BaseModel):
    """One stage of a recipe, as written in the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=IDENT_PATTERN)
    prompt: str = Field(min_length=1, max_length=20_000)
    system: str | None = Field(default=None, max_length=20_000)
    needs: list[str] = Field(default_factory=list, max_length=MAX_STAGES)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    max_reasks: int = Field(default=2, ge=0, le=5)
    versions: int = Field(default=1, ge=1, le=10)
    image: str | None = Field(default=None, min_length=1, max_length=1000)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from jsonschema.exceptions import SchemaError
            from jsonschema.validators import validator_for

            try:
                validator_for(value).check_schema(value)
            except SchemaError as e:
                raise ValueError(f"not a valid JSON schema: {e.message}") from None
        return value


class Recipe(BaseModel):
    """A whole recipe file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    model: str | None = Field(default=None, min_length=1, max_length=200)
    inputs: list[str] = Field(default_factory=list, max_length=100)
    stages: list[Stage] = Field(min_length=1, max_length=MAX_STAGES)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value):
            raise ValueError(
                "give lowercase letters, digits and '-' (at most 40, first not '-'), "
                "e.g. product-blurbs"
            )
        return value

    @field_validator("inputs")
    @classmethod
    def _fields(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(IDENT_PATTERN, name):
                raise ValueError(f"input {name!r} is not a name (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _graph(self) -> Recipe:
        names = [s.name for s in self.stages]
        taken = set(self.inputs)
        for stage in self.stages:
            if names.count(stage.name) > 1:
                raise ValueError(f"stage {stage.name!r} is defined twice")
            if stage.name in taken or stage.name + VERSIONS_SUFFIX in taken:
                raise ValueError(f"stage {stage.name!r} has the name of an input field")
            for need in stage.needs:
                if need not in names:
                    raise ValueError(f"stage {stage.name!r} needs {need!r}, which is no stage")
                if need == stage.name:
                    raise ValueError(f"stage {stage.name!r} needs itself")
        cycle = find_cycle({s.name: list(s.needs) for s in self.stages})
        if cycle:
            raise ValueError(f"the stages form a cycle: {' -> '.join(cycle)}")
        return self

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def find_cycle(needs: dict[str, list[str]]) -> list[str]:
    """A cycle of the graph as a path (first node repeated at the end), or []."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for need in needs.get(node, []):
            if state.get(need) == 1:
                return path[path.index(need) :] + [need]
            if need not in state:
                found = visit(need)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return []

    for node in needs:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


class RecipeSpec(SpecBase):
    """What a recipe job stores: the recipe (models and max_tokens resolved), the
    number of rows and the response cache choice."""

    recipe: Recipe
    rows: int = Field(ge=1, le=MAX_ROWS)
    cache: bool | None = None
    source: str = ""  # the recipe file, for people reading the job


def step_id(row: int, stage: str, version: int = 1, versions: int = 1) -> str:
    """``r3.blurb`` (one version) or ``r3.blurb.v2``."""
    return f"r{row}.{stage}" if versions == 1 else f"r{row}.{stage}.v{version}"


def parse_step(step: str) -> tuple[int, str, int]:
    """``r3.blurb.v2`` -> (3, ``blurb``, 2); ``r3.facts`` -> (3, ``facts``, 1)."""
    parts = step.split(".")
    if len(parts) not in (2, 3) or not parts[0][1:].isdigit() or not parts[0].startswith("r"):
        raise ValueError(f"not a recipe step id: {step!r}")
    version = 1
    if len(parts) == 3:
        if not parts[2].startswith("v") or not parts[2][1:].isdigit():
            raise ValueError(f"not a recipe step id: {step!r}")
        version = int(parts[2][1:])
    return int(parts[0][1:]), parts[1], version


def stage_steps(row: int, stage: Stage) -> list[str]:
    """Every step of one stage of one row."""
    return [step_id(row, stage.name, v, stage.versions) for v in range(1, stage.versions + 1)]


def row_input(row: int) -> str:
    return f"row:{row}"


def image_input(step: str) -> str:
    return f"image:{step}"


def graph_canvas(
    names: list[str],
    needs: dict[str, list[str]],
    node: Callable[[str], list[Signature]],
    join: Callable[[], Signature],
) -> Signature:
    """A canvas that runs ``names`` so that each starts once its ``needs`` (among
    ``names``) are done: a stage every other one follows is chained first; stages
    that do not depend on each other run side by side. ``node`` gives one stage's
    steps (its versions). Every group is closed by a chord whose body is ``join``, a
    no-op task: Celery does not reliably wait for a group at the end of a chain
    inside a chord (steps store no Celery result), nor chain a group into a group."""
    parts = [_component(c, needs, node, join) for c in _components(names, needs)]
    return _side_by_side(parts, join)


def _side_by_side(parts: list[Signature], join: Callable[[], Signature]) -> Signature:
    from celery import chord, group

    return parts[0] if len(parts) == 1 else chord(group(parts), join())


def _component(
    names: list[str],
    needs: dict[str, list[str]],
    node: Callable[[str], list[Signature]],
    join: Callable[[], Signature],
) -> Signature:
    from celery import chain

    inside = set(names)
    sources = [n for n in names if not set(needs[n]) & inside]
    rest = [n for n in names if n not in sources]
    head = _side_by_side([sig for s in sources for sig in node(s)], join)
    if not rest:
        return head
    return chain(head, graph_canvas(rest, needs, node, join))


def _components(names: list[str], needs: dict[str, list[str]]) -> list[list[str]]:
    """``names`` split into groups connected by ``needs`` (in the given order)."""
    inside = set(names)
    links: dict[str, set[str]] = {n: set() for n in names}
    for n in names:
        for m in needs[n]:
            if m in inside:
                links[n].add(m)
                links[m].add(n)
    seen: set[str] = set()
    out = []
    for start in names:
        if start in seen:
            continue
        todo, members = [start], set()
        while todo:
            n = todo.pop()
            if n not in members:
                members.add(n)
                todo.extend(links[n] - members)
        seen |= members
        out.append([n for n in names if n in members])
    return out


class RecipeKind(JobKind[RecipeSpec]):
    name = C.KIND_RECIPE
    spec_model = RecipeSpec
    tasks = (
        TaskDef(C.TASK_RECIPE_STAGE, "workers.recipe:run_stage",
                "One stage (one version) of one row of a recipe."),
    )  # fmt: skip

    def label(self, record: JobRecord) -> str:
        return str(record.spec.get("recipe", {}).get("name", self.name))

    def step_ids(self, spec: RecipeSpec) -> list[str]:
        return [
            sid
            for row in range(1, spec.rows + 1)
            for stage in spec.recipe.stages
            for sid in stage_steps(row, stage)
        ]

    def parts(
        self, app: Celery, record: JobRecord, steps: Collection[str], round_: int
    ) -> list[Signature]:

        from genfleet.kinds.canvas import step

        recipe = self.spec(record).recipe
        needs = {s.name: list(s.needs) for s in recipe.stages}
        by_row: dict[int, dict[str, list[tuple[int, str]]]] = {}
        for n, sid in enumerate(record.step_ids):
            if sid in steps:
                row, stage, _ = parse_step(sid)
                by_row.setdefault(row, {}).setdefault(stage, []).append((n, sid))

        def join() -> Signature:
            return app.signature(C.TASK_JOIN, args=(record.id,), immutable=True)

        out = []
        for todo in by_row.values():

            def node(stage: str, todo: dict[str, list[tuple[int, str]]] = todo) -> list[Signature]:
                return [step(app, C.TASK_RECIPE_STAGE, record.id, sid, n, round_)
                        for n, sid in todo[stage]]  # fmt: skip

            names = [s.name for s in recipe.stages if s.name in todo]
            out.append(graph_canvas(names, needs, node, join))
        return out

    def records(self, view: JobView, read_inputs: ReadInputs) -> list[dict[str, Any]]:
        """One line per input row: its input, its stages' outputs and errors."""
        spec = self.spec(view.record)
        rows = read_inputs([row_input(n) for n in range(1, spec.rows + 1)])
        out = []
        for n in range(1, spec.rows + 1):
            raw = rows.get(row_input(n))
            outputs: dict[str, Any] = {}
            errors: dict[str, str] = {}
            for stage in spec.recipe.stages:
                results = [view.ok.get(s) or view.failed.get(s) for s in stage_steps(n, stage)]
                values = [r.output for r in results if r is not None and r.ok]
                problems = [
                    (v, r.error or "failed") for v, r in enumerate(results, 1) if r and not r.ok
                ]
                if stage.versions == 1:
                    if values:
                        outputs[stage.name] = values[0]
                elif values:
                    outputs[stage.name] = values
                if problems:
                    errors[stage.name] = "; ".join(
                        msg if stage.versions == 1 else f"v{v}: {msg}" for v, msg in problems
                    )
            record = {"row": n, "input": json.loads(raw) if raw else None,
                      "outputs": outputs, "errors": errors}  # fmt: skip
            out.append(record)
        return out

    def metrics(self, view: JobView, metrics: JobMetrics) -> dict[str, Any]:
        """Per stage: steps ok, failed and skipped (a need failed); complete rows."""
        spec = self.spec(view.record)
        stages: dict[str, dict[str, int]] = {}
        complete = set(range(1, spec.rows + 1))
        for stage in spec.recipe.stages:
            counts = {"ok": 0, "failed": 0, "skipped": 0}
            for row in range(1, spec.rows + 1):
                for sid in stage_steps(row, stage):
                    if sid in view.ok:
                        counts["ok"] += 1
                        continue
                    complete.discard(row)
                    failed = view.failed.get(sid)
                    if failed is not None:
                        skipped = failed.error_type == "StepSkipped"
                        counts["skipped" if skipped else "failed"] += 1
            stages[stage.name] = counts
        return {"recipe": {"rows": spec.rows, "rows_complete": len(complete), "stages": stages}}


KIND = register(RecipeKind())
