"""kombu's Redis transport, made safe against hand-pushed queue entries.

Anyone who can write to Redis can push anything onto a queue list. kombu decodes
each entry it pops as a JSON envelope (``{"body", "properties", ...}``) outside any
error handling: a raw text that is not JSON, or JSON that is not such an envelope (a
list, a number, an object without ``properties``), raises in the worker's event loop
and ends the worker. Here such an entry is dropped with one log line and the worker
goes on serving. (A well-formed envelope with a malformed *task* message is the
concern of ``workers.consumer.SafeConsumer``.) Selected by ``broker_transport`` in
``celeryconfig``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

_SHOWN_CHARS = 80
_ROUTE = ("exchange", "routing_key")  # what kombu writes in delivery_info and reads back


class SafeChannel(kombu_redis.Channel):
    """A Redis channel whose pop of a queue entry never raises on the entry's content."""

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)
        except json.JSONDecodeError as e:  # the popped entry is gone: nothing to requeue
            logger.error("dropped a queue entry that is not JSON (%s)", e.msg)
            return True


class SafeRedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with ``SafeChannel`` and an envelope check on delivery."""

    Channel = SafeChannel

    def _deliver(self, message: Any, queue: str) -> None:
        problem = envelope_problem(message)
        if problem:
            logger.error("dropped a message on queue %s: %s (%s)", queue, problem,
                         shown(message))  # fmt: skip
            return
        super()._deliver(message, queue)


def envelope_problem(message: Any) -> str:
    """What makes ``message`` unusable as a kombu envelope ("" when nothing does)."""
    if not isinstance(message, dict):
        return f"not a JSON object but a {type(message).__name__}"
    properties = message.get("properties")
    if not isinstance(properties, dict):
        return "no properties object"
    info = properties.get("delivery_info")
    if not (isinstance(info, dict) and all(isinstance(info.get(k), str) for k in _ROUTE)):
        return "delivery_info is not {exchange, routing_key}"
    if "delivery_tag" not in properties or isinstance(properties["delivery_tag"], dict | list):
        return "no delivery tag"
    if not isinstance(message.get("body", ""), str):
        return "the body is not a text"
    encoding = properties.get("body_encoding")
    if encoding is not None and not isinstance(encoding, str):
        return "body_encoding is not a text"
    if encoding == "base64":
        try:
            base64.b64decode(message.get("body") or "")
        except (binascii.Error, ValueError):
            return "the body is not base64"
    if not isinstance(message.get("headers") or {}, dict):
        return "headers is not an object"
    return ""


def shown(value: Any) -> str:
    """A short, single-line, escaped view of a dropped message for the log."""
    text = ascii(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
