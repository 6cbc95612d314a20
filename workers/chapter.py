"""Chapter versions (seed 000): prompts and the generation of one version.

Plain logic, no Celery: the task in ``workers.tasks`` calls ``generate_version``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from genfleet.records import JobRecord
from workers.gateway import CallContext, ChatRequest, ChatResult, LLMGateway

logger = logging.getLogger(__name__)

CHAPTER_TEMPERATURE = 0.9  # candidate versions should differ
SYSTEM_PROMPT = (
    "You are a novelist. Write the full text of the requested chapter in the language "
    "of the outline. Return only the chapter text."
)


def chapter_messages(spec: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The chat messages for version ``index`` (0-based) of a chapter."""
    versions = int(spec["versions"])
    user = (
        f"Project: {spec['project_id']}\n"
        f"Chapter {spec['chapter_number']}, candidate version {index + 1} of {versions}.\n"
        "Give this version its own take on the scenes.\n\n"
        f"Outline:\n{spec['outline']}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def generate_version(
    gateway: LLMGateway, record: JobRecord, index: int, ctx: CallContext
) -> tuple[dict[str, Any], ChatResult]:
    """Write one candidate version; returns the stored output and the call's result."""
    spec = record.spec
    request = ChatRequest(
        messages=chapter_messages(spec, index),
        model=spec["model"],
        max_tokens=int(spec["max_tokens"]),
        temperature=CHAPTER_TEMPERATURE,
        seed=index,  # keeps parallel versions distinct, also for the cache
    )
    label = _label(record, index)
    logger.info(
        "job %s: %s started (parallel mode: %s)", record.id, label, record.mode == "parallel"
    )
    started = time.monotonic()
    result = gateway.chat(request, ctx)
    logger.info("job %s: %s done in %.2fs", record.id, label, time.monotonic() - started)
    output = {"version": index + 1, "content": result.text, "finish_reason": result.finish_reason}
    return output, result


def _label(record: JobRecord, index: int) -> str:
    spec = record.spec
    return (
        f"project {spec['project_id']} chapter {spec['chapter_number']} "
        f"version {index + 1}/{spec['versions']}"
    )
