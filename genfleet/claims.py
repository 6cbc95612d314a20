"""Step claims: at most one live attempt of a step calls the provider.

Before a step calls, it claims itself in ``genfleet:job:{job_id}:claims`` (one Lua
call: set if absent, expired, or already its own). The claim names its owner and
lives ``LEASE_S`` seconds by Redis' clock, renewed while the attempt works (see
``workers/heartbeat.py``). A second delivery of the step (redelivery after a
visibility timeout, a worker whose clock is off, cancel then resume, two resumes)
finds the live claim and waits; only once the owner has died and its claim has
expired may another attempt call again.

A claim reads ``"owner @started expiry"``: ``started`` is when the attempt holding it
took it (Redis time), kept through renewals and new on a take-over; it is what the
store shows as the step's start (a step is *running* while it has a claim). A claim
an older genfleet wrote reads ``"owner expiry"`` and is still read (with no start);
an older genfleet reads a new claim as owner ``"owner @started"`` with the right
expiry, so during an upgrade old and new workers still keep each other out. The two
formats differ unless an owner ends in `` @<digits>``, which ``new_owner`` never
makes (its owners have no spaces). A claim with no owner (``JobStore.mark_started``)
holds nothing: it has expired before it is written.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass

import redis

from genfleet import constants as C
from genfleet.clock import redis_clock
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
# parse() answers the owner (nil for none), the expiry and the start (nil when the
# claim has none: an older genfleet's "owner expiry").
# take() answers 1 (held now), 2 and the owner whose expired claim it took over, or 0,
# the live owner and its seconds left; the start is kept when the claim was the
# owner's already, else it is now.
CLAIM_PRELUDE = """
local now  -- Redis' time: set by use_clock() before anything else
local function use_clock(given)  -- the caller's reading of it (genfleet.clock), else TIME
  now = tonumber(given) or 0
  if now <= 0 then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
end
local function parse(value)
  if not value then return nil, 0, nil end
  local owner, started, expiry = string.match(value, '^(.*) @([%d%.]+) ([%d%.]+)$')
  if not owner then owner, expiry = string.match(value, '^(.*) ([%d%.]+)$') end
  if owner == '' then owner = nil end
  return owner, tonumber(expiry) or 0, started
end
local function claim_value(owner, lease_s, started)
  local expiry = string.format('%.3f', now + tonumber(lease_s))
  return owner .. ' @' .. (started or string.format('%.3f', now)) .. ' ' .. expiry
end
local function hold(key, step, owner, lease_s, started)
  redis.call('HSET', key, step, claim_value(owner, lease_s, started))
end
local function take(key, step, owner, lease_s)
  -- The common case, no claim yet, in one command; else read the one there.
  if redis.call('HSETNX', key, step, claim_value(owner, lease_s)) == 1 then return 1, '', 0 end
  local other, expiry, started = parse(redis.call('HGET', key, step))
  if other and other ~= owner and expiry > now then return 0, other, expiry - now end
  if other ~= owner then started = nil end
  hold(key, step, owner, lease_s, started)
  if other and other ~= owner then return 2, other, 0 end
  return 1, '', 0
end
"""

# KEYS[1] claims hash; ARGV: 1 step, 2 owner, 3 lease_s, 4 ttl_s, 5 now (0: TIME)
# Returns {1, '', '0'} when the caller holds the claim now ({2, ...} if it took over
# an expired one), else {0, owner, seconds left}.
_CLAIM = (
    CLAIM_PRELUDE
    + """
use_clock(ARGV[5])
local code, other, left = take(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if code ~= 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4])) end
return {code, other, string.format('%.3f', left)}
"""
)

# KEYS[1] claims hash; ARGV: 1 step, 2 owner, 3 lease_s, 4 now. Extends the claim if it is
# still the owner's (a claim given back with the step's result is not brought back),
# keeping its start.
_RENEW = (
    CLAIM_PRELUDE
    + """
use_clock(ARGV[4])
local owner, _, started = parse(redis.call('HGET', KEYS[1], ARGV[1]))
if owner ~= ARGV[2] then return 0 end
hold(KEYS[1], ARGV[1], ARGV[2], ARGV[3], started)
return 1
"""
)

# KEYS[1] claims hash; ARGV: 1 step, 2 owner. Deletes the claim if it is the owner's.
_RELEASE = GIVE_BACK_LUA + "return give_back(KEYS[1], ARGV[1], ARGV[2])\n"

# KEYS[1] claims hash. Returns the step ids whose claims are live.
_LIVE = (
    CLAIM_PRELUDE
    + """
use_clock(ARGV[1])
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


# A claim's value, as parse() in CLAIM_PRELUDE reads it (Lua's '.' matches newlines too).
_CLAIM_VALUE = re.compile(r"(.*) @([0-9.]+) ([0-9.]+)", re.DOTALL)


def ownerless_claim(started: float) -> str:
    """A claim that holds nothing (expired at once) and says when a step began."""
    return f" @{started:.3f} 0"


def claim_started(value: str) -> float | None:
    """When the attempt holding a claim took it; None for a claim written by an older
    genfleet ("owner expiry") or one that does not parse."""
    match = _CLAIM_VALUE.fullmatch(value)
    try:
        return float(match.group(2)) if match else None
    except ValueError:  # "1.2.3" matches the pattern, as in Lua
        return None


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
        self.clock = redis_clock(client)

    def claim(self, job_id: str, step_id: str, owner: str) -> Claim:
        """Take (or renew) the step's claim for ``owner`` unless another owner holds it."""
        key = C.KEY_JOB_CLAIMS.format(job_id=job_id)
        args = [step_id, owner, self.lease_s, self.ttl_s, self.clock.now()]
        reply = self._claim(keys=[key], args=args)
        code, other, left = int(reply[0]), _text(reply[1]), float(reply[2])
        if code == 0:
            return Claim(held=False, owner=other, left_s=left)
        return Claim(held=True, owner=other, took_over=code == 2)

    def renew(self, job_id: str, step_id: str, owner: str) -> bool:
        """Extend ``owner``'s claim by a lease; False (nothing changes) once it is not
        theirs: given back with the result, or expired and taken over."""
        key = C.KEY_JOB_CLAIMS.format(job_id=job_id)
        return bool(self._renew(keys=[key], args=[step_id, owner, self.lease_s, self.clock.now()]))

    def release(self, job_id: str, step_id: str, owner: str) -> bool:
        """Drop the step's claim if ``owner`` still holds it."""
        key = C.KEY_JOB_CLAIMS.format(job_id=job_id)
        return bool(self._release(keys=[key], args=[step_id, owner]))

    def live(self, job_id: str) -> list[str]:
        """The steps of a job whose claims are live (an attempt is working on them)."""
        key = C.KEY_JOB_CLAIMS.format(job_id=job_id)
        return [_text(s) for s in self._live(keys=[key], args=[self.clock.now()])]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
