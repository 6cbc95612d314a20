"""Checks of user input shared by the kinds: one ``InputError`` line each."""

from __future__ import annotations

import unicodedata

from pydantic import ValidationError

from genfleet.errors import InputError

CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})  # controls, line and paragraph separators


def one_line(error: ValidationError, source: str) -> str:
    """The first problem of a pydantic error as ``SOURCE: field: problem``."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "value"
    shown = first.get("input")
    value = f" (got {short_repr(shown)})" if isinstance(shown, int | float | str) else ""
    return f"{source}: {where}: {first['msg'].removeprefix('Value error, ')}{value}"


def short_repr(value: object, max_chars: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= max_chars else f"{text[:max_chars]}... ({len(text)} characters)"


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{name}={value!r} is invalid: allowed {low}-{high}")
    return value


def check_text(name: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} is empty: give a non-empty text")
    if len(value) > max_chars:
        raise InputError(f"{name} has {len(value)} characters: allowed at most {max_chars}")
    return value


def has_control_chars(text: str) -> bool:
    """True if ``text`` holds a line break or another control character (tab aside)."""
    return any(c != "\t" and unicodedata.category(c) in CONTROL_CATEGORIES for c in text)
