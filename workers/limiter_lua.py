"""The Lua scripts behind ``workers.limiter``: each limiter decision is one script call.

Times are seconds as floats. A script uses ``ARGV[1]`` as "now" when it is > 0 (Redis'
clock as the caller reads it, ``genfleet.clock``; tests inject their own) and Redis'
``TIME`` otherwise, so the workers' own clocks never matter.
Numbers go back to Python as strings: Redis would truncate a Lua number to an integer.
"""

from __future__ import annotations

from workers.budget import budget_lua
from workers.ops import OPS_LUA

PRELUDE = """
local function clock(arg)
  local injected = tonumber(arg)
  if injected and injected > 0 then return injected end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(value, default)  -- a Redis reply (string, or false when missing)
  return tonumber(value) or default
end
local function fmt(x) return string.format('%.6f', x) end
local function clamp(x, lo, hi) return math.max(lo, math.min(hi, x)) end
local function after(x) return '(' .. string.format('%.17g', x) end  -- exclusive bound
"""

# KEYS: 1 (unused: the cooldown is the state's 'cool'), 2 state, 3 leases, 4 rpm log,
#       5 tpm log, 6 tpm tokens,
#       7 job next, 8 job leases, 9 job budget, 10 day budget (workers.budget),
#       11 the scope's wake-up list (see RELEASE)
# ARGV: 1 now, 2 lease id, 3 tokens, 4 max_concurrent, 5 rpm, 6 tpm, 7 lease_s,
#       8 window_s, 9 job_concurrency, 10 throttle_s, 11 ttl_ms, 12 burst divisor,
#       13 slot wait hint, 14 minimum wait, 15-18 budget (cost, job max, day max, ttl),
#       19 how long a slot waiter may wait to be woken (see RELEASE),
#       20 refresh (1: renew every key's TTL and drop expired leases; the caller asks
#          for it now and then, see ``ClusterLimiter``; else only keys made now get one),
#       21 reserve s: when only the rpm limit holds the call back, for at most this
#          long, it is admitted for the time it may go (its lease, its place in the
#          rpm log and pace are taken now, dated then): the caller sleeps until then
#          without asking again (0: refused instead, as before)
# Then, past KEYS[11] and ARGV[21], updates applied only when the call is admitted
# (its counters: ``workers.ops``).
# The state hash is read once (HMGET) and written once (HSET of what changed).
# Returns {1, in_flight, effective, delay_s, at (Redis' time it may go)} or
# {0, reason, wait_s}.
ACQUIRE = (
    PRELUDE
    + OPS_LUA
    + """
local now = clock(ARGV[1])
local lease, tokens = ARGV[2], tonumber(ARGV[3])
local maxc, rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local lease_s, window = tonumber(ARGV[7]), tonumber(ARGV[8])
local job_conc, throttle_s = tonumber(ARGV[9]), tonumber(ARGV[10])
local ttl_ms, divisor = tonumber(ARGV[11]), tonumber(ARGV[12])
local slot_wait, min_wait = tonumber(ARGV[13]), tonumber(ARGV[14])
local waiting_s = tonumber(ARGV[19]) or 0
local refresh = ARGV[20] == '1'
local reserve = tonumber(ARGV[21]) or 0
local delay = 0  -- an admission for later (ARGV[21]): how long the caller sleeps first
local state, leases, rpm_log, tpm_log, tpm_tok = KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local st = redis.call('HMGET', state, 'eff', 'max', 'tpm', 'rpm_tat', 'tpm_tat', 'cool', 'rpm_q')
local fresh = {}  -- keys this call makes: they get their TTL now (see ARGV[20])
local writes = {}  -- state fields to set, in one HSET at the end
if not st[1] then fresh[state] = true end
local function put(field, value)
  writes[#writes + 1] = field
  writes[#writes + 1] = value
end
"""
    + budget_lua(9, 15)
    + """

local function deny(reason, wait)
  return {0, reason, fmt(math.max(wait, min_wait))}
end

-- GCRA: the theoretical arrival time after admitting `cost`, and how long to wait
-- first (0 means now). `burst` is in the same units as `cost`. The wait is summed so
-- that an idle bucket gives exactly 0, and a wait under a microsecond (float noise
-- at Unix-time magnitudes) counts as none: pacing is soft, the window log is the cap.
local function gcra(stored, cost, interval, burst)
  local tat = math.max(num(stored, 0), now)
  local wait = (tat - now) + (cost - burst) * interval
  if wait < 0.000001 then wait = 0 end
  return tat + cost * interval, wait
end

local function job_wait()
  if throttle_s > 0 then
    local next_at = num(redis.call('GET', KEYS[7]), 0)
    if now < next_at then return 'throttle', next_at - now end
  end
  if job_conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)
    local held = redis.call('ZCARD', KEYS[8])
    if held >= job_conc then return 'job_concurrency', slot_wait end
    if held == 0 then fresh[KEYS[8]] = true end
  end
  return nil, 0
end

-- The wait until the log holds fewer than `rpm` entries newer than now - window.
-- Entries older than that are dropped on a refresh, not on every call.
local function rpm_window_wait()
  local count
  if refresh then
    redis.call('ZREMRANGEBYSCORE', rpm_log, '-inf', now - window)
    count = redis.call('ZCARD', rpm_log)
  else
    count = redis.call('ZCOUNT', rpm_log, after(now - window), '+inf')
  end
  if count == 0 then fresh[rpm_log] = true end
  if count < rpm then return 0 end
  local nth = redis.call('ZRANGEBYSCORE', rpm_log, after(now - window), '+inf', 'WITHSCORES',
    'LIMIT', count - rpm, 1)
  return tonumber(nth[2]) + window - now
end

-- Drops token entries older than the window; returns the tokens still in it.
local function tpm_window_sum()
  while true do
    local old = redis.call('ZRANGEBYSCORE', tpm_log, '-inf', now - window, 'LIMIT', 0, 256)
    if #old == 0 then break end
    local freed = 0
    for _, amount in ipairs(redis.call('HMGET', tpm_tok, unpack(old))) do
      freed = freed + num(amount, 0)
    end
    redis.call('HDEL', tpm_tok, unpack(old))
    redis.call('ZREM', tpm_log, unpack(old))
    redis.call('HINCRBY', state, 'tpm_sum', -freed)
  end
  if redis.call('ZCARD', tpm_log) == 0 then  -- heals a drifted sum
    fresh[tpm_log], fresh[tpm_tok] = true, true
    return 0
  end
  return num(redis.call('HGET', state, 'tpm_sum'), 0)
end

-- The wait until the oldest entries holding `need` tokens have left the window.
local function tpm_window_wait(need)
  local freed, offset = 0, 0
  while true do
    local batch = redis.call('ZRANGE', tpm_log, offset, offset + 255, 'WITHSCORES')
    if #batch == 0 then return window end
    local members = {}
    for i = 1, #batch, 2 do members[#members + 1] = batch[i] end
    for i, amount in ipairs(redis.call('HMGET', tpm_tok, unpack(members))) do
      freed = freed + num(amount, 0)
      if freed >= need then return tonumber(batch[2 * i]) + window - now end
    end
    offset = offset + 256
  end
end

local function rate_wait()
  local rpm_tat, tpm_tat
  if rpm > 0 then
    local wait = rpm_window_wait()
    local tat, pace = gcra(st[4], 1, 60 / rpm, math.max(1, math.floor(rpm / divisor)))
    wait = math.max(wait, pace)
    if wait > reserve then
      -- Each refused caller gets a time of its own, one interval after the last one
      -- handed out: waiters that all came back at the first free time would all but
      -- one be refused again. A hint: admission still decides when they come back.
      local at = math.max(now + wait, num(st[7], 0) + 60 / rpm)
      put('rpm_q', fmt(at))
      return 'rpm', at - now
    end
    delay = wait  -- admitted for then (GCRA's tat already counts it)
    rpm_tat = tat
  end
  if tpm > 0 then
    if tokens > tpm then return 'tpm', 60 end
    local sum, wait = tpm_window_sum(), 0
    if sum + tokens > tpm then wait = tpm_window_wait(sum + tokens - tpm) end
    local burst = math.max(tokens, math.floor(tpm / divisor))
    local tat, pace = gcra(st[5], tokens, 60 / tpm, burst)
    wait = math.max(wait, pace)
    if wait > 0 then return 'tpm', math.max(wait, delay) end
    tpm_tat = tat
  end
  return nil, 0, rpm_tat, tpm_tat
end

local function admit(effective, in_flight, rpm_tat, tpm_tat)
  local at = now + delay  -- when the call goes (now, unless admitted for later)
  redis.call('ZADD', leases, at + lease_s, lease)
  if in_flight == 0 then fresh[leases] = true end
  -- What RELEASE and SNAPSHOT read back: set when it changed, not on every call.
  if num(st[1], -1) ~= effective then put('eff', effective) end
  if num(st[2], -1) ~= maxc then put('max', maxc) end
  if num(st[3], -1) ~= tpm then put('tpm', tpm) end
  if rpm_tat then
    redis.call('ZADD', rpm_log, at, lease)
    put('rpm_tat', rpm_tat)
  end
  if tpm_tat then
    redis.call('ZADD', tpm_log, now, lease)
    redis.call('HSET', tpm_tok, lease, tokens)
    redis.call('HINCRBY', state, 'tpm_sum', tokens)
    put('tpm_tat', tpm_tat)
  end
  if throttle_s > 0 then
    local px = ttl_ms + math.ceil(throttle_s * 1000)
    redis.call('SET', KEYS[7], now + throttle_s, 'PX', px)
  end
  if job_conc > 0 then redis.call('ZADD', KEYS[8], at + lease_s, lease) end
  budget_reserve()
  apply_ops(11, 22)
  return {1, in_flight + 1, effective, fmt(delay), fmt(at)}
end

-- A caller will wait for a slot: releases push to the wake-up list (KEYS[11]) until
-- this mark passes. Tokens already there are stale (this caller saw every release
-- before now and was still refused): dropped, so a waiter never spins on them.
local function wait_for_slot(reason)
  if KEYS[11] then
    put('waiting', fmt(now + waiting_s))
    redis.call('DEL', KEYS[11])
  end
  return deny(reason, slot_wait)
end

local function decide()
  local cooldown_until = num(st[6], 0)
  if now < cooldown_until then return deny('cooldown', cooldown_until - now) end
  local reason, wait = job_wait()
  if reason == 'job_concurrency' then return wait_for_slot(reason) end
  if reason then return deny(reason, wait) end
  local effective = clamp(num(st[1], maxc), 1, maxc)
  local in_flight
  if refresh then  -- leases of dead workers are dropped now and then, not on every call
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    in_flight = redis.call('ZCARD', leases)
  else
    in_flight = redis.call('ZCOUNT', leases, after(now), '+inf')
  end
  if in_flight >= effective then return wait_for_slot('concurrency') end
  local rpm_tat, tpm_tat
  reason, wait, rpm_tat, tpm_tat = rate_wait()
  if reason then return deny(reason, wait) end
  reason = budget_deny()
  if reason then return deny(reason, 0) end
  return admit(effective, in_flight, rpm_tat, tpm_tat)
end

local reply = decide()
if #writes > 0 then redis.call('HSET', state, unpack(writes)) end
-- Keep the scope's keys alive while it is used: every key on a refresh, else the keys
-- made now (a key that exists got its TTL when it was made). The logs of a limit
-- that is off are never written (one left from before expires by itself).
local used = {state, leases}
if rpm > 0 then used[#used + 1] = rpm_log end
if tpm > 0 then used[#used + 1] = tpm_log; used[#used + 1] = tpm_tok end
if job_conc > 0 then used[#used + 1] = KEYS[8] end
for _, key in ipairs(used) do
  if refresh or fresh[key] then redis.call('PEXPIRE', key, ttl_ms) end
end
return reply
"""
)

