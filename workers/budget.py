"""Budgets: a job's ``max_cost_usd`` and the cluster's ``LLM_BUDGET_USD_PER_DAY``.

A call's estimated cost (prompt estimate + ``max_tokens`` at the model's price) is
*reserved* by the limiter's admission script, in the same Lua call as the other
limits (``budget_lua`` is part of ``workers.limiter_lua.ACQUIRE``; a batch-mode
request reserves with ``RESERVE_LUA`` when it is queued), and *settled* with the
real cost when the lease is released or the batch line routed (``SETTLE_LUA``). Admission refuses a
call when spent + reservations in flight + its estimate would pass a budget, so
spending never exceeds a budget by more than the reservations in flight (and only
when the provider bills more than the estimate).

Keys (``genfleet.constants``): ``genfleet:budget:job:{job_id}`` and
``genfleet:budget:day:{YYYY-MM-DD}`` (UTC), hashes of ``spent`` (USD),
``r:{lease_id}`` = ``cost|expiry`` (a reservation; an expired one, of a killed
worker, is dropped) and, for a job, ``stopped`` once its budget was reached: from
then on none of its calls is admitted until ``genfleet resume --max-cost`` raises it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from genfleet import constants as C
from genfleet.errors import BudgetExceededError
from genfleet.prices import format_usd
from genfleet.scripts import LeanScript

REASON_JOB = "budget_job"
REASON_DAY = "budget_day"
REASONS = frozenset({REASON_JOB, REASON_DAY})


@dataclass(frozen=True)
class BudgetAsk:
    """What one admission reserves, and against which budgets (0 = none)."""

    cost: float  # estimated USD of the call
    job_key: str
    job_max: float
    day_key: str
    day_max: float

    @property
    def active(self) -> bool:
        return self.job_max > 0 or self.day_max > 0


def job_key(job_id: str) -> str:
    return C.KEY_BUDGET_JOB.format(job_id=job_id or "-")


def day_key(now: float | None = None) -> str:
    return C.KEY_BUDGET_DAY.format(day=time.strftime("%Y-%m-%d", time.gmtime(now)))


def make_ask(cost: float | None, job_id: str, job_max: float | None, day_max: float) -> BudgetAsk:
    """The reservation of one call; ``cost`` None (no price) with a budget refuses it."""
    job_max = float(job_max or 0) if job_id else 0.0
    if cost is None and (job_max > 0 or day_max > 0):
        cost = float("inf")  # no price: the budget cannot be kept, so the call is refused
    return BudgetAsk(cost or 0.0, job_key(job_id), job_max, day_key(), day_max)


# The template of ``budget_lua`` (ACQUIRE's key and argument numbers).
BUDGET_LUA = """
local b_cost, b_job, b_day = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])
local b_ttl = tonumber(ARGV[18])
local function budget_held(key)
  local fields = redis.call('HGETALL', key)
  local spent, held = 0, 0
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if name == 'spent' then
      spent = tonumber(value) or 0
    elseif string.sub(name, 1, 2) == 'r:' then
      local cost, expiry = string.match(value, '^([^|]+)|(.+)$')
      if tonumber(expiry) <= now then redis.call('HDEL', key, name)
      else held = held + tonumber(cost) end
    end
  end
  return spent + held
end
local function budget_deny()
  if b_job > 0 then
    if redis.call('HGET', KEYS[9], 'stopped') then return 'budget_job' end
    if budget_held(KEYS[9]) + b_cost > b_job then
      redis.call('HSET', KEYS[9], 'stopped', 1)
      return 'budget_job'
    end
  end
  if b_day > 0 and budget_held(KEYS[10]) + b_cost > b_day then return 'budget_day' end
  return nil
end
local function budget_reserve()
  local held = string.format('%.10f|%.6f', b_cost, now + lease_s)
  -- Only a budget's hash gets a reservation (and its TTL); the spending of a job
  -- without one is kept alive by the settle after its calls.
  if b_job > 0 then
    redis.call('HSET', KEYS[9], 'r:' .. lease, held)
    redis.call('EXPIRE', KEYS[9], b_ttl)
  end
  if b_day > 0 then
    redis.call('HSET', KEYS[10], 'r:' .. lease, held)
    redis.call('EXPIRE', KEYS[10], b_ttl)
  end
