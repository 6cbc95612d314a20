"""Which prompt an image step draws, read from its job (task arguments are ids only).

In order:

1. The job input ``prompt:{step_id}`` (``genfleet:job:{id}:inputs``): prompts known
   when the job was made, as ``submit_images`` stores them.
2. The stored output of an earlier step of the same job: the one that
   ``spec["image_prompt_from"][step_id]`` names, else, for a step ``X.image``, the
   step ``X`` (a tweet, chained before its image). The output is the prompt itself
   (a text), or a dict with ``image_prompt`` (else ``text``, else ``content``). When
   that step has not succeeded, the image step is skipped (``StepSkipped``).
"""

from __future__ import annotations

from typing import Any

from genfleet.errors import PermanentLLMError, StepSkipped
from genfleet.kinds.images import IMAGE_STEP_SUFFIX, prompt_input
from genfleet.records import JobRecord
from genfleet.store import JobStore
from workers.images.constants import MAX_PROMPT_CHARS

_OUTPUT_KEYS = ("image_prompt", "text", "content")


def resolve_prompt(store: JobStore, record: JobRecord, step_id: str) -> str:
    """The prompt of image step ``step_id``; ``StepSkipped`` or ``PermanentLLMError``
    when there is none."""
    given = store.input(record.id, prompt_input(step_id))
    if given is not None:
        return _checked(given, step_id)
    source = source_step(record, step_id)
    if source is None:
        raise _no_prompt("its job names no prompt for it", step_id)
    result = store.step_ok(record.id, source)
    if result is None:
        raise StepSkipped(f"needs {source}, which has not succeeded")
    return _checked(_from_output(result.output), step_id)


def source_step(record: JobRecord, step_id: str) -> str | None:
    """The step whose output is this image step's prompt, if any."""
    sources = record.spec.get("image_prompt_from")
    if isinstance(sources, dict) and step_id in sources:
        return str(sources[step_id])
    if step_id.endswith(IMAGE_STEP_SUFFIX) and len(step_id) > len(IMAGE_STEP_SUFFIX):
        return step_id.removesuffix(IMAGE_STEP_SUFFIX)
    return None


def _from_output(output: Any) -> Any:
    if isinstance(output, dict):
        return next((output[k] for k in _OUTPUT_KEYS if output.get(k)), None)
    return output


def _checked(prompt: Any, step_id: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise _no_prompt("its prompt is empty", step_id)
    return prompt.strip()[:MAX_PROMPT_CHARS]


def _no_prompt(why: str, step_id: str) -> PermanentLLMError:
    return PermanentLLMError(f"image step {step_id} has no prompt: {why}", step=step_id)
