"""Deterministic PNG pictures for the image endpoints, drawn with Pillow."""

from __future__ import annotations

import base64
import hashlib
import io
from functools import lru_cache

from PIL import Image, ImageDraw

from simulator.config import MAX_SIDE, MIN_SIDE

DEFAULT_SIZE = "256x256"
_BLOCKS = 6  # coloured rectangles drawn over the gradient


def parse_size(size: str) -> tuple[int, int]:
    """Parse ``"WxH"``, clamping each side to 16..1024; raise ValueError on bad text."""
    width, sep, height = size.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ValueError(f"size {size!r} must look like WIDTHxHEIGHT, e.g. 256x256")
    return _clamp(int(width)), _clamp(int(height))


def _clamp(side: int) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, side))


def _color(digest: bytes, offset: int) -> tuple[int, int, int]:
    return digest[offset % 32], digest[(offset + 1) % 32], digest[(offset + 2) % 32]


@lru_cache(maxsize=256)
def render_png(prompt: str, width: int, height: int, variant: int = 0) -> bytes:
    """A PNG of ``width`` x ``height`` whose colours and blocks follow the prompt's hash."""
    digest = hashlib.sha256(f"{variant}:{prompt}".encode()).digest()
    corners = Image.new("RGB", (2, 2))
    corners.putdata([_color(digest, i * 3) for i in range(4)])
    image = corners.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for i in range(_BLOCKS):
        x0 = digest[(12 + i) % 32] * width // 256
        y0 = digest[(18 + i) % 32] * height // 256
        x1 = min(width, x0 + max(2, digest[(24 + i) % 32] * width // 512))
        y1 = min(height, y0 + max(2, digest[(30 + i) % 32] * height // 512))
        draw.rectangle((x0, y0, x1, y1), fill=_color(digest, 7 * i + 5))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def render_b64(prompt: str, width: int, height: int, variant: int = 0) -> str:
    """:func:`render_png` as base64 text, as ``b64_json`` carries it."""
    return base64.b64encode(render_png(prompt, width, height, variant)).decode("ascii")