# KEYS: k+1 state, 2 leases, 3 tpm log, 4 tpm tokens, 5 job leases, 6 wake-up list
# ARGV: a+1 now, 2 lease id, 3 actual tokens (< 0: unknown), 4 ok (1/0),
#       5 the lease holds a job slot (0: no; default yes), 6 wake-up list TTL ms
# Then, past KEYS[k + 6] and ARGV[a + 6], updates applied with the release
# (``workers.ops``). k and a are 0 when the release is a script of its own
# (``RELEASE``); a release riding along with its step's result
# (``genfleet.store.Rider``) comes after the save's keys and arguments.
# A slot freed while someone waits for one (ACQUIRE marked 'waiting') pushes a token
# to the wake-up list: a waiter blocked on it (BLPOP) tries again at once.
# Returns 1 when the lease was live, 0 when it had expired or was released before.
RELEASE_LUA = (
    PRELUDE
    + OPS_LUA
    + """
local function release_lease(k, a)
  apply_ops(k + 6, a + 7)
  local now = clock(ARGV[a + 1])
  local lease, actual, ok = ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4] == '1'
  local state = KEYS[k + 1]
  -- Live: still in the set (a dead worker's expired leases are dropped on a refresh).
  local live = redis.call('ZREM', KEYS[k + 2], lease) == 1
  if ARGV[a + 5] ~= '0' then redis.call('ZREM', KEYS[k + 5], lease) end
  local st = redis.call('HMGET', state, 'eff', 'max', 'waiting', 'streak', 'tpm', 'tpm_tat')
  local has_state = st[1] ~= false  -- else the idle scope expired
  if KEYS[k + 6] and num(st[3], 0) > now then
    redis.call('LPUSH', KEYS[k + 6], 1)
    redis.call('LTRIM', KEYS[k + 6], 0, 255)
    redis.call('PEXPIRE', KEYS[k + 6], tonumber(ARGV[a + 6]))
  end

  local function correct_tokens()
    local reserved = tonumber(redis.call('HGET', KEYS[k + 4], lease))
    if not reserved then return end  -- no tpm limit, or already out of the window
    local delta = actual - reserved
    redis.call('HSET', KEYS[k + 4], lease, actual)
    redis.call('HINCRBY', state, 'tpm_sum', delta)
    local tpm, tat = num(st[5], 0), tonumber(st[6])
    if tpm > 0 and tat then redis.call('HSET', state, 'tpm_tat', tat + delta * 60 / tpm) end
  end

  -- AIMD additive increase: one more slot after `effective` successes in a row (none
  -- to count at the cap).
  local function grow()
    local effective = num(st[1], 1)
    local maxc = num(st[2], effective)
    if num(st[4], 0) ~= 0 then redis.call('HSET', state, 'streak', 0) end
    if effective >= maxc then return end
    if redis.call('HINCRBY', state, 'succ', 1) >= effective then
      redis.call('HSET', state, 'eff', math.min(maxc, effective + 1), 'succ', 0)
    end
  end

  if has_state and actual >= 0 then correct_tokens() end
  if has_state and ok and live then grow() end
  if live then return 1 end
  return 0
end
"""
)
RELEASE = RELEASE_LUA + "return release_lease(0, 0)\n"

