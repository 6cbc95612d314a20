"""The worker's message consumer: a malformed message is discarded, never fatal.

Celery's consumer already refuses unknown task names, undecodable bodies and content
other than JSON (pickle included). But a hand-made message that names a real task
and has the wrong shape either raises out of its handler (a body that is not
``[args, kwargs, embed]``, an unhashable task name, a bad ``timelimit``, no ``id``:
the worker stops, or its consumer restarts forever since kombu counts a KeyError as
a lost connection) or fails later in the pool where nothing acknowledges it (it then
holds a prefetch slot until the worker stops). As the message goes back to the
queue, every worker that takes it is stuck in turn. ``SafeConsumer`` checks the
shape first and treats any such message like Celery's other invalid ones: logged,
rejected (dropped), the worker still serving. Selected by ``worker_consumer`` in
``celeryconfig``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer

logger = logging.getLogger(__name__)

_ID_HEADERS = ("root_id", "parent_id", "group")
_SIGNATURE_LISTS = ("callbacks", "errbacks", "chain")


class SafeConsumer(Consumer):
    """Celery's consumer, with every message's handling guarded."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)
        # kombu's Redis transport counts KeyError as a connection error, but here it is
        # a missing header (e.g. no "id"): re-raised, the message would be restored
        # and the consumer restarted forever.
        lost = tuple(e for e in self.connection_errors if not issubclass(KeyError, e))

        def on_task_received(message: Any) -> Any:
            try:
                check_shape(message)
                return handle(message)
            except lost:
                raise  # the broker went away: Celery reconnects
            except Exception as exc:  # a well-formed message never gets here
                if message.acknowledged:
                    logger.error("malformed task message after it was acknowledged: %r", exc)
                    return None
                return self.on_invalid_task(None, message, exc)

        return on_task_received


def check_shape(message: Any) -> None:
    """Refuse a JSON task message Celery would trip over outside its error handling.

    Celery reads the body and some headers only in the pool or when it stores the
    result; a wrong shape there fails where nothing acknowledges the message, which
    then holds a prefetch slot until the worker stops (enough of them and the worker
    takes no more work). Unknown tasks and undecodable or disallowed content are
    left to Celery's own checks.
    """
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return
    try:
        body = message.decode()
    except Exception:
        return  # Celery refuses it (ContentDisallowed, DecodeError) with its own line
    problem = _headers_problem(headers) or _body_problem(body)
    if problem:
        raise InvalidTaskError(problem)


def _headers_problem(headers: dict[str, Any]) -> str:
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "the id header is not a text"
    for name in _ID_HEADERS:
        if headers.get(name) is not None and not isinstance(headers[name], str):
            return f"the {name} header is not a text"
    retries = headers.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        return "the retries header is not a count"
    limits = headers.get("timelimit", (None, None))
    if not (isinstance(limits, list | tuple) and len(limits) == 2 and all(map(_seconds, limits))):
        return "the timelimit header is not [soft, hard]"
    return ""


def _body_problem(body: Any) -> str:
    if not (
        isinstance(body, list | tuple)
        and len(body) == 3
        and isinstance(body[0], list | tuple)
        and isinstance(body[1], dict)
        and (body[2] is None or isinstance(body[2], dict))
    ):
        return "the body is not [args, kwargs, embed]"
    embed = body[2] or {}
    for name in _SIGNATURE_LISTS:
        value = embed.get(name)
        if value is not None and not (isinstance(value, list) and all(map(_signature, value))):
            return f"embed {name} is not a list of signatures"
    if embed.get("chord") is not None and not _signature(embed["chord"]):
        return "embed chord is not a signature"
    return ""


def _signature(value: Any) -> bool:
    """The outline of a serialized signature (what Celery reads before running it)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("task"), str)
        and isinstance(value.get("args", ()), list | tuple)
        and isinstance(value.get("kwargs", {}), dict)
        and isinstance(value.get("options", {}), dict)
        and isinstance(value.get("subtask_type"), str | None)
    )


def _seconds(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))
