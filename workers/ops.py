"""Redis updates that ride along in another script call (counters, a cache entry).

A step's bookkeeping (its call counters, the answer for the cache) is written by the
limiter's own admission and release scripts instead of commands of its own: one
command sent per decision, however many counters move. ``Ops`` gathers the updates;
``OPS_LUA`` is the Lua that applies them, appended to a script that takes them after
its own keys and arguments.
"""

from __future__ import annotations

from typing import Any

# Defines apply_ops(k0, a0): applies the updates in ARGV[a0..], four values each
# (operation, key index past KEYS[k0], field, value).
OPS_LUA = """
local function apply_ops(k0, a0)
  for i = a0, #ARGV, 4 do
    local op, key = ARGV[i], KEYS[k0 + tonumber(ARGV[i + 1])]
    local field, value = ARGV[i + 2], ARGV[i + 3]
    if op == 'EXPIRE' then redis.call(op, key, value)
    elseif op == 'SADD' then redis.call(op, key, field)
    elseif op == 'SETEX' then redis.call('SET', key, value, 'EX', field)
    else redis.call(op, key, field, value) end
  end
end
"""

# The operations ``Ops.add`` takes (the Lua above knows no others).
OPERATIONS = frozenset({"HINCRBY", "HINCRBYFLOAT", "HSET", "EXPIRE", "SADD", "SETEX"})


class Ops:
    """Updates gathered for one script call: ``keys`` go after the script's own keys,
    ``args`` after its own arguments."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []

    def add(self, op: str, key: str, field: Any, value: Any) -> None:
        """One update: HINCRBY/HINCRBYFLOAT/HSET key field value, EXPIRE key (value
        seconds), SADD key field, SETEX key (field seconds) value."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}: one of {sorted(OPERATIONS)}")
        if key not in self.keys:
            self.keys.append(key)
        self.args += [op, self.keys.index(key) + 1, field, value]

    def __bool__(self) -> bool:
        return bool(self.args)