# KEYS: 1 leases, 2 job leases
# ARGV: 1 now, 2 lease id, 3 lease_s
# Returns 1 when the lease was live and now lives lease_s more, 0 when it was gone.
RENEW = (
    PRELUDE
    + """
local now = clock(ARGV[1])
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
if expiry == nil or expiry <= now then return 0 end
local until_ = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', until_, ARGV[2])
return 1
"""
)

# KEYS: 1 (unused), 2 state (its 'cool' is when the cooldown ends)
# ARGV: 1 now, 2 retry_after_s (< 0: none), 3 max_concurrent, 4 ttl_ms,
#       5 backoff initial, 6 backoff max, 7 decrease gap
# Returns the cooldown left, in seconds.
REPORT_RATE_LIMITED = (
    PRELUDE
    + """
local now = clock(ARGV[1])
local retry_after, maxc, ttl_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local backoff_initial, backoff_max = tonumber(ARGV[5]), tonumber(ARGV[6])
local gap = tonumber(ARGV[7])
local state = KEYS[2]
local streak = num(redis.call('HGET', state, 'streak'), 0)
local last = tonumber(redis.call('HGET', state, 'last_dec'))

-- AIMD multiplicative decrease, once per `gap`: 429s of calls that were in flight
-- together are one signal, not several.
if last == nil or now - last >= gap then
  local effective = clamp(num(redis.call('HGET', state, 'eff'), maxc), 1, maxc)
  streak = streak + 1
  redis.call('HSET', state, 'eff', math.max(1, math.floor(effective / 2)), 'max', maxc,
    'succ', 0, 'last_dec', now, 'streak', streak)
end
redis.call('HINCRBY', state, 'rl_total', 1)

local delay = retry_after
if delay < 0 then
  delay = math.min(backoff_max, backoff_initial * 2 ^ (math.max(streak, 1) - 1))
end
local cooldown_until = math.max(num(redis.call('HGET', state, 'cool'), 0), now + delay)
local px = ttl_ms
if cooldown_until > now then  -- ACQUIRE reads the cooldown from the state: it outlives it
  redis.call('HSET', state, 'cool', fmt(cooldown_until))
  px = ttl_ms + math.ceil((cooldown_until - now) * 1000)
end
redis.call('PEXPIRE', state, px)
return fmt(math.max(0, cooldown_until - now))
"""
)

