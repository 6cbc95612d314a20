"""Chapter versions (seed 000): prompts and the generation of one version.

Plain logic, no Celery: the task factory (``workers.kind_tasks``) calls
``run_version``; the contract is ``genfleet.kinds.chapter``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from genfleet.kinds.chapter import KIND, ChapterSpec, version_index
from workers.gateway import ChatRequest, ChatResult
from workers.stepcall import StepCall

logger = logging.getLogger(__name__)

CHAPTER_TEMPERATURE = 0.9  # candidate versions should differ
SYSTEM_PROMPT = (
    "You are a novelist. Write the full text of the requested chapter in the language "
    "of the outline. Return only the chapter text."
)


def chapter_messages(spec: ChapterSpec, index: int) -> list[dict[str, Any]]:
    """The chat messages for version ``index`` (0-based) of a chapter."""
    user = (
        f"Project: {spec.project_id}\n"
        f"Chapter {spec.chapter_number}, candidate version {index + 1} of {spec.versions}.\n"
        "Give this version its own take on the scenes.\n\n"
        f"Outline:\n{spec.outline}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def run_version(call: StepCall) -> tuple[dict[str, Any], ChatResult]:
    """Write one candidate version; returns the stored output and the call's result."""
    spec = KIND.spec(call.record)
    index = version_index(call.step_id)
    request = ChatRequest(
        messages=chapter_messages(spec, index),
        model=spec.model,
        max_tokens=spec.max_tokens,
        temperature=CHAPTER_TEMPERATURE,
        seed=index,  # keeps parallel versions distinct, also for the cache
    )
    label = (
        f"project {spec.project_id} chapter {spec.chapter_number} "
        f"version {index + 1}/{spec.versions}"
    )
    job_id = call.record.id
    logger.info("job %s: %s started (parallel mode: %s)", job_id, label,
                call.record.mode == "parallel")  # fmt: skip
    started = time.monotonic()
    result = call.gateway.chat(request, call.ctx)
    logger.info("job %s: %s done in %.2fs", job_id, label, time.monotonic() - started)
    output = {"version": index + 1, "content": result.text, "finish_reason": result.finish_reason}
    return output, result
