"""Running one stage of one row of a recipe: render, ask, check.

Plain logic, no Celery; the contract is ``genfleet.kinds.recipe``. The prompt sees
the row's fields and the outputs of the stages it needs (the parsed JSON of a
stage with a schema, else its text; for a stage with versions the first that
succeeded, and all of them as ``STAGE_versions``). A need that has not succeeded
makes this step skipped, with the reason.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from genfleet.errors import PermanentLLMError, StepSkipped
from genfleet.kinds.recipe import (
    KIND,
    VERSIONS_SUFFIX,
    Stage,
    image_input,
    parse_step,
    row_input,
    stage_steps,
    step_id,
)
from genfleet.store import JobStore
from genfleet.templates import TemplateProblem, render
from workers.gateway import ChatRequest, ChatResult
from workers.stepcall import StepCall
from workers.structured import Usage, ask_checked

logger = logging.getLogger(__name__)

JSON_SYSTEM = "Answer with JSON only, matching the schema you are given."


def run_stage(call: StepCall) -> tuple[Any, ChatResult]:
    """One version of one stage of one row."""
    record, store = call.record, call.store
    recipe = KIND.spec(record).recipe
    row, name, version = parse_step(call.step_id)
    stage = recipe.stage(name)
    context = _row(store, record.id, row)
    for need in stage.needs:
        context.update(_need(store, record.id, row, recipe.stage(need)))
    messages = _messages(store, record.id, row, stage, context, call.step_id)
    seed = version - 1 if stage.versions > 1 else None
    model = stage.model or ""
    max_tokens = stage.max_tokens or 1024
    if stage.json_schema is None:
        request = ChatRequest(messages=messages, model=model, max_tokens=max_tokens,
                              temperature=stage.temperature, seed=seed)  # fmt: skip
        result = call.gateway.chat(request, call.ctx)
        if not result.text.strip():
            raise PermanentLLMError(
                f"stage {name}: the model's answer was empty", step=call.step_id
            )
        return result.text, result
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": stage.json_schema}}
    answer, usage = ask_checked(
        call.gateway, messages, fmt, _schema_parser(stage.json_schema), f"the schema of {name}",
        call.ctx, model=model, max_tokens=max_tokens, max_reasks=stage.max_reasks,
        temperature=stage.temperature, seed=seed, usage=Usage(),
    )  # fmt: skip
    return answer, usage.as_call()


def _row(store: JobStore, job_id: str, row: int) -> dict[str, Any]:
    raw = store.input(job_id, row_input(row))
    if raw is None:
        raise StepSkipped(f"row {row} is missing from the job's inputs")
    data: dict[str, Any] = json.loads(raw)
    return data


def _need(store: JobStore, job_id: str, row: int, need: Stage) -> dict[str, Any]:
    results = [store.step_ok(job_id, sid) for sid in stage_steps(row, need)]
    values = [r.output for r in results if r is not None]
    if not values:
        raise StepSkipped(f"needs {step_id(row, need.name)}, which has not succeeded")
    return {need.name: values[0], need.name + VERSIONS_SUFFIX: values}


def _messages(
    store: JobStore, job_id: str, row: int, stage: Stage, context: dict[str, Any], step: str
) -> list[dict[str, Any]]:
    try:
        prompt = render(stage.prompt, context)
        system = render(stage.system, context) if stage.system else None
    except TemplateProblem as e:
        raise PermanentLLMError(f"stage {stage.name}: prompt: {e}", step=step) from None
    if system is None and stage.json_schema is not None:
        system = JSON_SYSTEM
    content: Any = prompt
    if stage.image:
        url = store.input(job_id, image_input(step_id(row, stage.name)))
        if not url:
            raise StepSkipped(f"the image of {step_id(row, stage.name)} is missing from the job")
        content = [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": content}]


def _schema_parser(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    validator = validator_for(schema, default=Draft202012Validator)(schema)

    def parse(text: str) -> Any:
        stripped = text.strip()
        if stripped.startswith("```"):
            stripped = stripped.split("\n", 1)[-1].rsplit("```", 1)[0]
        if not stripped:
            raise ValueError("the answer was empty")
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e.msg} at line {e.lineno}") from None
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "the answer"
            raise ValueError(f"{where}: {error.message[:300]}")
        return value

    return parse