end
"""


def budget_lua(k: int, a: int) -> str:
    """Lua functions ``budget_deny()`` and ``budget_reserve()`` for a script with the
    locals ``now``, ``lease`` and ``lease_s``: KEYS[k] is the job's budget, KEYS[k+1]
    the day's; ARGV[a..a+3] the cost, the job's and the day's budget (0: none), the
    keys' TTL in seconds. ``budget_deny`` returns a reason or nil."""
    return (
        BUDGET_LUA.replace("KEYS[9]", f"KEYS[{k}]").replace("KEYS[10]", f"KEYS[{k + 1}]")
        .replace("ARGV[15]", f"ARGV[{a}]").replace("ARGV[16]", f"ARGV[{a + 1}]")
        .replace("ARGV[17]", f"ARGV[{a + 2}]").replace("ARGV[18]", f"ARGV[{a + 3}]")
    )  # fmt: skip


# KEYS: 1 job budget, 2 day budget; ARGV: 1 lease id, 2 cost (USD billed), 3 ttl s.
# Drops the lease's reservations and adds what was billed. Budget hashes of jobs
# without a budget are counted too, so a budget set by a resume sees the spending.
SETTLE_LUA = """
local lease, cost, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, 2 do
  redis.call('HDEL', KEYS[i], 'r:' .. lease)
  if cost > 0 then redis.call('HINCRBYFLOAT', KEYS[i], 'spent', string.format('%.10f', cost)) end
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
"""


# A reservation outside the limiter (the Batch API): KEYS 1 job, 2 day budget;
# ARGV 1 reservation id, 2 lifetime s, 3-6 as budget_lua. Returns a reason or ''.
RESERVE_LUA = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease, lease_s = ARGV[1], tonumber(ARGV[2])
"""
    + budget_lua(1, 3)
    + """
local reason = budget_deny()
if reason then return reason end
budget_reserve()
return ''
"""
)


class Budgets:
    """Settling calls and reading what was spent (the reservation is in ACQUIRE)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._settle = LeanScript(client, SETTLE_LUA)
        self._reserve = LeanScript(client, RESERVE_LUA)

    def reserve(self, ask: BudgetAsk, reservation_id: str, lifetime_s: float) -> str:
        """Reserve outside the limiter (a batch request); returns a refusal reason or ''."""
        if not ask.active:
            return ""
        args: list[str | float] = [reservation_id, lifetime_s, f"{ask.cost:.10f}", ask.job_max,
                                   ask.day_max, C.BUDGET_TTL_S]  # fmt: skip
        reason = self._reserve(keys=[ask.job_key, ask.day_key], args=args)
        return reason.decode() if isinstance(reason, bytes) else str(reason)

    def settle(self, lease_id: str, job_id: str, day: str, cost: float) -> None:
        """Replace a lease's reservation by the cost really billed."""
        keys = [job_key(job_id), day or day_key()]
        self._settle(keys=keys, args=[lease_id, max(0.0, cost), C.BUDGET_TTL_S])

    def spent(self, key: str) -> float:
        return float(self.redis.hget(key, "spent") or 0.0)

    def exceeded(self, reason: str, ask: BudgetAsk, model: str, job_id: str,
                 step: str) -> BudgetExceededError:  # fmt: skip
        """The error for a refused call: which budget, what was spent, how to go on."""
        if reason == REASON_DAY:
            message = (
                f"the cluster's budget of {format_usd(ask.day_max)} a day "
                f"(LLM_BUDGET_USD_PER_DAY) is reached: {format_usd(self.spent(ask.day_key))} "
                "spent today (UTC)"
            )
        elif ask.cost == float("inf"):
            message = f"model {model} has no price, so a budget cannot be kept: see GENFLEET_PRICES"
        else:
            message = (
                f"the job's budget of {format_usd(ask.job_max)} is reached: "
                f"{format_usd(self.spent(ask.job_key))} spent"
            )
        return BudgetExceededError(message, model=model, job_id=job_id, step=step)


def raise_job_budget(client: redis.Redis, job_id: str) -> None:
    """Let a stopped job's calls be admitted again (after its budget was raised)."""
    client.hdel(job_key(job_id), "stopped")


def job_spent(client: redis.Redis, job_id: str) -> float:
    return float(client.hget(job_key(job_id), "spent") or 0.0)
