"""Submitting image jobs: ``submit_images``, and the image step's signature.

A batch of images is a group of one ``genfleet.images.generate`` step per prompt
(ids ``img1``, ``img2``, ...); the step stored last sends the finalize task. A step goes to
``images.gpuN`` when the job is pinned to GPU N, else to the shared ``images``
queue that every image worker reads. Prompts are job inputs in Redis
(``prompt:{step_id}``), not task arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.kinds.images import KIND as IMAGES
from genfleet.kinds.images import (
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    check_gpu,
    image_signature,
    prompt_input,
)
from genfleet.settings import Settings, load_settings
from producer.canvas import job_canvas
from producer.client import connect
from producer.inputs import parse_json, read_text_file
from producer.jobs import JobHandle, enqueue, make_record
from producer.spend import check_image_spending

__all__ = ["image_signature", "read_prompts_file", "submit_images"]

MAX_PROMPTS_FILE_BYTES = 64 * 1024 * 1024


def check_prompts(prompts: object) -> list[str]:
    """The prompts, stripped; one ``InputError`` line on the first bad one."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise InputError("prompts must be a list of texts")
    if not prompts:
        raise InputError("no prompts: give at least one")
    if len(prompts) > MAX_PROMPTS:
        raise InputError(f"{len(prompts)} prompts: allowed at most {MAX_PROMPTS} in one job")
    out = []
    for n, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"prompt {n} is empty: give a non-empty text")
        if len(prompt.strip()) > MAX_PROMPT_CHARS:
            raise InputError(
                f"prompt {n} has {len(prompt.strip())} characters: allowed at most "
                f"{MAX_PROMPT_CHARS}"
            )
        out.append(prompt.strip())
    return out


def check_out_dir(out_dir: Path | str | None) -> Path | None:
    """An absolute folder for the pictures (workers write there), or None."""
    if out_dir is None:
        return None
    path = Path(out_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"out_dir {out_dir}: exists and is not a folder")
    return path


def check_backend(settings: Settings) -> None:
    """Refuse a job no worker of these settings could run (the diffusers model folder)."""
    if settings.image_backend == "diffusers":
        from workers.images.diffusers_backend import check_model_dir

        check_model_dir(settings.image_model)


def submit_images(
    prompts: list[str],
    gpu: int | None = None,
    *,
    out_dir: Path | None = None,
    mode: str = C.API_ONLINE,
    max_cost_usd: float | None = None,
    settings: Settings | None = None,
) -> JobHandle:
    """Enqueue one picture per prompt; returns the job handle.

    ``gpu`` pins every picture to the worker of that GPU (``images.gpuN``, N 0-7);
    without it any image worker takes them. Pictures go to ``out_dir`` (default
    ``GENFLEET_HOME/outputs/{job_id}/`` of the worker); each step's result holds the
    path and metadata. Bad input raises ``InputError`` (or ``SettingsError``) and
    enqueues nothing. ``mode`` and ``max_cost_usd`` are the spending options every
    submit function takes; an image job allows only their defaults (online, no budget).
    """
    check_image_spending(mode, max_cost_usd)
    checked = check_prompts(prompts)
    if gpu is not None:
        check_gpu(gpu)
    folder = check_out_dir(out_dir)
    s = settings or load_settings()
    check_backend(s)
    client = connect(settings)
    spec = IMAGES.check_spec(
        "images", count=len(checked), gpu=gpu, out_dir=str(folder) if folder else None,
        size=s.image_size,
    )  # fmt: skip
    step_ids = IMAGES.step_ids(spec)
    record = make_record(IMAGES.name, spec.model_dump(), step_ids)
    inputs = {prompt_input(step_id): p for step_id, p in zip(step_ids, checked, strict=True)}
    return enqueue(client, record, job_canvas(client.app, record), inputs)


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a file: a JSON list of texts, or one prompt per line (blank
    lines ignored). Checks only the file; ``check_prompts`` checks the prompts."""
    text = read_text_file(path, MAX_PROMPTS_FILE_BYTES)
    if not text.lstrip().startswith(("[", "{")):
        return [line.strip() for line in text.splitlines() if line.strip()]
    data = parse_json(text, path)
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise InputError(f"{path}: a JSON prompts file must be a list of texts")
    return data
