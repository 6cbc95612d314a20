"""Lua scripts called the short way: ``EVALSHA`` straight through the client.

redis-py's ``Script.__call__`` goes through a per-call import and type check, the
``evalsha`` command's argument-deprecation wrapper and ``_evalsha`` before it reaches
``execute_command``: a few percent of an LLM worker's CPU at four script calls per
step. ``LeanScript`` sends the same command itself, and loads the script again when a
restarted Redis has forgotten it (``NOSCRIPT``), as redis-py does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError


class LeanScript:
    """One Lua script of one client; call it as redis-py's ``Script``:
    ``script(keys=[...], args=[...])``, or with ``client=`` another client or a
    pipeline (a pipeline goes through redis-py, which loads it before the batch)."""

    __slots__ = ("client", "script", "sha", "_redis_py")

    def __init__(self, client: redis.Redis, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._redis_py = client.register_script(script)

    def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        target = self.client if client is None else client
        if not isinstance(target, redis.Redis) or isinstance(target, redis.client.Pipeline):
            return self._redis_py(keys=keys, args=args, client=target)
        try:
            return target.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            target.script_load(self.script)
            return target.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def lean_script(client: redis.Redis, script: str) -> LeanScript:
    """``client.register_script(script)``, called the short way."""
    return LeanScript(client, script)
