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
# (operation, key index past KEYS[k0], field, value). HADDV adds a vector of numbers
# (space-separated) to the one kept in a hash field: several counters in two commands.
OPS_LUA = """
local function add_vector(key, field, value)
  local sums = {}
  for d in string.gmatch(value, '%S+') do sums[#sums + 1] = tonumber(d) end
  local i = 1
  for c in string.gmatch(redis.call('HGET', key, field) or '', '%S+') do
    sums[i] = (sums[i] or 0) + (tonumber(c) or 0)
    i = i + 1
  end
  for j = 1, #sums do sums[j] = string.format('%.17g', sums[j]) end
  redis.call('HSET', key, field, table.concat(sums, ' '))
end
local function apply_ops(k0, a0)
  for i = a0, #ARGV, 4 do
    local op, key = ARGV[i], KEYS[k0 + tonumber(ARGV[i + 1])]
    local field, value = ARGV[i + 2], ARGV[i + 3]
    if op == 'HADDV' then add_vector(key, field, value)
    elseif op == 'EXPIRE' then redis.call(op, key, value)
    elseif op == 'SADD' then redis.call(op, key, field)
    elseif op == 'SETEX' then redis.call('SET', key, value, 'EX', field)
    else redis.call(op, key, field, value) end
  end
end
"""

# The operations ``Ops.add`` takes (the Lua above knows no others).
OPERATIONS = frozenset({"HINCRBY", "HINCRBYFLOAT", "HSET", "EXPIRE", "SADD", "SETEX", "HADDV"})


class Ops:
    """Updates gathered for one script call: ``keys`` go after the script's own keys,
    ``args`` after its own arguments."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []

    def add(self, op: str, key: str, field: Any, value: Any) -> None:
        """One update: HINCRBY/HINCRBYFLOAT/HSET key field value, EXPIRE key (value
        seconds), SADD key field, SETEX key (field seconds) value, HADDV key field
        "n1 n2 ..." (adds each number to the one at its place in the field)."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}: one of {sorted(OPERATIONS)}")
        if key not in self.keys:
            self.keys.append(key)
        self.args += [op, self.keys.index(key) + 1, field, value]

    def copy(self) -> Ops:
        twin = Ops()
        twin.keys, twin.args = list(self.keys), list(self.args)
        return twin

    def __bool__(self) -> bool:
        return bool(self.args)
