"""Batch item generation (seed 003): several items per call, re-asking only for the missing.

Every topic x level combination gets ``per_combo`` items, asked ``batch_size`` at a
time. Each item of an answer is validated on its own; valid ones are kept and only
the missing count is asked for again (at most ``MAX_ITEM_REASKS`` times). A review
step may pass the draft items to a stronger model. Plain logic, no Celery; the
contract is ``genfleet.kinds.batch``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from genfleet.errors import InvalidOutputError, StepSkipped
from genfleet.kinds.batch import KIND, BatchSpec, chunk_sizes, draft_of, parse_step
from workers.gateway import CallContext, ChatRequest, ChatResult, LLMGateway
from workers.stepcall import StepCall
from workers.structured import Usage, dumps, response_format

logger = logging.getLogger(__name__)

MAX_ITEM_REASKS = 2


class ClozeItem(BaseModel):
    sentence: str = Field(
        min_length=3, pattern="___", description="a sentence with one blank written ___"
    )
    answer: str = Field(min_length=1, description="the word that fills the blank")
    distractors: list[str] = Field(min_length=2, max_length=5, description="wrong options")
    explanation: str

    @model_validator(mode="after")
    def _consistent(self) -> ClozeItem:
        if self.answer in self.distractors:
            raise ValueError("the answer is also among the distractors")
        return self


class VocabItem(BaseModel):
    word: str = Field(min_length=1)
    reading: str
    meaning: str = Field(min_length=1)
    example: str = Field(min_length=1)


class TranslationItem(BaseModel):
    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    note: str


ITEM_KINDS: dict[str, type[BaseModel]] = {
    "cloze": ClozeItem,
    "vocab": VocabItem,
    "translation": TranslationItem,
}


def answer_schema(kind: str, count: int) -> type[BaseModel]:
    """The JSON answer of one call: exactly ``count`` items of ``kind``."""
    item = ITEM_KINDS[kind]
    items_field = (list[item], Field(min_length=count, max_length=count))  # type: ignore[valid-type]
    return create_model(f"{item.__name__}List{count}", items=items_field)


def item_messages(spec: BatchSpec, topic: str, level: int, count: int,
                  avoid: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    user = (
        f"Write {count} {spec.kind} items for learners of language '{spec.lang}' "
        f"at level {level}, on the topic '{topic}'. Each item must be different."
    )
    if avoid:
        user += f"\nDo not repeat these: {dumps(avoid)}"
    system = "You write language-learning items. Answer with JSON only, matching the schema."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def split_items(kind: str, text: str) -> tuple[list[dict[str, Any]], int]:
    """The valid items of an answer, and how many were invalid."""
    try:
        raw_items = json.loads(text.strip() or "null")["items"]
        if not isinstance(raw_items, list):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        return [], 0
    valid, invalid = [], 0
    for raw in raw_items:
        try:
            valid.append(ITEM_KINDS[kind].model_validate(raw).model_dump())
        except ValidationError:
            invalid += 1
    return valid, invalid


def _ask(gateway: LLMGateway, spec: BatchSpec, messages: list[dict[str, Any]], count: int,
         model: str, ctx: CallContext, usage: Usage) -> str:  # fmt: skip
    request = ChatRequest(
        messages=messages, model=model, max_tokens=spec.max_tokens_per_item * count,
        temperature=0.8, response_format=response_format(answer_schema(spec.kind, count)),
    )  # fmt: skip
    result = gateway.chat(request, ctx)
    usage.add(result)
    return result.text


def run_items(call: StepCall) -> tuple[dict[str, Any], ChatResult]:
    """Ask for this step's items; re-ask only for the missing ones."""
    gateway, record, step, ctx = call.gateway, call.record, call.step_id, call.ctx
    spec = KIND.spec(record)
    t, level, c = parse_step(step)
    topic = spec.topics[t - 1]
    wanted = chunk_sizes(spec.per_combo, spec.batch_size)[c - 1]
    items: list[dict[str, Any]] = []
    usage, last_text, reasks = Usage(), "", 0
    while len(items) < wanted and reasks <= MAX_ITEM_REASKS:
        missing = wanted - len(items)
        avoid = [dumps(i)[:80] for i in items]
        messages = item_messages(spec, topic, level, missing, avoid)
        last_text = _ask(gateway, spec, messages, missing, spec.model, ctx, usage)
        got, invalid = split_items(spec.kind, last_text)
        items += got[:missing]
        if len(items) < wanted:
            reasks += 1
            logger.warning("job %s step %s: %d of %d items usable (%d invalid); re-asking",
                           record.id, step, len(items), wanted, invalid)  # fmt: skip
    return _items_output(step, items, wanted, reasks, usage, last_text, ctx)


def _items_output(
    step: str, items: list[dict[str, Any]], wanted: int, reasks: int, usage: Usage, raw: str,
    ctx: CallContext,
) -> tuple[dict[str, Any], ChatResult]:  # fmt: skip
    if not items:
        error = InvalidOutputError(
            f"no usable item after {reasks} re-ask(s)", raw=raw, job_id=ctx.job_id, step=step
        )
        error.attempts = usage.attempts
        raise error
    output = {"items": items[:wanted], "requested": wanted, "missing": wanted - len(items),
              "reasks": reasks, "calls": usage.calls}  # fmt: skip
    return output, usage.as_call()


def run_review(call: StepCall) -> tuple[dict[str, Any], ChatResult]:
    """Pass a draft step's items to the review model; returns corrected items."""
    record, step = call.record, call.step_id
    spec = KIND.spec(record)
    draft_id = draft_of(step)
    draft = call.store.step_ok(record.id, draft_id)
    if draft is None:
        raise StepSkipped(f"needs {draft_id}, which has not succeeded")
    drafts = draft.output["items"]
    system = "You review language-learning items. Fix mistakes; keep the same number of items."
    user = f"Review these {spec.kind} items for language '{spec.lang}': {dumps(drafts)}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    usage = Usage()
    review_model = spec.review_model or spec.model
    text = _ask(call.gateway, spec, messages, len(drafts), review_model, call.ctx, usage)
    reviewed, _ = split_items(spec.kind, text)
    if len(reviewed) < len(drafts):  # keep the draft where the review is unusable
        reviewed += drafts[len(reviewed) :]
    output = {
        "items": reviewed[: len(drafts)],
        "requested": draft.output["requested"],
        "missing": draft.output["missing"],
        "reviewed": True,
        "calls": usage.calls,
    }
    return output, usage.as_call()
