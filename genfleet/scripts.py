"""Lua scripts called the short way: ``EVALSHA`` on a connection of their own.

redis-py's ``Script.__call__`` goes through a per-call import and type check, the
``evalsha`` command's argument-deprecation wrapper, ``execute_command``'s retry
wrapper and the pool's checks of a connection it hands out (a deprecation wrapper, a
``poll`` for unread data): about a tenth of an LLM worker's CPU at four script calls
per step. ``LeanScript`` sends the command on a connection it keeps in a free list of
the client's pool (made by that pool, so with its settings) and reads the reply.

Anything but a reply (a broken or timed-out connection, Redis restarting) drops that
connection and sends the command again the ordinary way, through
``execute_command`` and its retries, so errors and outages look as they always did;
a script a restarted Redis has forgotten (``NOSCRIPT``) is loaded again, as redis-py
does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

# Connections of a client's pool that LeanScripts use, by the pool (one list for
# every script of the client). A forked child starts its own.
_FREE_ATTR = "_genfleet_lean_free"


def _free_list(pool: Any) -> list[Any]:
    held = getattr(pool, _FREE_ATTR, None)
    if held is None or held[0] != os.getpid():
        held = (os.getpid(), [])
        setattr(pool, _FREE_ATTR, held)
    free: list[Any] = held[1]
    return free


def send(client: redis.Redis, *command: Any) -> Any:
    """One command on a free connection of ``client``'s pool; the ordinary way when
    that connection fails (``execute_command`` reconnects and retries). For the
    commands of a step's path (script calls, the broker's record of a held message);
    a client that rewrites its commands (a key prefix) must not use it."""
    pool = client.connection_pool
    free = _free_list(pool)
    try:
        conn = free.pop()  # list.pop and append are atomic: threads share the list
    except IndexError:
        conn = pool.make_connection()
    try:
        conn.send_command(*command)
        reply = conn.read_response()
    except (ConnectionError, TimeoutError, OSError):
        conn.disconnect()
        return client.execute_command(*command)
    except redis.ResponseError:
        free.append(conn)  # an error reply leaves the connection fine
        raise
    except BaseException:
        conn.disconnect()  # a reply may be left unread on it
        raise
    free.append(conn)
    return reply


class LeanScript:
    """One Lua script of one client, made as ``client.register_script(script)`` is
    and called as redis-py's ``Script``:
    ``script(keys=[...], args=[...])``, or with ``client=`` another client or a
    pipeline (a pipeline goes through redis-py, which loads it before the batch)."""

    __slots__ = ("client", "script", "sha", "_redis_py")

    def __init__(self, client: redis.Redis, script: str) -> None:
        self.client = client
        self.script = script
        self._redis_py = client.register_script(script)  # for pipelines
        self.sha = self._redis_py.sha

    def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        target = self.client if client is None else client
        if not isinstance(target, redis.Redis) or isinstance(target, redis.client.Pipeline):
            return self._redis_py(keys=keys, args=args, client=target)
        try:
            return send(target, "EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            target.script_load(self.script)
            return send(target, "EVALSHA", self.sha, len(keys), *keys, *args)
