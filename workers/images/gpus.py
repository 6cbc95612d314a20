"""Which GPUs a machine has, which one a worker serves, and the queues it reads."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.kinds.images import MAX_GPU_INDEX, check_gpu, gpu_queue
from workers.images.constants import ENV_GPU

logger = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 20.0


def worker_queues(gpu: int) -> list[str]:
    """What the worker of GPU ``gpu`` consumes: the shared queue, its own, control."""
    return [C.QUEUE_IMAGES, gpu_queue(gpu), C.QUEUE_CONTROL]


def parse_gpu_list(text: str) -> list[int]:
    """``"0,1,3"`` as ``[0, 1, 3]``; one clear ``InputError`` on a bad or repeated index."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise InputError(f"--gpus {text!r}: expected 'auto' or indices like 0,1,2")
        gpu = check_gpu(int(part), "--gpus")
        if gpu in out:
            raise InputError(f"--gpus {text!r}: GPU {gpu} is named twice")
        out.append(gpu)
    return out


def current_gpu() -> int | None:
    """The GPU this worker process serves (``GENFLEET_GPU``), or None."""
    raw = os.environ.get(ENV_GPU, "").strip()
    return int(raw) if raw.isdigit() else None


def detect_gpus() -> list[int]:
    """Indices of this machine's NVIDIA GPUs: nvidia-smi first, then torch; [] if none."""
    found = _nvidia_smi_gpus()
    if found is None:
        found = _torch_gpus()
    return [g for g in found if g <= MAX_GPU_INDEX]


def _nvidia_smi_gpus() -> list[int] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        logger.warning("nvidia-smi failed (%s); asking torch instead", e.__class__.__name__)
        return None
    return [int(line) for line in out.stdout.split() if line.strip().isdigit()]


def _torch_gpus() -> list[int]:
    try:
        import torch
    except ImportError:
        return []
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
