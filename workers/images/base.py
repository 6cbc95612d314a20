"""What every image backend takes and gives back, and the one error only images have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from genfleet.errors import PermanentLLMError


@dataclass(frozen=True)
class ImageRequest:
    """One picture to make, and who asks (for logs, limiter leases, re-scheduling)."""

    prompt: str
    width: int
    height: int
    seed: int = 0
    job_id: str = ""
    step: str = ""
    attempts: int = 0  # calls already made for this picture (all deliveries)


@dataclass
class Rendered:
    """A backend's answer: the picture and what made it."""

    image: Image.Image
    model: str
    key_id: str = ""  # the API key's id (never the key) for API backends
    limiter_wait_s: float = 0.0


class ImageBackend(Protocol):
    """Turns a prompt into a picture. Created once per worker process."""

    name: str  # the IMAGE_BACKEND value
    model: str
    placeholder: bool  # True: the picture stands in for a real one

    def generate(self, request: ImageRequest) -> Rendered:
        """Make the picture; raises ``LLMError`` subclasses or ``RetryLater``."""
        ...


class ContentPolicyError(PermanentLLMError):
    """The provider's safety system refused the prompt (400 content_policy_violation)."""


def parse_size(size: str) -> tuple[int, int]:
    """``"512x384"`` as ``(512, 384)`` (IMAGE_SIZE is checked by the settings)."""
    width, _, height = size.lower().partition("x")
    return int(width), int(height)
