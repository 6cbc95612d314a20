"""IMAGE_BACKEND=diffusers: a local diffusers pipeline from the folder ``IMAGE_MODEL``.

Loaded once per worker process with ``local_files_only=True`` (nothing is ever
downloaded): bfloat16 with PyTorch's scaled-dot-product attention on the GPU the
process sees (``CUDA_VISIBLE_DEVICES``), float32 on the CPU when there is none.
torch and diffusers come with the ``gpu`` extra and are imported only here, only
when this backend is chosen.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

from genfleet.errors import SettingsError, TransientLLMError
from workers.images.base import ImageRequest, Rendered
from workers.images.constants import DIFFUSERS_STEPS

logger = logging.getLogger(__name__)

MODEL_INDEX = "model_index.json"  # what makes a folder a diffusers pipeline
_GPU_MODULES = ("torch", "diffusers", "transformers")


def check_model_dir(model: str | None) -> Path:
    """The model folder of ``IMAGE_MODEL``, or one clear ``SettingsError``."""
    if not model:
        raise SettingsError(
            "IMAGE_MODEL is not set: IMAGE_BACKEND=diffusers needs a local model folder"
        )
    path = Path(model).expanduser()
    if not path.is_dir():
        raise SettingsError(f"IMAGE_MODEL={model}: no such model folder")
    if not (path / MODEL_INDEX).is_file():
        raise SettingsError(f"IMAGE_MODEL={model}: not a diffusers model folder (no {MODEL_INDEX})")
    return path


def check_gpu_extra() -> None:
    """``SettingsError`` unless torch, diffusers and transformers can be imported."""
    missing = [m for m in _GPU_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SettingsError(
            f"IMAGE_BACKEND=diffusers needs the gpu extra ({', '.join(missing)} missing): "
            "pip install 'genfleet[gpu]'"
        )


def _import_torch() -> tuple[Any, Any]:
    try:
        import diffusers
        import torch
    except ImportError as e:
        raise SettingsError(
            f"IMAGE_BACKEND=diffusers needs the gpu extra ({e.name} is missing): "
            "pip install 'genfleet[gpu]'"
        ) from None
    return torch, diffusers


def _use_sdpa(pipe: Any) -> None:
    """PyTorch's SDPA in every component still on the classic attention processors."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    for name, component in pipe.components.items():
        processors = getattr(component, "attn_processors", None)
        if processors and all(
            isinstance(p, AttnProcessor | AttnProcessor2_0) for p in processors.values()
        ):
            component.set_attn_processor(AttnProcessor2_0())
            logger.debug("diffusers: %s uses scaled-dot-product attention", name)


class DiffusersBackend:
    """One pipeline per process, on ``cuda`` when torch sees a GPU, else on the CPU."""

    name = "diffusers"
    placeholder = False

    def __init__(self, model: str | None, *, steps: int = DIFFUSERS_STEPS) -> None:
        path = check_model_dir(model)
        self.torch, diffusers = _import_torch()
        self.device = "cuda" if self.torch.cuda.is_available() else "cpu"
        dtype = self.torch.bfloat16 if self.device == "cuda" else self.torch.float32
        self.steps = steps
        self.model = path.name
        diffusers.utils.logging.disable_progress_bar()
        with warnings.catch_warnings():
            # diffusers >= 0.36 renamed torch_dtype to dtype; 0.30 only knows torch_dtype
            warnings.simplefilter("ignore", FutureWarning)
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                path, torch_dtype=dtype, local_files_only=True
            )
        _use_sdpa(pipe)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        logger.info("diffusers: %s loaded on %s (%s)", path, self.device, dtype)

    def generate(self, request: ImageRequest) -> Rendered:
        torch = self.torch
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        try:
            with torch.inference_mode():
                out = self.pipe(
                    request.prompt,
                    width=request.width,
                    height=request.height,
                    num_inference_steps=self.steps,
                    generator=generator,
                )
        except torch.cuda.OutOfMemoryError as e:
            torch.cuda.empty_cache()
            raise TransientLLMError("out of GPU memory", provider="local", model=self.model) from e
        return Rendered(out.images[0], self.model)
