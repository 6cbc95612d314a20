"""kombu's Redis transport, made safe against hand-pushed queue entries, with a
leaner record of the messages a worker holds.

Anyone who can write to Redis can push anything onto a queue list. kombu decodes
each entry it pops as a JSON envelope (``{"body", "properties", ...}``) outside any
error handling: a raw text that is not JSON, or JSON that is not such an envelope (a
list, a number, an object without ``properties``), raises in the worker's event loop
and ends the worker. Here such an entry is dropped with one log line and the worker
goes on serving. A message popped while Redis cannot record it (out of memory) is
held until it can. (A well-formed envelope with a malformed *task* message is the
concern of ``workers.consumer.SafeConsumer``.) Selected by ``broker_transport`` in
``celeryconfig``.

kombu records a message it delivers in the ``unacked`` hash (tag -> [message,
exchange, routing key]) and dates it in the ``unacked_index`` sorted set, where its
sweep looks for messages held past the visibility timeout (their worker died). Here
the time rides in the hash's value, [message, exchange, routing key, delivered at]:
a delivery costs one HSET, an ack one HDEL, and the sweep scans the hash (HSCAN,
under kombu's ``unacked_mutex``). ``unacked_index`` is never written; the records of
an older worker (three items, dated there) are still found and restored. ``HLEN
unacked`` still counts the messages delivered and not yet acknowledged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import kombu.utils.json as kombu_json
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from genfleet import constants as C
from genfleet.outage import through_outage
from genfleet.scripts import send

logger = logging.getLogger(__name__)

_SHOWN_CHARS = 80
_ROUTE = ("exchange", "routing_key")  # what kombu writes in delivery_info and reads back
_SCAN_BATCH = 500  # hash entries per HSCAN call of the sweep for overdue messages


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
    """Test-only: pretend this worker's clock is off by this much (a worker dates the
    messages it holds, and judges others' overdue, by its own clock)."""
    try:
        return float(os.environ.get("GENFLEET_TEST_CLOCK_OFFSET_S") or 0)
    except ValueError:
        return 0.0


def _now() -> float:
    return time.time() + _clock_offset_s()


@dataclass(frozen=True)
class Held:
    """A message a worker holds, as the ``unacked`` hash records it."""

    payload: dict[str, Any]
    exchange: str
    routing_key: str
    delivered_at: float | None  # None: kombu's three items, dated in ``unacked_index``


def parse_held(value: bytes | str) -> Held | None:
    """The record ``value``: this module's four items or kombu's three (None when it
    is neither)."""
    try:
        items = loads(value)
    except ValueError:
        return None
    if not isinstance(items, list) or len(items) not in (3, 4):
        return None
    payload, exchange, routing_key, *rest = items
    at = rest[0] if rest else None
    route_ok = isinstance(exchange, str) and isinstance(routing_key, str)
    if not (isinstance(payload, dict) and route_ok):
        return None
    if at is not None and (isinstance(at, bool) or not isinstance(at, int | float)):
        return None
    return Held(payload, exchange, routing_key, None if at is None else float(at))


def _raw_key(client: Any, key: str) -> str:
    """``key`` as Redis names it: kombu's ``global_keyprefix`` client prefixes only
    the commands kombu itself sends (not HSCAN, EXISTS, ZMSCORE)."""
    return str(getattr(client, "global_keyprefix", "") or "") + key


def _one_command(client: Any, *command: Any) -> Any:
    """A command of a message's path (record, ack) sent the short way
    (``genfleet.scripts.send``), unless kombu's client prefixes its keys."""
    if getattr(client, "global_keyprefix", None):
        return client.execute_command(*command)
    return send(client, *command)