# KEYS: 1 the scope's re-schedule pointer
# ARGV: 1 now, 2 interval s (60 / rpm), 3 not before (s from now)
# A call re-scheduled for a rate limit takes the next free time, one interval after
# the previous one: re-scheduled calls come back spaced out, not all at once.
# Returns the delay until its time. A hint only: admission still decides.
RESCHEDULE = (
    PRELUDE
    + """
local now = clock(ARGV[1])
local interval, not_before = tonumber(ARGV[2]), tonumber(ARGV[3])
local at = math.max(now + not_before, num(redis.call('GET', KEYS[1]), 0) + interval)
redis.call('SET', KEYS[1], fmt(at), 'PX', math.ceil((at - now) * 1000) + 60000)
return fmt(at - now)
"""
)

# KEYS: 1 (unused), 2 state, 3 leases, 4 rpm log, 5 tpm log, 6 tpm tokens
# ARGV: 1 now, 2 max_concurrent, 3 window_s
# Read-only. Returns {in_flight, effective, requests, tokens, cooldown_left, rl_total}.
SNAPSHOT = (
    PRELUDE
    + """
local now = clock(ARGV[1])
local maxc, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local cutoff = now - window
local old_tokens = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', cutoff)) do
  old_tokens = old_tokens + num(redis.call('HGET', KEYS[6], member), 0)
end
local tokens = 0
if redis.call('ZCARD', KEYS[5]) > 0 then
  tokens = num(redis.call('HGET', KEYS[2], 'tpm_sum'), 0) - old_tokens
end
return {
  redis.call('ZCOUNT', KEYS[3], after(now), '+inf'),
  clamp(num(redis.call('HGET', KEYS[2], 'eff'), maxc), 1, maxc),
  redis.call('ZCOUNT', KEYS[4], after(cutoff), '+inf'),
  tostring(tokens),
  fmt(math.max(0, num(redis.call('HGET', KEYS[2], 'cool'), 0) - now)),
  num(redis.call('HGET', KEYS[2], 'rl_total'), 0),
}
"""
)
