"""Pictures the UI serves: a step's picture file, or a job's input image.

A picture file is found by the job and step, never by a path from the request, and
is served only if it lies in the job's own output folder (``workers.images.output``)
and is a PNG, JPEG or WebP file. An input image is the data URL the job stored.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from aiohttp import web

from genfleet.records import JobView
from workers.images.output import output_dir

PICTURE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".webp": "image/webp"}  # fmt: skip
PICTURE_MIMES = frozenset(PICTURE_TYPES.values())


def picture_file(view: JobView, step_id: str, genfleet_home: Path) -> Path:
    """The picture of one step of the job; 404 unless it is a picture file inside
    the job's output folder."""
    result = view.ok.get(step_id)
    recorded = result.output.get("path") if result and isinstance(result.output, dict) else None
    if not isinstance(recorded, str):
        raise web.HTTPNotFound(text=f"step {step_id} of job {view.id} has no picture\n")
    folder = output_dir(view.record, genfleet_home).resolve()
    path = Path(recorded).resolve()
    if not path.is_relative_to(folder) or path.suffix.lower() not in PICTURE_TYPES:
        raise web.HTTPNotFound(text="the picture is not in the job's output folder\n")
    if not path.is_file():
        raise web.HTTPNotFound(text="the picture file is gone\n")
    return path


def picture_response(path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers={"Content-Type": PICTURE_TYPES[path.suffix.lower()]})


def input_image(data_url: str | None) -> web.Response:
    """An image stored in the job's inputs as a ``data:image/...;base64,`` URL."""
    head, _, encoded = (data_url or "").partition(",")
    mime = head.removeprefix("data:").removesuffix(";base64")
    if not (head.startswith("data:") and head.endswith(";base64")) or mime not in PICTURE_MIMES:
        raise web.HTTPNotFound(text="no such input image\n")
    try:
        body = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise web.HTTPNotFound(text="the input image is not valid base64\n") from None
    return web.Response(body=body, content_type=mime)
