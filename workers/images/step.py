"""One image step of a job, as plain logic: prompt in, file and metadata out.

The task factory (``workers.kind_tasks``) runs ``run_image`` through ``execute_step``,
which stores the result once and records a failure instead of raising it; the
contract is ``genfleet.kinds.images``.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

from genfleet.records import JobRecord
from genfleet.settings import Settings
from genfleet.store import JobStore
from workers.gateway_types import CallContext, ChatResult
from workers.images.backends import get_backend
from workers.images.base import ImageBackend, ImageRequest, parse_size
from workers.images.generate import Generated, generate_image
from workers.images.gpus import current_gpu
from workers.images.output import image_path, output_dir, write_png
from workers.images.prompts import resolve_prompt
from workers.stepcall import StepCall

logger = logging.getLogger(__name__)


def image_seed(prompt: str, index: int) -> int:
    """A seed that follows from the prompt and the step's place: reruns draw the same."""
    return zlib.crc32(f"{index}:{prompt}".encode())


def run_image(call: StepCall) -> tuple[dict[str, Any], ChatResult]:
    """The picture of one step, with this process's backend (``IMAGE_BACKEND``)."""
    settings, store = call.settings, call.store
    backend = get_backend(settings, store.r)
    return image_step(
        call.record, call.step_id, call.index, call.ctx,
        store=store, settings=settings, backend=backend,
    )  # fmt: skip


def image_step(
    record: JobRecord,
    step_id: str,
    index: int,
    ctx: CallContext,
    *,
    store: JobStore,
    settings: Settings,
    backend: ImageBackend,
) -> tuple[dict[str, Any], ChatResult]:
    """Make, write and describe the picture of one step; returns (output, call info)."""
    prompt = resolve_prompt(store, record, step_id)
    width, height = parse_size(str(record.spec.get("size") or settings.image_size))
    request = ImageRequest(
        prompt, width, height, image_seed(prompt, index), record.id, step_id, ctx.attempts_used
    )
    made = generate_image(backend, request, max_retries=settings.image_generation_max_retries)
    output = describe(made, backend, current_gpu())
    path = image_path(output_dir(record, settings.genfleet_home), index, step_id)
    write_png(made.rendered.image, path, {k: _text(v) for k, v in output.items()})
    output["path"] = str(path.resolve())
    logger.info(
        "job %s step %s: %s image written to %s in %.2fs",
        record.id,
        step_id,
        backend.name,
        path,
        made.seconds,
    )
    call = ChatResult(
        text="",
        model=made.rendered.model,
        tokens_in=0,
        tokens_out=0,
        finish_reason="stop",
        attempts=made.attempts,
        seconds=made.seconds,
        key_id=made.rendered.key_id,
        limiter_wait_s=made.rendered.limiter_wait_s,
    )
    return output, call


def describe(made: Generated, backend: ImageBackend, gpu: int | None) -> dict[str, Any]:
    """The metadata kept in Redis (and in the PNG): never the picture itself."""
    width, height = made.rendered.image.size
    return {
        "prompt": made.prompt,
        "simplified_prompt": made.simplified_prompt,
        "backend": backend.name,
        "model": made.rendered.model,
        "gpu": gpu,
        "seconds": made.seconds,
        "width": width,
        "height": height,
        "placeholder": backend.placeholder,
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
