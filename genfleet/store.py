"""Reading and writing job records and step results in Redis (keys: ``constants``).

A step's successful result is written once (HSETNX): a step delivered again after a
lost worker finds it and does not call the model again. A job's keys have no TTL while
it is queued or running; ``RESULT_TTL_S`` counts from its end (finished or cancelled).

A step is *running* while it has a claim in the job's claims hash (``genfleet.claims``),
which carries when its attempt began: one field per step in flight, written when the
step begins and removed with its result. So:

- a claim left by a dead worker still counts as running, with the dead attempt's
  start, until a redelivery takes it over (its start is then the new attempt's);
- a step whose attempt gave its claim back without a result (re-scheduled by
  ``RetryLater``) is *waiting* until a delivery claims it again;
- a claim an older genfleet wrote ("owner expiry", no start) takes its start from the
  ``running`` hash those versions kept. That key is still in ``JobKeys`` (its TTL and
  deletion follow the job's) but nothing writes it any more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from genfleet import constants as C
from genfleet.claims import (
    CLAIM_PRELUDE,
    GIVE_BACK_LUA,
    StepClaims,
    claim_started,
    ownerless_claim,
)
from genfleet.errors import JobBusyError, JobNotFoundError
from genfleet.records import JobMetrics, JobRecord, JobView, StepResult
from genfleet.scripts import LeanScript
from genfleet.summary import SUCCESS_FIELD, success_counts

# Set the status to ARGV[1] only when the current one is among ARGV[2..].
_SET_STATUS_IF = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
for i = 2, #ARGV do
  if cur == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1])
    return 1
  end
end
return 0
"""

# A job ends, in one call: a reader never sees its final status without its summary.
# KEYS: JobKeys.all(). ARGV: 1 status, 2 finished_at, 3 summary JSON ('' for none),
# 4 TTL s, 5.. the statuses it may end from. Returns 1 if it ended now.
_END_JOB = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 0 end
for i = 5, #ARGV do
  if cur == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'summary', ARGV[3]) end
    for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, tonumber(ARGV[4])) end
    return 1
  end
end
return 0
"""

# Whether a job finished by count has every step's result (1) or not (0): it is
# running and its ok and failed hashes (KEYS[2], KEYS[3]) hold as many as its total.
# The job hash's 'failures' counts the failures stored in this run (a resume clears
# it with them): while it is 0 the failed hash is empty and is not read or written.
_COMPLETE_LUA = """
local function complete(finish_by, status, total, running, failures)
  if finish_by ~= 'count' or status ~= running then return 0 end
  local stored = redis.call('HLEN', KEYS[2])
  if (tonumber(failures) or 0) > 0 then stored = stored + redis.call('HLEN', KEYS[3]) end
  if stored >= tonumber(total) then return 1 end
  return 0
end
"""

# A delivery of a step begins, in one call: what ``JobStore.begin_step`` returns.
# KEYS: JobKeys.all(). ARGV: 1 step, 2 owner, 3 lease s, 4 wall time, 5 queued, 6 running,
# 7 cancelled, 8 now (Redis' clock, genfleet.clock), 9.. the job inputs the step reads.
# Replies, by their first element:
#   'done', result, complete    a success is stored (complete: the job's last step is)
#   'gone'                      no such job
#   'cancelled'
#   'busy', owner, seconds left another live attempt holds the step's claim
#   'go', record, round, tried, took over from, inputs
#                               claimed, which marks it running (tried: an earlier
#                               attempt of this run failed or died holding it, the
#                               owner then), and the inputs asked for (false where
#                               missing)
_BEGIN_STEP = (
    CLAIM_PRELUDE
    + _COMPLETE_LUA
    + """
use_clock(ARGV[8])
local ok = redis.call('HGET', KEYS[2], ARGV[1])
local job = redis.call('HMGET', KEYS[1], 'record', 'status', 'round', 'finish_by', 'total',
  'failures')
if ok then
  return {'done', ok, complete(job[4], job[2], job[5], ARGV[6], job[6]), job[3] or '0'}
