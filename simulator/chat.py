"""Chat requests: check the body and build its deterministic answer before the gate."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simulator import textgen
from simulator.config import SimulatorConfig
from simulator.errors import ApiError
from simulator.tokens import count_messages, count_text

MAX_CHOICES = 16
MAX_TOKENS_LIMIT = 10**6
_DIGEST_FIELDS = ("model", "messages", "temperature", "seed", "n", "user")


def int_field(
    body: Mapping[str, Any], name: str, default: int | None, low: int, high: int
) -> int | None:
    """``body[name]`` checked to be an int in ``low..high`` (400 otherwise)."""
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be an integer in {low}..{high}, got {value!r}.")
    return value


@dataclass(frozen=True)
class ChatPlan:
    """What a chat request will be answered with."""

    model: str
    choices: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    admission_tokens: int  # what the TPM cap counts: prompt + planned completion
    prompt_hash: str
    forced_status: int | None = None  # from the config's fail_patterns


def plan_chat(body: Mapping[str, Any], config: SimulatorConfig) -> ChatPlan:
    """Check a chat request and build its answer; raise :class:`ApiError` on a bad one."""
    messages = _messages(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' must be a non-empty string.")
    if body.get("stream"):
        raise ApiError(400, "The simulator does not support stream=true.")
    max_tokens = int_field(body, "max_completion_tokens", None, 1, MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = int_field(body, "max_tokens", None, 1, MAX_TOKENS_LIMIT)
    n = int_field(body, "n", 1, 1, MAX_CHOICES) or 1
    limit = min(max_tokens or config.output_tokens, config.output_tokens)
    truncated = max_tokens is not None and max_tokens < config.output_tokens
    digest = textgen.request_digest({k: body.get(k) for k in _DIGEST_FIELDS})
    cjk = textgen.is_mostly_cjk(textgen.message_text(messages))
    fmt = body.get("response_format") or {}
    try:
        choices = [
            _choice(i, textgen.rng_for(digest, i), fmt, limit, truncated, cjk) for i in range(n)
        ]
    except (TypeError, ValueError) as e:  # a schema the filler cannot satisfy
        raise ApiError(400, f"Invalid schema for response_format: {e}") from None
    prompt_tokens = count_messages(messages)
    text = textgen.message_text(messages)
    forced = next((st for pat, st in config.fail_patterns.items() if pat in text), None)
    return ChatPlan(
        model=model,
        choices=choices,
        prompt_tokens=prompt_tokens,
        completion_tokens=sum(count_text(c["message"]["content"]) for c in choices),
        admission_tokens=prompt_tokens + limit * n,
        prompt_hash=textgen.prompt_hash(messages),
        forced_status=forced,
    )


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise ApiError(400, "'messages' must be a non-empty list of message objects.")
    return messages


def _choice(
    index: int, rng: random.Random, fmt: Any, limit: int, truncated: bool, cjk: bool
) -> dict[str, Any]:
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    finish = "stop"
    if kind == "json_schema":
        content = json.dumps(textgen.instance_for_schema(_schema_of(fmt), rng), ensure_ascii=False)
    elif kind == "json_object":
        content = json.dumps(textgen.small_json_object(rng))
    elif kind in (None, "text"):
        content = textgen.generate_text(rng, limit, cjk)
        finish = "length" if truncated else "stop"
    else:
        raise ApiError(400, f"Unsupported response_format type {kind!r}.")
    message = {"role": "assistant", "content": content, "refusal": None}
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def _schema_of(fmt: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        raise ApiError(400, "response_format.json_schema.schema must be a JSON object.")
    return schema


def completion_body(plan: ChatPlan, completion_id: str, created: int) -> dict[str, Any]:
    """The ``chat.completion`` JSON document for ``plan``."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": plan.model,
        "choices": plan.choices,
        "usage": {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        },
        "system_fingerprint": "fp_simulator",
    }
