"""IMAGE_BACKEND=placeholder (the offline default): a picture drawn from the prompt.

Deterministic: the same prompt and size give the same pixels. Every file it makes
says ``genfleet:placeholder = true`` in its PNG metadata, and every result has
``placeholder: true``. ``GENFLEET_PLACEHOLDER_DELAY_S`` adds a pause per picture,
for tests and benchmarks only (a stand-in for a model's time on the GPU).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

from PIL import Image, ImageDraw

from genfleet.errors import SettingsError
from workers.images.base import ImageRequest, Rendered
from workers.images.constants import ENV_PLACEHOLDER_DELAY_S, PLACEHOLDER_MODEL

logger = logging.getLogger(__name__)

MAX_DELAY_S = 600.0
_BANDS = 8  # horizontal colour bands, one per 4 bytes of the prompt's hash


def placeholder_delay_s() -> float:
    """``GENFLEET_PLACEHOLDER_DELAY_S`` (0 when unset); one clear line when bad."""
    raw = os.environ.get(ENV_PLACEHOLDER_DELAY_S, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= MAX_DELAY_S:
        raise SettingsError(
            f"{ENV_PLACEHOLDER_DELAY_S}={raw} is invalid: allowed 0-{MAX_DELAY_S:g}"
        )
    return value


def draw_placeholder(prompt: str, width: int, height: int) -> Image.Image:
    """Colour bands and a frame whose colours follow the prompt's SHA-256."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    for band in range(_BANDS):
        top, bottom = band * height // _BANDS, (band + 1) * height // _BANDS
        inset = digest[4 * band + 3] * width // 1024
        colour = tuple(digest[4 * band : 4 * band + 3])
        draw.rectangle((inset, top, width - 1 - inset, bottom), fill=colour)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(255, 255, 255))
    return image


class PlaceholderBackend:
    """Draws placeholders; needs no network, no key and no GPU."""

    name = "placeholder"
    model = PLACEHOLDER_MODEL
    placeholder = True

    def __init__(self) -> None:
        self.delay_s = placeholder_delay_s()

    def generate(self, request: ImageRequest) -> Rendered:
        if self.delay_s:
            time.sleep(self.delay_s)
        return Rendered(draw_placeholder(request.prompt, request.width, request.height), self.model)
