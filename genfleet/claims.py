"""Step claims: at most one live attempt of a step calls the provider.

Before a step calls, it claims itself in ``genfleet:job:{job_id}:claims`` (one Lua
call: set if absent, expired, or already its own). The claim names its owner and
lives ``LEASE_S`` seconds by Redis' clock, renewed while the attempt works (see
``workers/heartbeat.py``). A second delivery of the step (redelivery after a
visibility timeout, a worker whose clock is off, cancel then resume, two resumes)
finds the live claim and waits; only once the owner has died and its claim has
expired may another attempt call again.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

import redis

from genfleet import constants as C
from genfleet.scripts import LeanScript

# Giving a claim back, for any script: needs no clock.
GIVE_BACK_LUA = """
local function give_back(key, step, owner)  -- 1 if it was owner's and is gone now
  local value = redis.call('HGET', key, step)
  if value and string.sub(value, 1, #owner + 1) == owner .. ' ' then
    return redis.call('HDEL', key, step)
  end
  return 0
end
"""

# Redis' clock and the claim operations, for any script that takes or renews one.
# take() answers 1 (held now), 2 and the owner whose expired claim it took over, or 0,
# the live owner and its seconds left.
CLAIM_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function parse(value)
  if not value then return nil, 0 end
  local owner, expiry = string.match(value, '^(.*) ([%d%.]+)$')
  return owner, tonumber(expiry) or 0
end
local function hold(key, step, owner, lease_s)
  redis.call('HSET', key, step, owner .. ' ' .. string.format('%.3f', now + tonumber(lease_s)))
end
local function take(key, step, owner, lease_s)
  local other, expiry = parse(redis.call('HGET', key, step))
  if other and other ~= owner and expiry > now then return 0, other, expiry - now end
  hold(key, step, owner, lease_s)
  if other and other ~= owner then return 2, other, 0 end
  return 1, '', 0
end
"""

# KEYS[1] claims hash; ARGV: 1 step, 2 owner, 3 lease_s, 4 ttl_s
# Returns {1, '', '0'} when the caller holds the claim now ({2, ...} if it took over
# an expired one), else {0, owner, seconds left}.
_CLAIM = (
    CLAIM_PRELUDE
    + """
local code, other, left = take(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if code ~= 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4])) end
return {code, other, string.format('%.3f', left)}
"""
)

# KEYS[1] claims hash; ARGV: 1 step, 2 owner, 3 lease_s. Extends the claim if it is
# still the owner's (a claim given back with the step's result is not brought back).
_RENEW = (
    CLAIM_PRELUDE
    + """
if parse(redis.call('HGET', KEYS[1], ARGV[1])) ~= ARGV[2] then return 0 end
hold(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

# KEYS[1] claims hash; ARGV: 1 step, 2 owner. Deletes the claim if it is the owner's.
_RELEASE = GIVE_BACK_LUA + "return give_back(KEYS[1], ARGV[1], ARGV[2])\n"

# KEYS[1] claims hash. Returns the step ids whose claims are live.
_LIVE = (
    CLAIM_PRELUDE
    + """
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local _, expiry = parse(all[i + 1])
  if expiry > now then live[#live + 1] = all[i] end
end
return live
"""
)


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: held (by us), or held by someone else for ``left_s``."""

    held: bool
    owner: str = ""  # the other owner when not held; the expired one on a take-over
    left_s: float = 0.0
    took_over: bool = False  # an earlier attempt died holding it


def new_owner() -> str:
    """A name for one attempt: host, process and a random part (for the logs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class StepClaims:
    """The claims of every job's steps in one Redis database."""

    def __init__(self, client: redis.Redis, ttl_s: int, lease_s: float = C.LEASE_S) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self._claim = LeanScript(client, _CLAIM)
        self._release = LeanScript(client, _RELEASE)
        self._renew = LeanScript(client, _RENEW)
        self._live = LeanScript(client, _LIVE)

    def claim(self, job_id: str, step_id: str, owner: str) -> Claim:
        """Take (or renew) the step's claim for ``owner`` unless another owner holds it."""
        key = C.KEY_JOB_CLAIMS.format(job_id=job_id)
        reply = self._claim(keys=[key], args=[step_id, owner, self.lease_s, self.ttl_s])
        code, other, left = int(reply[0]), _text(reply[1]), float(reply[2])
        if code == 0:
            return Claim(held=False, owner=other, left_s=left)
        return Claim(held=True, owner=other, took_over=code == 2)

    def renew(self, job_id: str, step_id: str, owner: str) -> bool:
        """Extend ``owner``'s claim by a lease; False (nothing changes) once it is not
        theirs: given back with the result, or expired and taken over."""
        key = C.KEY_JOB_CLAIMS.format(job_id=job_id)
        return bool(self._renew(keys=[key], args=[step_id, owner, self.lease_s]))

    def release(self, job_id: str, step_id: str, owner: str) -> bool:
        """Drop the step's claim if ``owner`` still holds it."""
        key = C.KEY_JOB_CLAIMS.format(job_id=job_id)
        return bool(self._release(keys=[key], args=[step_id, owner]))

    def live(self, job_id: str) -> list[str]:
        """The steps of a job whose claims are live (an attempt is working on them)."""
        return [_text(s) for s in self._live(keys=[C.KEY_JOB_CLAIMS.format(job_id=job_id)])]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
