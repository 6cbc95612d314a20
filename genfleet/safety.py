"""Names that become Redis keys or file names, and text that goes into log lines.

An id arriving in a task message may be hand-made: ``check_name`` refuses anything
that could leave a job's folder (``..``, ``/``) or is not one of genfleet's own ids.
User text (a project id, an outline) may hold a newline or an ANSI escape that would
forge or colour worker log lines: ``escape_controls`` shows such characters escaped.
"""

from __future__ import annotations

import logging
import re

MAX_NAME_CHARS = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def name_problem(value: object) -> str:
    """Why ``value`` cannot be a job or step id ("" when it can)."""
    if not isinstance(value, str) or not value:
        return "not a non-empty text"
    if len(value) > MAX_NAME_CHARS:
        return f"longer than {MAX_NAME_CHARS} characters"
    if not _NAME.fullmatch(value) or ".." in value:
        return "only letters, digits and _ . : - are allowed (no '..')"
    return ""


def check_name(value: object, what: str = "id") -> str:
    """``value`` if it is a safe id, else ``ValueError`` naming what is wrong."""
    problem = name_problem(value)
    if problem:
        raise ValueError(f"bad {what} {escape_controls(repr(value))[:80]}: {problem}")
    return str(value)


def escape_controls(text: str) -> str:
    """``text`` with control characters (newlines, ESC, ...) shown as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class EscapeControls(logging.Filter):
    """A log filter: a record's message is one line with its control characters escaped
    (the traceback a formatter appends is untouched)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_controls(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True
