"""Checking what users hand to the producer, before anything is enqueued.

Every problem is one ``InputError`` line naming the file (or argument), the field
and what is wrong.
"""

from __future__ import annotations

import base64
import datetime as dt
import glob
import hashlib
import io
import json
import unicodedata
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field, ValidationError, field_validator

from genfleet.errors import InputError
from genfleet.kinds.checks import CONTROL_CATEGORIES, one_line

MAX_IMAGE_BYTES = 8 * 1024 * 1024
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_JSON_FILE_BYTES = 2 * 1024 * 1024
MAX_TOPIC_CHARS = 200
MAX_TOPICS = 1000
MAX_TOPICS_FILE_BYTES = 2 * 1024 * 1024
def expand_glob(pattern: str, what: str) -> list[Path]:
    """Files matching a glob, sorted; none is an error."""
    paths = sorted(Path(p) for p in glob.glob(pattern))
    files = [p for p in paths if p.is_file()]
    if not files:
        raise InputError(f"{what} {pattern!r} matches no file")
    return files


def read_limited(path: Path, max_bytes: int, what: str = "file") -> bytes:
    """A file's bytes, reading at most ``max_bytes + 1``: a huge file, a device such
    as ``/dev/zero`` or an endless pipe is refused, never read whole."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e.__class__.__name__})") from None
    if len(data) > max_bytes:
        raise InputError(f"{path}: larger than the {max_bytes}-byte cap")
    return data


def read_text_file(path: Path, max_bytes: int, what: str = "file") -> str:
    """A UTF-8 text file of at most ``max_bytes``."""
    try:
        return read_limited(path, max_bytes, what).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: cannot read it as UTF-8 text") from None


def read_json_file(path: Path) -> Any:
    text = read_text_file(path, MAX_JSON_FILE_BYTES)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None
    except ValueError:  # Python refuses integers of more than 4300 digits
        raise InputError(f"{path}: a number in it is too long (more than 4300 digits)") from None


def read_image(path: Path) -> tuple[str, dict[str, Any]]:
    """A checked image as a data URL, and its metadata (name, mime, bytes, sha256)."""
    data = read_limited(path, MAX_IMAGE_BYTES, "image file")
    mime = _image_mime(path, data)
    meta = {"name": path.name, "mime": mime, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    return f"data:{mime};base64,{base64.b64encode(data).decode()}", meta


def _image_mime(path: Path, data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or ""
            image.verify()
    except Image.DecompressionBombError:
        raise InputError(f"{path}: too many pixels for an image (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{path}: not a readable PNG, JPEG or WebP image") from None
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"{path}: format {fmt}, allowed PNG, JPEG, WebP")
    return IMAGE_FORMATS[fmt]


class PersonaFile(BaseModel):
    """A persona as the persona job writes it (only what tweets need is checked)."""

    name: str = Field(min_length=1, max_length=200)
    core: dict[str, Any]

    model_config = {"extra": "allow"}


def read_persona(path: Path) -> dict[str, Any]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a persona file is a JSON object (as the persona job writes)")
    try:
        PersonaFile.model_validate(data)
    except ValidationError as e:
        raise InputError(one_line(e, str(path))) from None
    return data


class CalendarFile(BaseModel):
    calendar: dict[str, dict[str, Any]] = Field(min_length=1)

    @field_validator("calendar")
    @classmethod
    def _dates(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for day in value:
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"{day!r} is not a YYYY-MM-DD date") from None
        return value


def read_calendar(path: Path) -> dict[str, dict[str, Any]]:
    """The calendar's days, sorted by date: ``{"YYYY-MM-DD": {plan...}}``."""
    data = read_json_file(path)
    try:
        days = CalendarFile.model_validate(data).calendar
    except ValidationError as e:
        raise InputError(one_line(e, str(path))) from None
    return dict(sorted(days.items()))


def read_topics(path: Path) -> list[str]:
    """One topic per line; blank lines and lines starting with # are ignored."""
    lines = read_text_file(path, MAX_TOPICS_FILE_BYTES, "topics file").splitlines()
    topics = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not topics:
        raise InputError(f"{path}: the topic list is empty")
    return check_topics(topics, str(path))


def has_control_chars(text: str) -> bool:
    """True if ``text`` holds a line break or another control character (tab aside)."""
    return any(c != "\t" and unicodedata.category(c) in CONTROL_CATEGORIES for c in text)


def check_topics(topics: list[str], source: str = "topics") -> list[str]:
    if not topics:
        raise InputError(f"{source}: the topic list is empty")
    if len(topics) > MAX_TOPICS:
        raise InputError(f"{source}: {len(topics)} topics, allowed at most {MAX_TOPICS}")
    for n, topic in enumerate(topics, 1):
        if not isinstance(topic, str):
            raise InputError(f"{source}: topic {n} is a {type(topic).__name__}, not a text")
        if not topic.strip():
            raise InputError(f"{source}: topic {n} is empty")
        if has_control_chars(topic):
            raise InputError(f"{source}: topic {n} has a line break or control character")
        if len(topic) > MAX_TOPIC_CHARS:
            raise InputError(
                f"{source}: topic {n} has {len(topic)} characters, allowed {MAX_TOPIC_CHARS}"
            )
    return topics


def parse_json(text: str, path: Path) -> Any:
    """A file's JSON, or one ``InputError`` line naming the file and the problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. a number of more than 4300 digits
        raise InputError(f"{path}: not readable JSON ({e})") from None
    return data
