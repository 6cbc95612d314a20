"""Personas from an image (seed 002): seven stages as a graph, then a merge.

Stage 1 (core) reads the image; stage 2 (strategy) needs 1; stage 3 (examples)
needs 1 and 2; stages 4-7 need only 1. Each stage asks for JSON with a schema and
validates it. Plain logic, no Celery; step ids and the graph are the contract's
(``genfleet.kinds.persona``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from genfleet.errors import StepSkipped
from genfleet.kinds.persona import KIND, STAGE_NEEDS, image_input, split_step, step_id
from genfleet.records import JobRecord
from genfleet.store import JobStore
from workers.gateway import ChatResult
from workers.stepcall import StepCall
from workers.structured import ask_json, dumps

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You design believable social-media personas. Answer with JSON only, "
    "matching the schema you are given."
)


class CorePersona(BaseModel):
    name: str
    age: int = Field(ge=13, le=100)
    gender: str
    location: str
    occupation: str
    personality_traits: list[str] = Field(min_length=1, max_length=8)
    interests: list[str] = Field(min_length=1, max_length=10)
    background: str
    speaking_style: str


class TweetStrategy(BaseModel):
    content_pillars: list[str] = Field(min_length=1, max_length=6)
    tone: str
    posting_times: list[str] = Field(min_length=1, max_length=6)
    hashtags: list[str] = Field(max_length=10)
    avoid: list[str] = Field(max_length=10)


class ExampleTweet(BaseModel):
    text: str = Field(min_length=1, max_length=280)
    pillar: str


class ExampleTweets(BaseModel):
    tweets: list[ExampleTweet] = Field(min_length=8, max_length=8)


class Relationship(BaseModel):
    name: str
    relation: str
    note: str


class SocialNetwork(BaseModel):
    relationships: list[Relationship] = Field(min_length=1, max_length=10)
    communities: list[str] = Field(max_length=10)
    audience: str


class Authenticity(BaseModel):
    quirks: list[str] = Field(min_length=1, max_length=8)
    flaws: list[str] = Field(max_length=8)
    recurring_topics: list[str] = Field(max_length=8)
    writing_habits: list[str] = Field(max_length=8)


class VisualProfile(BaseModel):
    appearance: str
    style: str
    color_palette: list[str] = Field(max_length=8)
    photo_style: str
    image_prompt_keywords: list[str] = Field(min_length=1, max_length=12)


class BookEntry(BaseModel):
    keys: list[str] = Field(min_length=1, max_length=6)
    content: str


class CharacterBook(BaseModel):
    entries: list[BookEntry] = Field(min_length=1, max_length=12)


@dataclass(frozen=True)
class Stage:
    name: str
    schema: type[BaseModel]
    needs: tuple[str, ...]
    instruction: str


_SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "core": (CorePersona, "Describe the person in this image as a persona."),
    "strategy": (TweetStrategy, "Write this persona's tweet strategy."),
    "examples": (ExampleTweets,
                 "Write eight example tweets in this persona's voice, following the strategy."),
    "social": (SocialNetwork, "Describe this persona's social network."),
    "authenticity": (Authenticity, "List what makes this persona feel like a real person."),
    "visual": (VisualProfile, "Describe this persona's visual profile."),
    "book": (CharacterBook, "Write a character book (lore entries)."),
}  # fmt: skip
STAGES: tuple[Stage, ...] = tuple(
    Stage(name, _SCHEMAS[name][0], needs, _SCHEMAS[name][1]) for name, needs in STAGE_NEEDS.items()
)
STAGE_BY_NAME = {stage.name: stage for stage in STAGES}
MERGED_FIELDS = {
    "core": "core", "strategy": "tweet_strategy", "examples": "example_tweets",
    "social": "social_network", "authenticity": "authenticity", "visual": "visual_profile",
    "book": "character_book",
}  # fmt: skip


def _dependency(store: JobStore, job_id: str, key: str, name: str) -> Any:
    result = store.step_ok(job_id, step_id(key, name))
    if result is None:
        raise StepSkipped(f"needs {step_id(key, name)}, which has not succeeded")
    return result.output


def stage_messages(stage: Stage, inputs: dict[str, Any], image_url: str | None) -> list[dict]:
    """The chat messages of one stage: its instruction, its inputs, the image for core."""
    text = stage.instruction
    if inputs:
        text += "\n\n" + "\n".join(f"{name}: {dumps(value)}" for name, value in inputs.items())
    if image_url is None:
        content: Any = text
    else:
        image = {"type": "image_url", "image_url": {"url": image_url}}
        content = [{"type": "text", "text": text}, image]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def run_stage(call: StepCall) -> tuple[dict[str, Any], ChatResult]:
    """Run one stage of one persona; its inputs come from earlier stages' results."""
    record, store = call.record, call.store
    key, name = split_step(call.step_id)
    stage = STAGE_BY_NAME[name]
    inputs = {dep: _dependency(store, record.id, key, dep) for dep in stage.needs}
    image_url = store.input(record.id, image_input(key)) if name == "core" else None
    if name == "core" and not image_url:
        raise StepSkipped(f"the image of persona {key} is missing from the job's inputs")
    spec = KIND.spec(record)
    answer, usage = ask_json(
        call.gateway, stage_messages(stage, inputs, image_url), stage.schema, call.ctx,
        model=spec.model, max_tokens=spec.max_tokens, max_reasks=spec.max_reasks,
        temperature=0.8,
    )  # fmt: skip
    logger.info("job %s: persona %s stage %s done", record.id, key, name)
    return answer.model_dump(), usage.as_call()


def run_merge(call: StepCall) -> tuple[dict[str, Any], None]:
    """The merge step: written to ``GENFLEET_HOME/outputs/JOB/persona-pN.json``."""
    out_dir = call.settings.genfleet_home / "outputs" / call.record.id
    return merge(call.store, call.record, call.step_id, out_dir), None


def merge(store: JobStore, record: JobRecord, step: str, out_dir: Path) -> dict[str, Any]:
    """Merge a persona's stages (those that succeeded) and write it as a JSON file."""
    key, _ = split_step(step)
    core = _dependency(store, record.id, key, "core")
    persona: dict[str, Any] = {"name": core.get("name", key), "persona_key": key}
    missing = []
    for stage in STAGES:
        result = store.step_ok(record.id, step_id(key, stage.name))
        if result is None:
            missing.append(stage.name)
        else:
            persona[MERGED_FIELDS[stage.name]] = result.output
    source = next(p for p in KIND.spec(record).personas if p.key == key)
    persona["source_image"] = {"name": source.name, "sha256": source.sha256, "bytes": source.bytes}
    persona["missing_stages"] = missing
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"persona-{key}.json"
    path.write_text(json.dumps(persona, ensure_ascii=False, indent=2), encoding="utf-8")
    if missing:
        logger.warning("job %s: persona %s merged without %s", record.id, key, ", ".join(missing))
    return {"persona": persona, "path": str(path)}