class SafeQoS(kombu_redis.QoS):
    """kombu's record of the messages a worker holds, in one hash entry per message
    (its time inside), and kept through a Redis that cannot take writes for a while
    (out of memory, restarting): a popped message is held in memory and recorded once
    Redis has room, never lost and never fatal."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        through_outage(lambda: self._record(message, delivery_tag),
                       "a message popped from the queue", C.RESULT_SAVE_MAX_WAIT_S)  # fmt: skip
        virtual.QoS.append(self, message, delivery_tag)

    def _record(self, message: Any, delivery_tag: Any) -> None:
        delivery = message.delivery_info
        held = dumps([message._raw, delivery["exchange"], delivery["routing_key"], _now()])
        with self.channel.conn_or_acquire() as client:
            _one_command(client, "HSET", self.unacked_key, delivery_tag, held)

    def ack(self, delivery_tag: Any) -> None:
        """One HDEL (kombu sends it through a pipeline of its own)."""
        with self.channel.conn_or_acquire() as client:
            _one_command(client, "HDEL", self.unacked_key, delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
            virtual.QoS.ack(self, delivery_tag)
        else:
            self.ack(delivery_tag)

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        """Requeue one held message and forget it, in one transaction. A record of
        kombu's three items (an older worker's) is dated in ``unacked_index``: its
        entry there goes too."""

        def restore(pipe: Any) -> None:
            value = pipe.hget(self.unacked_key, tag)
            held = parse_held(value) if value else None
            pipe.multi()
            pipe.hdel(self.unacked_key, tag)
            if held is None or held.delivered_at is None:
                pipe.zrem(self.unacked_index_key, tag)
            if held is not None:
                self.channel._do_restore_message(held.payload, held.exchange, held.routing_key,
                                                 pipe, leftmost)  # fmt: skip
            elif value:
                logger.error("dropped a held message that is not [message, exchange, "
                             "routing key, time] (%s)", shown(value))  # fmt: skip

        with self.channel.conn_or_acquire(client) as client:
            client.transaction(restore, self.unacked_key)

    def restore_visible(self, start: int = 0, num: int | None = 10, interval: int = 10) -> None:
        """Requeue the messages held past the visibility timeout (their worker died):
        kombu's sweep, its throttle and its mutex, reading the hash instead of an index."""
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % (interval or 1):
            return
        with self.channel.conn_or_acquire() as client:
            try:
                with kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                    for tag in self._overdue(client, start, num):
                        self.restore_by_tag(tag, client)
            except kombu_redis.MutexHeld:
                pass

    def _overdue(self, client: Any, start: int, num: int | None) -> list[Any]:
        """The tags held past the visibility timeout, latest first, and as kombu picks
        them: ``num`` of them from ``start``, or all when ``num`` is None or 0."""
        ceil = _now() - self.visibility_timeout
        overdue: dict[Any, float] = {}
        undated: list[Any] = []
        for tag, value in client.hscan_iter(_raw_key(client, self.unacked_key), count=_SCAN_BATCH):
            held = parse_held(value)
            if held is None or held.delivered_at is None:
                undated.append(tag)
            elif held.delivered_at <= ceil:
                overdue[tag] = held.delivered_at
        overdue.update(self._overdue_by_index(client, undated, ceil))
        tags = sorted(overdue, key=overdue.__getitem__, reverse=True)
        return tags[start : start + num] if num else tags

    def _overdue_by_index(self, client: Any, tags: list[Any], ceil: float) -> dict[Any, float]:
        """Which records without a time of their own (an older worker's) are overdue:
        as ``unacked_index`` dates them while it exists, else all (as old as can be)."""
        if not tags:
            return {}
        index = _raw_key(client, self.unacked_index_key)
        if not client.exists(index):
            return dict.fromkeys(tags, 0.0)
        dated = zip(tags, client.zmscore(index, tags), strict=True)
        return {tag: at for tag, at in dated if at is not None and at <= ceil}


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

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        """kombu's own requeue of a held message would read three items, not four."""
        if not self.ack_emulation:
            return super()._restore(message, leftmost)
        self.qos.restore_by_tag(message.delivery_tag, leftmost=leftmost)

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
