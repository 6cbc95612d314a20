"""Monitoring events of step tasks: a step stored as failed is reported as failed.

A step task returns normally when its step fails (the failure is stored with its
error), because Celery runs the next link of a chain (and a chord's callback) only
after a success: siblings go on and the job still ends ``partial``. Monitors (Flower,
``celery events``) follow the worker's events, not the result, so this request class
sends ``task-failed`` instead of ``task-succeeded`` for such a task, and Flower's
task list, Failed filter and counters show the failure.
"""

from __future__ import annotations

import ast
from typing import Any

from celery.worker.request import Request

MAX_ERROR_CHARS = 300  # the result's repr reaches this process cut at 1024 characters


def step_reply(job_id: str, step_id: str, ok: bool | None, error: str = "") -> dict[str, Any]:
    """What a step task returns: ids, whether the step succeeded, and its error."""
    reply: dict[str, Any] = {"job_id": job_id, "step": step_id, "ok": ok}
    if ok is False:
        reply["error"] = error[:MAX_ERROR_CHARS]
    return reply


def failed_step_error(result_repr: Any) -> str | None:
    """The error of a step reply that says the step failed (None for anything else).

    The worker's main process sees the task's return value only as its repr (the
    pool sends it that way), so the repr is parsed as a literal, never evaluated.
    """
    if not isinstance(result_repr, str) or "'ok': False" not in result_repr:
        return None
    try:
        reply = ast.literal_eval(result_repr)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(reply, dict) or reply.get("ok") is not False:
        return None
    return str(reply.get("error") or "step failed")


class StepRequest(Request):
    """A step task's request: its success event becomes ``task-failed`` when the step
    was stored as failed."""

    def send_event(self, type: str, **fields: Any) -> None:  # noqa: A002 (Celery's name)
        if type == "task-succeeded":
            error = failed_step_error(fields.get("result"))
            if error is not None:
                type = "task-failed"
                fields = {"exception": error, "traceback": "", "runtime": fields.get("runtime")}
        super().send_event(type, **fields)
