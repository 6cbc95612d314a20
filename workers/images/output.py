"""Where pictures are written and how: PNG files with their prompt in the metadata.

A job's pictures go to its spec's ``out_dir`` when one was given, else to
``GENFLEET_HOME/outputs/{job_id}/`` of the worker, as ``{index:04d}-{step_id}.png``.
Redis holds only the path and the metadata, never the bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genfleet.records import JobRecord
from genfleet.safety import check_name
from workers.images.constants import PNG_TEXT_PREFIX

OUTPUTS_DIR = "outputs"


def output_dir(record: JobRecord, genfleet_home: Path) -> Path:
    """The folder of a job's pictures."""
    chosen = record.spec.get("out_dir")
    return Path(chosen) if chosen else genfleet_home / OUTPUTS_DIR / record.id


def image_path(folder: Path, index: int, step_id: str) -> Path:
    """The picture's file, always inside ``folder`` (a crafted step id is refused)."""
    return folder / f"{int(index):04d}-{check_name(step_id, 'step id')}.png"


def write_png(image: Image.Image, path: Path, text: dict[str, str]) -> None:
    """Write ``image`` with ``text`` as ``genfleet:*`` PNG text chunks, atomically.

    A redelivered step overwrites the same file whole; a reader never sees half a file.
    """
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(PNG_TEXT_PREFIX + key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        image.convert("RGB").save(partial, format="PNG", pnginfo=info)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
