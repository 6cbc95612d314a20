"""Asking a model for JSON that matches a pydantic schema, with bounded re-asks.

The request carries a ``json_schema`` response format; the answer is validated with
the model class. An invalid answer (bad or truncated JSON, an empty answer, the
wrong shape) is re-asked with the validation error, at most ``max_reasks`` times;
then ``InvalidOutputError`` is raised with the raw text kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from genfleet.errors import InvalidOutputError
from workers.gateway import CallContext, ChatRequest, ChatResult, LLMGateway

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
MAX_ERROR_CHARS = 500


@dataclass
class Usage:
    """What a structured answer cost over all its calls."""

    calls: int = 0
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = ""
    cached: bool = True
    cost_usd: float | None = 0.0  # None once a call had no price
    key_id: str = ""  # the key of the last call (stored in the step's meta)
    limiter_wait_s: float = 0.0
    effective_concurrency: int = 0

    def add(self, result: ChatResult) -> None:
        self.calls += 1
        self.key_id = result.key_id or self.key_id
        self.limiter_wait_s += result.limiter_wait_s
        self.effective_concurrency = result.effective_concurrency or self.effective_concurrency
        self.attempts += result.attempts
        self.tokens_in += result.tokens_in
        self.tokens_out += result.tokens_out
        self.model = result.model
        self.cached = self.cached and result.cached
        if self.cost_usd is not None:
            self.cost_usd = None if result.cost_usd is None else self.cost_usd + result.cost_usd

    def as_call(self, text: str = "") -> ChatResult:
        """The totals as one ``ChatResult``, the shape the step runner stores."""
        return ChatResult(
            text=text, model=self.model, tokens_in=self.tokens_in, tokens_out=self.tokens_out,
            finish_reason="stop", attempts=max(1, self.attempts), seconds=0.0,
            cached=self.cached and self.calls > 0, cost_usd=self.cost_usd, key_id=self.key_id,
            limiter_wait_s=round(self.limiter_wait_s, 4),
            effective_concurrency=self.effective_concurrency,
        )  # fmt: skip


@cache
def response_format(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI ``json_schema`` response format of a pydantic model (made once per
    model: building a JSON schema costs more than the rest of a call's preparation).
    Shared: callers must not change it."""
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


def parse_json(model: type[M], text: str) -> M:
    """Validate an answer; raises ``ValidationError`` or ``ValueError``."""
    if not text.strip():
        raise ValueError("the answer was empty")
    return model.model_validate_json(_strip_fences(text))


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[-1].rsplit("```", 1)[0]
    return stripped


def ask_json(
    gateway: LLMGateway, messages: list[dict[str, Any]], schema: type[M], ctx: CallContext, *,
    model: str, max_tokens: int, max_reasks: int, temperature: float = 0.7,
    seed: int | None = None, usage: Usage | None = None,
) -> tuple[M, Usage]:  # fmt: skip
    """One validated answer; re-asks with the error at most ``max_reasks`` times."""
    return ask_checked(
        gateway, messages, response_format(schema), lambda text: parse_json(schema, text),
        schema.__name__, ctx, model=model, max_tokens=max_tokens, max_reasks=max_reasks,
        temperature=temperature, seed=seed, usage=usage,
    )  # fmt: skip


def ask_checked(
    gateway: LLMGateway, messages: list[dict[str, Any]], fmt: dict[str, Any],
    parse: Callable[[str], T], what: str, ctx: CallContext, *, model: str, max_tokens: int,
    max_reasks: int, temperature: float = 0.7, seed: int | None = None,
    usage: Usage | None = None,
) -> tuple[T, Usage]:  # fmt: skip
    """An answer ``parse`` accepts (it raises ``ValueError`` or ``ValidationError``
    saying what is wrong); re-asks with that problem at most ``max_reasks`` times,
    then raises ``InvalidOutputError`` with the raw text kept."""
    usage = usage or Usage()
    convo = list(messages)
    for attempt in range(max_reasks + 1):
        request = ChatRequest(
            messages=convo, model=model, max_tokens=max_tokens, temperature=temperature,
            response_format=fmt, seed=seed,
        )  # fmt: skip
        result = gateway.chat(request, ctx)
        usage.add(result)
        try:
            return parse(result.text), usage
        except (ValidationError, ValueError) as e:
            problem = _problem(e)
            logger.warning(
                "job %s step %s: invalid answer (%s), re-ask %d of %d",
                ctx.job_id, ctx.step, problem, attempt + 1, max_reasks,
            )  # fmt: skip
            if attempt == max_reasks:
                error = InvalidOutputError(
                    f"the model's answer did not match {what} after "
                    f"{max_reasks} re-ask(s): {problem}",
                    raw=result.text, model=model, job_id=ctx.job_id, step=ctx.step,
                )  # fmt: skip
                error.attempts = usage.attempts
                raise error from None
            convo = [*messages, {"role": "assistant", "content": result.text[:4000]},
                     {"role": "user", "content": reask_message(problem)}]  # fmt: skip
    raise AssertionError("unreachable")


def reask_message(problem: str) -> str:
    return (
        "Your answer was not valid: "
        f"{problem}. Answer again with only a JSON object that matches the schema."
    )


def _problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the answer"
        text = f"{where}: {first['msg']}"
    else:
        text = str(error)
    return text[:MAX_ERROR_CHARS]


def dumps(value: Any) -> str:
    """Compact JSON for prompts."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
