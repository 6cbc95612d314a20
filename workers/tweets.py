"""Tweets from a persona's calendar (seed 002): one call per calendar day.

The persona and each day's plan are job inputs in Redis (``persona:{pair}``,
``plan:{step}``), so a step reads only what it needs. Plain logic, no Celery; the
contract is ``genfleet.kinds.tweets``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, Field

from genfleet.errors import StepSkipped
from genfleet.kinds.tweets import KIND, persona_input, plan_input, split_step
from workers.gateway import ChatResult
from workers.stepcall import StepCall
from workers.structured import ask_json, dumps

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You write one tweet in the voice of the persona you are given, for the day's plan. "
    "Answer with JSON only, matching the schema."
)
PERSONA_FIELDS = ("name", "core", "tweet_strategy", "authenticity", "visual_profile")


class Tweet(BaseModel):
    text: str = Field(min_length=1, max_length=280)
    hashtags: list[str] = Field(max_length=6)
    image_prompt: str = Field(min_length=1, max_length=1000)


def persona_brief(persona: dict[str, Any]) -> dict[str, Any]:
    """The parts of a merged persona a tweet needs (keeps prompts short)."""
    return {k: persona[k] for k in PERSONA_FIELDS if k in persona}


def tweet_messages(persona: dict[str, Any], date: str, plan: Any) -> list[dict[str, Any]]:
    user = (
        f"Persona: {dumps(persona_brief(persona))}\n"
        f"Date: {date}\nPlan for the day: {dumps(plan)}\n"
        "Write the tweet for this day, its hashtags, and a prompt for its image."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _inputs(call: StepCall, names: list[str]) -> list[Any]:
    values = []
    for name, raw in zip(names, call.inputs(names), strict=True):
        if raw is None:
            raise StepSkipped(f"the job's input {name} is missing")
        values.append(json.loads(raw))
    return values


def run_tweet(call: StepCall) -> tuple[dict[str, Any], ChatResult]:
    """Write one day's tweet."""
    record = call.record
    pair, date = split_step(call.step_id)
    persona, plan = _inputs(call, [persona_input(pair), plan_input(call.step_id)])
    spec = KIND.spec(record)
    tweet, usage = ask_json(
        call.gateway, tweet_messages(persona, date, plan), Tweet, call.ctx,
        model=spec.model, max_tokens=spec.max_tokens, max_reasks=spec.max_reasks,
        temperature=0.9,
    )  # fmt: skip
    output = {
        "pair": pair,
        "date": date,
        "persona": persona.get("name", pair),
        **tweet.model_dump(),
    }
    return output, usage.as_call()
