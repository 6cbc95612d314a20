"""Names and defaults of the image feature, in one place.

They live here rather than in ``genfleet.constants`` because the image work was
developed in its own files; the queue names themselves (``images``,
``images.gpuN``) are ``genfleet.constants``' and ``celeryconfig``'s.
"""

from __future__ import annotations

from genfleet import constants as C

TASK_IMAGE_GENERATE = C.TASK_IMAGE_GENERATE  # routed to the 'images' queue by prefix
KIND_IMAGES = C.KIND_IMAGES  # the job kind of submit_images

# Inputs
from genfleet.kinds.images import MAX_PROMPT_CHARS, MAX_PROMPTS  # noqa: E402,F401  (the contract's)

# Environment of an image worker process (set by 'genfleet worker images', not settings)
ENV_GPU = "GENFLEET_GPU"  # the GPU index this worker serves; recorded in each result
ENV_CUDA_DEVICES = "CUDA_VISIBLE_DEVICES"
ENV_PLACEHOLDER_DELAY_S = "GENFLEET_PLACEHOLDER_DELAY_S"  # tests and benchmarks only

# Backends
DEFAULT_API_IMAGE_MODEL = "gpt-image-1"  # openai / async-task when IMAGE_MODEL is unset
DIFFUSERS_STEPS = 30  # denoising steps of the diffusers backend
PLACEHOLDER_MODEL = "placeholder"
PNG_TEXT_PREFIX = "genfleet:"  # PNG text chunks: genfleet:prompt, genfleet:placeholder, ...