end
if not job[1] then return {'gone'} end
if job[2] == ARGV[7] then return {'cancelled'} end
local code, owner, left = take(KEYS[6], ARGV[1], ARGV[2], ARGV[3])
if code == 0 then return {'busy', owner, string.format('%.3f', left)} end
if job[2] == ARGV[5] then
  redis.call('HSET', KEYS[1], 'status', ARGV[6])
  redis.call('HSETNX', KEYS[1], 'started_at', ARGV[4])
end
local took, tried = '', 0
if code == 2 then took, tried = owner, 1 end
if tried == 0 and (tonumber(job[6]) or 0) > 0 and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  tried = 1
end
local inputs = {}
if #ARGV >= 9 then inputs = redis.call('HMGET', KEYS[5], unpack(ARGV, 9)) end
return {'go', job[1], job[3] or '0', tried, took, inputs}
"""
)

# A step's result, in one call; the step's claim is given back with it (it is running
# no more). KEYS: JobKeys.all() (job, ok, failed, running, inputs, claims). ARGV: 1
# step, 2 result JSON, 3 '1' for a success, 4 TTL s, 5 the claim's owner ('': the
# ownerless claim of ``mark_started``), 6 running, 7 the ended statuses, comma-joined
# (a step of a cancelled job finishing late starts its keys' TTL). save_result()
# returns {1 if stored, 1 if this completes a job finished by count, round}.
_SAVE_LUA = (
    GIVE_BACK_LUA
    + _COMPLETE_LUA
    + """
local function save_result()
  local job = redis.call('HMGET', KEYS[1], 'status', 'finish_by', 'total', 'round', 'failures')
  local written, failures = 1, tonumber(job[5]) or 0
  if ARGV[3] == '1' then
    written = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
    if failures > 0 then redis.call('HDEL', KEYS[3], ARGV[1]) end
  elseif redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) == 1 and job[1] then
    failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  end
  give_back(KEYS[6], ARGV[1], ARGV[5])
  local cur = job[1]
  if cur and string.find(',' .. ARGV[7] .. ',', ',' .. cur .. ',', 1, true) then
    for i = 1, 6 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4])) end
    return {written, 0, job[4] or '0'}
  end
  return {written, complete(job[2], cur, job[3], ARGV[6], failures), job[4] or '0'}
end
"""
)
_SAVE_STEP = _SAVE_LUA + "return save_result()\n"


@dataclass(frozen=True)
class Rider:
    """Another script's work that rides along with a step's result, in the same call:
    ``lua`` defines ``ride(k, a)``, which finds its ``keys`` past ``KEYS[k]`` and its
    ``args`` past ``ARGV[a]`` (a successful call's lease release:
    ``workers.limiter``); ``Saved.ridden`` is what it returned."""

    lua: str
    keys: list[str]
    args: list[Any]


# genfleet resume's one decision. KEYS: job hash, claims hash, failed hash (the failures
# it re-runs are forgotten: they are waiting again). ARGV: the statuses a job may be
# resumed from. Returns {1, round}; {0, status} when the job is not one of
# them; {-1, step} while a step still holds a live claim (an attempt is working on it).
_REOPEN = (
    CLAIM_PRELUDE
    + """
use_clock(0)
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {0, ''} end
local ended = false
for i = 1, #ARGV do if cur == ARGV[i] then ended = true end end
if not ended then return {0, cur} end
local claims = redis.call('HGETALL', KEYS[2])
for i = 1, #claims, 2 do
  local _, expiry = parse(claims[i + 1])
  if expiry > now then return {-1, claims[i]} end
