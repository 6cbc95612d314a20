"""kombu's Redis transport, made safe against hand-pushed queue entries.

Anyone who can write to Redis can push anything onto a queue list. kombu decodes
each entry it pops as a JSON envelope (``{"body", "properties", ...}``) outside any
error handling: a raw text that is not JSON, or JSON that is not such an envelope (a
list, a number, an object without ``properties``), raises in the worker's event loop
and ends the worker. Here such an entry is dropped with one log line and the worker
goes on serving. A message popped while Redis cannot record it (out of memory) is
held until it can. (A well-formed envelope with a malformed *task* message is the
concern of ``workers.consumer.SafeConsumer``.) Selected by ``broker_transport`` in
``celeryconfig``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from typing import Any

import kombu.utils.json as kombu_json
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from genfleet import constants as C
from genfleet.outage import through_outage
from genfleet.scripts import LeanScript

logger = logging.getLogger(__name__)

_SHOWN_CHARS = 80
_ROUTE = ("exchange", "routing_key")  # what kombu writes in delivery_info and reads back


_decoders: dict[Any, json.JSONDecoder] = {}


def _loads(text: str, object_hook: Any = None) -> Any:
    """``json.loads`` with one decoder per object hook: ``json.loads`` builds a new
    ``JSONDecoder`` whenever a hook is given, as kombu gives one for every envelope
    and every task body (a twentieth of a worker's time went there)."""
    decoder = _decoders.get(object_hook)
    if decoder is None:
        decoder = _decoders.setdefault(object_hook, json.JSONDecoder(object_hook=object_hook))
    return decoder.decode(text)


def _use_one_decoder() -> None:
    """Make kombu's JSON ``loads`` (envelopes, task bodies) use ``_loads``; its own
    handling of bytes and its object hook stay as they are."""
    defaults = kombu_json.loads.__defaults__
    if defaults and defaults[0] is json.loads:
        kombu_json.loads.__defaults__ = (_loads, *defaults[1:])


_use_one_decoder()


def _clock_offset_s() -> float:
    """Test-only: pretend this worker's clock is off by this much (kombu dates the
    messages a worker holds by the worker's own clock)."""
    try:
        return float(os.environ.get("GENFLEET_TEST_CLOCK_OFFSET_S") or 0)
    except ValueError:
        return 0.0


class SafeQoS(kombu_redis.QoS):
    """kombu's record of the messages a worker holds, kept through a Redis that cannot
    take writes for a while (out of memory, restarting): a popped message is held in
    memory and recorded once Redis has room, never lost and never fatal."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        through_outage(lambda: self._record(message, delivery_tag),
                       "a message popped from the queue", C.RESULT_SAVE_MAX_WAIT_S)  # fmt: skip
        virtual.QoS.append(self, message, delivery_tag)

    def _record(self, message: Any, delivery_tag: Any) -> None:
        delivery = message.delivery_info
        held = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        keys = [self.unacked_index_key, self.unacked_key]
        args = [time.time() + _clock_offset_s(), delivery_tag, held]
        with self.channel.conn_or_acquire() as client:
            script = self.__dict__.get("_record_script")
            if script is None:  # loaded again by redis-py if Redis restarted without it
                script = self.__dict__["_record_script"] = LeanScript(client, _RECORD)
            script(keys=keys, args=args, client=client)

    def _remove_from_indices(self, delivery_tag: Any, pipe: Any = None) -> Any:
        """An ack's two removals, in one round trip without MULTI/EXEC: the index
        entry goes first, so a half-done ack can only leave a held message that is
        never restored (it was acked), never a restored one that was acked."""
        if pipe is None:
            with self.channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
        return pipe.zrem(self.unacked_index_key, delivery_tag).hdel(self.unacked_key, delivery_tag)


# Records a held message (what kombu's MULTI/ZADD/HSET/EXEC does) in one atomic call.
# KEYS: unacked index, unacked hash. ARGV: time, delivery tag, the message.
_RECORD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class SafeChannel(kombu_redis.Channel):
    """A Redis channel whose pop of a queue entry never raises on the entry's content."""

    QoS = SafeQoS

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu makes a new client object for every ack and every record of a held
        message; one per connection pool does (a client is only a handle on its pool,
        safe to share between threads)."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_sync_client")
        if cached is None or cached[0] is not pool:
            cached = (pool, super()._create_client())
            self.__dict__["_sync_client"] = cached
        return cached[1]

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
