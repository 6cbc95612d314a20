"""The echo kind's logic (see ``tests/echo_kind.py``): prompts and calls only."""

from __future__ import annotations

from tests.echo_kind import KIND, word_index
from workers.gateway import ChatRequest, ChatResult
from workers.stepcall import StepCall


def run_echo(call: StepCall) -> tuple[str, ChatResult]:
    spec = KIND.spec(call.record)
    word = spec.words[word_index(call.step_id)]
    messages = [{"role": "user", "content": f"Repeat this word: {word}"}]
    result = call.gateway.chat(
        ChatRequest(messages=messages, model=spec.model, max_tokens=20), call.ctx
    )
    return result.text, result