end
redis.call('HSET', KEYS[1], 'status', 'running')
redis.call('HDEL', KEYS[1], 'finished_at', 'summary', 'failures')
redis.call('DEL', KEYS[3])
return {1, redis.call('HINCRBY', KEYS[1], 'round', 1)}
"""
)

_ACTIVE = (C.STATUS_QUEUED, C.STATUS_RUNNING)
_ENDED = ",".join(C.TERMINAL_STATUSES)

# A job's token counters: plain fields, and those in its success vector.
_TOKEN_FIELDS = ("tokens_in", "tokens_out", SUCCESS_FIELD)


def _tokens(values: Sequence[Any]) -> tuple[int, int]:
    plain_in, plain_out, success = values
    packed = success_counts(success)
    return (int(float(plain_in or 0) + packed.get("tokens_in", 0)),
            int(float(plain_out or 0) + packed.get("tokens_out", 0)))  # fmt: skip


@dataclass(frozen=True)
class JobKeys:
    """The Redis keys of one job."""

    job: str
    ok: str
    failed: str
    running: str  # written by older versions only (see the module's docstring)
    inputs: str
    claims: str

    @classmethod
    def of(cls, job_id: str) -> JobKeys:
        return cls(
            job=C.KEY_JOB.format(job_id=job_id),
            ok=C.KEY_JOB_OK.format(job_id=job_id),
            failed=C.KEY_JOB_FAILED.format(job_id=job_id),
            running=C.KEY_JOB_RUNNING.format(job_id=job_id),
            inputs=C.KEY_JOB_INPUTS.format(job_id=job_id),
            claims=C.KEY_JOB_CLAIMS.format(job_id=job_id),
        )

    def all(self) -> tuple[str, ...]:
        return (self.job, self.ok, self.failed, self.running, self.inputs, self.claims)


@dataclass(frozen=True)
class Progress:
    """A job's counts, read cheaply (no step results parsed)."""

    status: str
    total: int
    ok: int
    failed: int
    running: int

    @property
    def done(self) -> int:
        return self.ok + self.failed


@dataclass(frozen=True)
class JobOverview:
    """One row of a job list: the record, counts, times and the finished summary."""

    record: JobRecord
    progress: Progress
    started_at: float | None
    finished_at: float | None
    summary: dict[str, Any]  # "metrics" and "error" once the job has ended; else empty
    tokens: tuple[int, int]  # (in, out) counted so far by the gateway


@dataclass(frozen=True)
class StepStart:
    """What ``JobStore.begin_step`` found; ``record`` is set when the step may run
    (neither it, ``existing`` nor ``busy_owner``: the job was cancelled)."""

    existing: StepResult | None = None  # a success is stored already
    complete: bool = False  # ... and the job (finished by count) has all its results
    busy_owner: str = ""  # another live attempt holds the step's claim ...
    busy_left_s: float = 0.0  # ... this much longer
    record: JobRecord | None = None
    round: int = 0  # resumes so far (task ids end in .r{round})
    tried: bool = False  # an earlier attempt in this run failed, or died holding the step
    took_over_from: str = ""  # the attempt that died holding it
    inputs: dict[str, str | None] = field(default_factory=dict)  # read with the start


class Saved(NamedTuple):
    """What ``JobStore.save_step`` did."""

    stored: bool
    complete: bool
    round: int
    ridden: Any = None  # what a rider's ride() returned


def _missing(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job {job_id!r} in Redis (unknown id, or expired)")


class JobStore:
    """Job records and step results of one Redis database."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self._set_status_if = LeanScript(client, _SET_STATUS_IF)
        self._save_step = LeanScript(client, _SAVE_STEP)
        self._with_riders: dict[str, LeanScript] = {}
        self._begin_step = LeanScript(client, _BEGIN_STEP)
        self._end_job = LeanScript(client, _END_JOB)
        self.claims = StepClaims(client, ttl_s)  # the steps' claims (genfleet.claims)
        self._reopen = LeanScript(client, _REOPEN)

    def _persist(self, pipe: Any, job_id: str) -> None:
        """No TTL while the job is queued or running."""
        for key in JobKeys.of(job_id).all():
            pipe.persist(key)

    def create(
        self, record: JobRecord, inputs: Mapping[str, str] | None = None, *,
        finish_by_count: bool = False,
    ) -> None:  # fmt: skip
        """Write a new job with status ``queued``; big inputs go to their own hash.

        The step list is kept apart from the record, so a step reading its job's spec
        does not parse every step id of a 10,000-step job. ``finish_by_count``: no
        Celery chord ends the job; the step whose result completes it sends finalize
        (``save_step`` says which one).
        """
        keys = JobKeys.of(record.id)
        with self.r.pipeline() as pipe:
            pipe.hset(
                keys.job,
                mapping={
                    "record": record.model_dump_json(exclude={"step_ids"}),
                    "steps": json.dumps(record.step_ids),
                    "total": len(record.step_ids),
                    "status": C.STATUS_QUEUED,
                    **({"finish_by": "count"} if finish_by_count else {}),
                },
            )
            if inputs:
                pipe.hset(keys.inputs, mapping={str(k): str(v) for k, v in inputs.items()})
            pipe.zadd(C.KEY_JOB_INDEX, {record.id: record.created_at})
            pipe.execute()

    def delete(self, job_id: str) -> None:
        """Remove every trace of a job (used when its enqueue failed half-way)."""
        with self.r.pipeline() as pipe:
            pipe.delete(*JobKeys.of(job_id).all())
            pipe.zrem(C.KEY_JOB_INDEX, job_id)
            pipe.execute()

    def input(self, job_id: str, name: str) -> str | None:
        """One of the job's stored inputs (a persona, a day's plan, an image)."""
        value = self.r.hget(JobKeys.of(job_id).inputs, name)
        return None if value is None else str(value)

    def inputs(self, job_id: str, names: list[str]) -> list[str | None]:
        """Several of the job's stored inputs in one round trip (None where missing)."""
        values = self.r.hmget(JobKeys.of(job_id).inputs, names)
        return [None if v is None else str(v) for v in values]

    def record(self, job_id: str) -> JobRecord:
        """The job's record *without* its step list (see ``step_ids``)."""
        raw = self.r.hget(JobKeys.of(job_id).job, "record")
        if raw is None:
            raise _missing(job_id)
        return JobRecord.model_validate_json(raw)

    def step_ids(self, job_id: str) -> list[str]:
        raw = self.r.hget(JobKeys.of(job_id).job, "steps")
        if raw is None:
            raise _missing(job_id)
        return list(json.loads(raw))

    def status(self, job_id: str) -> str:
        status = self.r.hget(JobKeys.of(job_id).job, "status")
        if status is None:
            raise _missing(job_id)
        return str(status)

    def statuses(self, job_ids: list[str]) -> list[str | None]:
        """The status of each job in one round trip (None for a job that is gone)."""
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(JobKeys.of(job_id).job, "status")
            return [None if s is None else str(s) for s in pipe.execute()]

    def progress(self, job_id: str) -> Progress:
        """Status and counts in one round trip, for progress bars on big jobs."""
        keys = JobKeys.of(job_id)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.job, ["status", "total"])
            pipe.hlen(keys.ok)
            pipe.hlen(keys.failed)
            pipe.hlen(keys.claims)
            (status, total), ok, failed, running = pipe.execute()
        if status is None:
            raise _missing(job_id)
        return Progress(str(status), int(total or 0), ok, failed, running)

    def step_ok(self, job_id: str, step_id: str) -> StepResult | None:
        """The stored successful result of a step, if there is one."""
        raw = self.r.hget(JobKeys.of(job_id).ok, step_id)
        return StepResult.model_validate_json(raw) if raw else None

    def begin_step(
        self, job_id: str, step_id: str, owner: str, lease_s: float, inputs: Sequence[str] = ()
    ) -> StepStart:
        """A delivery of a step begins, in one script call: its stored success (then
        nothing changes), the job cancelled, another live attempt's claim, or else the
        step claimed for ``owner`` (``genfleet.claims``), which marks it running, with
        the job's record and the job ``inputs`` asked for."""
        keys = JobKeys.of(job_id)
        reply = self._begin_step(
            keys=list(keys.all()),
            args=[step_id, owner, lease_s, time.time(), C.STATUS_QUEUED, C.STATUS_RUNNING,
                  C.STATUS_CANCELLED, self.claims.clock.now(), *inputs],
        )  # fmt: skip
        what = str(reply[0])
        if what == "gone":
            raise _missing(job_id)
        if what == "cancelled":
            return StepStart()  # no record: the step is skipped
        if what == "done":
            existing = StepResult.model_validate_json(reply[1])
            return StepStart(existing=existing, complete=bool(int(reply[2])), round=int(reply[3]))
        if what == "busy":
            return StepStart(busy_owner=str(reply[1]), busy_left_s=float(reply[2]))
        record = JobRecord.model_validate_json(reply[1])
        values = {n: (None if v is None else str(v)) for n, v in zip(inputs, reply[5], strict=True)}
        return StepStart(record=record, round=int(reply[2]), tried=bool(int(reply[3])),
                         took_over_from=str(reply[4]), inputs=values)  # fmt: skip

    def mark_started(self, job_id: str, step_id: str) -> None:
        """Record that a step began, outside a claim; the job becomes ``running``. The
        step shows as running until ``save_step`` stores its result (no owner), but
        holds nothing: an attempt or a resume is never kept out by it."""
        keys = JobKeys.of(job_id)
        now = time.time()
        with self.r.pipeline() as pipe:
            pipe.hset(keys.claims, step_id, ownerless_claim(now))
            pipe.hsetnx(keys.job, "started_at", now)
            pipe.execute()
        self._set_status_if(keys=[keys.job], args=[C.STATUS_RUNNING, C.STATUS_QUEUED])

    def save_step(
        self, job_id: str, result: StepResult, owner: str = "", rider: Rider | None = None
    ) -> Saved:
        """Store a step's result, and give back ``owner``'s claim on the step. A success
        is kept only if none was stored before, and it replaces the step's earlier
        failure (a resumed step). A ``rider``'s work is done in the same call.

        ``stored`` is true if this call's result is the one stored; ``complete`` if it
        was the last result a job finished by count waited for (send its finalize).
        """
        keys = list(JobKeys.of(job_id).all())
        args: list[Any] = [result.step_id, result.model_dump_json(), int(result.ok),
                           self.ttl_s, owner, C.STATUS_RUNNING, _ENDED]  # fmt: skip
        if rider is None:
            reply = self._save_step(keys=keys, args=args)
        else:
            reply = self._riding(rider)(keys=keys + rider.keys, args=args + rider.args)
        written, complete, round_ = reply[:3]
        stored = bool(int(written)) if result.ok else True
        return Saved(stored, bool(int(complete)), int(round_), reply[3] if rider else None)

    def _riding(self, rider: Rider) -> LeanScript:
        """The save script with ``rider``'s Lua (one per kind of rider)."""
        script = self._with_riders.get(rider.lua)
        if script is None:
            ride = "local saved = save_result()\nsaved[4] = ride(6, 7)\nreturn saved\n"
            script = LeanScript(self.r, _SAVE_LUA + rider.lua + ride)
            self._with_riders[rider.lua] = script
        return script

    def finish(self, job_id: str, status: str, metrics: JobMetrics, error: str | None) -> bool:
        """Set a final status with its summary (one call), unless the job already
        ended (e.g. was cancelled)."""
        summary = json.dumps({"metrics": metrics.model_dump(), "error": error}, ensure_ascii=False)
        return self._end(job_id, status, summary)

    def cancel(self, job_id: str) -> bool:
        """Mark a queued or running job cancelled; False if it had already ended."""
        self.status(job_id)
        return self._end(job_id, C.STATUS_CANCELLED, "")

    def _end(self, job_id: str, status: str, summary: str) -> bool:
        keys = list(JobKeys.of(job_id).all())
        args: list[str | float] = [status, time.time(), summary, self.ttl_s, *_ACTIVE]
        return bool(int(self._end_job(keys=keys, args=args)))

    def reopen(self, job_id: str) -> int:
        """Make an ended job ``running`` again, for ``genfleet resume``; returns the new
        round (the number of resumes so far).

        One script decides, so of two resumes at once only one gets through; a job
        with a step still being worked on (a cancelled job's running step) is refused.
        """
        keys = JobKeys.of(job_id)
        code, value = self._reopen(keys=[keys.job, keys.claims, keys.failed],
                                   args=list(C.TERMINAL_STATUSES))
        if int(code) == -1:
            raise JobBusyError(
                f"job {job_id}: step {value} is still being worked on; resume once it ends"
            )
        if int(code) != 1:
            if not value:
                raise _missing(job_id)
            raise JobBusyError(f"job {job_id} is {value}: resume a job once it has ended")
        with self.r.pipeline() as pipe:
            self._persist(pipe, job_id)
            pipe.execute()
        return int(value)

    def round(self, job_id: str) -> int:
        """How many times the job was resumed (its task ids end in ``.r{round}``)."""
        return int(self.r.hget(JobKeys.of(job_id).job, "round") or 0)

    def load(self, job_id: str) -> JobView:
        """Everything about a job in one round trip."""
        keys = JobKeys.of(job_id)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.job)
            pipe.hgetall(keys.ok)
            pipe.hgetall(keys.failed)
            pipe.hgetall(keys.claims)
            job, ok, failed, claims = pipe.execute()
        if not job or "record" not in job:
            raise _missing(job_id)
        summary = json.loads(job["summary"]) if job.get("summary") else {}
        record = JobRecord.model_validate_json(job["record"])
        record.step_ids = list(json.loads(job.get("steps", "[]")))
        return JobView(
            record=record,
            status=job.get("status", C.STATUS_QUEUED),
            started_at=float(job["started_at"]) if "started_at" in job else None,
            finished_at=float(job["finished_at"]) if "finished_at" in job else None,
            ok={k: StepResult.model_validate_json(v) for k, v in ok.items()},
            failed={k: StepResult.model_validate_json(v) for k, v in failed.items()},
            running=self._running(keys, claims),
            metrics=JobMetrics(**summary["metrics"]) if summary.get("metrics") else None,
            error=summary.get("error"),
        )

    def _running(self, keys: JobKeys, claims: dict[str, str]) -> dict[str, float]:
        """Step -> when its attempt began, from the claims; those of an older genfleet
        ("owner expiry") from the running hash it kept (now: if it is gone too)."""
        running: dict[str, float] = {}
        older: list[str] = []
        for step, value in claims.items():
            started = claim_started(value)
            if started is None:
                older.append(step)
            else:
                running[step] = started
        if older:
            kept = self.r.hmget(keys.running, older)
            now = time.time()
            running.update({s: float(v or now) for s, v in zip(older, kept, strict=True)})
        return running

    def recent(self, limit: int = 20) -> list[str]:
        """Ids of the newest jobs still stored, newest first."""
        ids = [str(i) for i in self.r.zrevrange(C.KEY_JOB_INDEX, 0, limit * 2)]
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(JobKeys.of(job_id).job)
            alive = pipe.execute()
        gone = [i for i, a in zip(ids, alive, strict=True) if not a]
        if gone:
            self.r.zrem(C.KEY_JOB_INDEX, *gone)
        return [i for i, a in zip(ids, alive, strict=True) if a][:limit]

    def overviews(self, job_ids: list[str]) -> list[JobOverview]:
        """List rows of these jobs in one round trip (no step result is parsed);
        jobs that have expired meanwhile are left out."""
        fields = ["record", "status", "total", "started_at", "finished_at", "summary"]
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                keys = JobKeys.of(job_id)
                pipe.hmget(keys.job, fields)
                pipe.hlen(keys.ok)
                pipe.hlen(keys.failed)
                pipe.hlen(keys.claims)
                pipe.hmget(C.KEY_STATS_JOB.format(job_id=job_id), list(_TOKEN_FIELDS))
            replies = pipe.execute()
        rows = []
        for n in range(len(job_ids)):
            (record, status, total, started, finished, summary), ok, failed, running, tokens = (
                replies[n * 5 : n * 5 + 5]
            )
            if record is None:
                continue
            rows.append(
                JobOverview(
                    record=JobRecord.model_validate_json(record),
                    progress=Progress(str(status), int(total or 0), ok, failed, running),
                    started_at=float(started) if started else None,
                    finished_at=float(finished) if finished else None,
                    summary=json.loads(summary) if summary else {},
                    tokens=_tokens(tokens),
                )
            )
        return rows
