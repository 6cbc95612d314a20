"""Reading and writing job records and step results in Redis (keys: ``constants``).

A step's successful result is written once (HSETNX): a step delivered again after a
lost worker finds it and does not call the model again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from genfleet import constants as C
from genfleet.errors import JobNotFoundError
from genfleet.records import JobMetrics, JobRecord, JobView, StepResult

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

_ACTIVE = (C.STATUS_QUEUED, C.STATUS_RUNNING)


def _keys(job_id: str) -> tuple[str, str, str, str]:
    return (
        C.KEY_JOB.format(job_id=job_id),
        C.KEY_JOB_OK.format(job_id=job_id),
        C.KEY_JOB_FAILED.format(job_id=job_id),
        C.KEY_JOB_RUNNING.format(job_id=job_id),
    )


class JobStore:
    """Job records and step results of one Redis database."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self._set_status_if = client.register_script(_SET_STATUS_IF)

    def _touch(self, pipe: Any, job_id: str) -> None:
        for key in _keys(job_id):
            pipe.expire(key, self.ttl_s)

    def create(self, record: JobRecord) -> None:
        """Write a new job's record with status ``queued``."""
        job_key = _keys(record.id)[0]
        with self.r.pipeline() as pipe:
            pipe.hset(
                job_key, mapping={"record": record.model_dump_json(), "status": C.STATUS_QUEUED}
            )
            pipe.expire(job_key, self.ttl_s)
            pipe.zadd(C.KEY_JOB_INDEX, {record.id: record.created_at})
            pipe.execute()

    def delete(self, job_id: str) -> None:
        """Remove every trace of a job (used when its enqueue failed half-way)."""
        with self.r.pipeline() as pipe:
            pipe.delete(*_keys(job_id))
            pipe.zrem(C.KEY_JOB_INDEX, job_id)
            pipe.execute()

    def record(self, job_id: str) -> JobRecord:
        raw = self.r.hget(_keys(job_id)[0], "record")
        if raw is None:
            raise JobNotFoundError(f"no job {job_id!r} in Redis (unknown id, or expired)")
        return JobRecord.model_validate_json(raw)

    def status(self, job_id: str) -> str:
        status = self.r.hget(_keys(job_id)[0], "status")
        if status is None:
            raise JobNotFoundError(f"no job {job_id!r} in Redis (unknown id, or expired)")
        return str(status)

    def step_ok(self, job_id: str, step_id: str) -> StepResult | None:
        """The stored successful result of a step, if there is one."""
        raw = self.r.hget(_keys(job_id)[1], step_id)
        return StepResult.model_validate_json(raw) if raw else None

    def mark_started(self, job_id: str, step_id: str) -> None:
        """Record that a step began; the job becomes ``running``."""
        job_key, _, _, running_key = _keys(job_id)
        now = time.time()
        with self.r.pipeline() as pipe:
            pipe.hset(running_key, step_id, now)
            pipe.hsetnx(job_key, "started_at", now)
            self._touch(pipe, job_id)
            pipe.execute()
        self._set_status_if(keys=[job_key], args=[C.STATUS_RUNNING, C.STATUS_QUEUED])

    def save_step(self, job_id: str, result: StepResult) -> bool:
        """Store a step's result. A success is kept only if none was stored before.

        Returns True if this call's result is the one stored.
        """
        _, ok_key, failed_key, running_key = _keys(job_id)
        payload = result.model_dump_json()
        with self.r.pipeline() as pipe:
            if result.ok:
                pipe.hsetnx(ok_key, result.step_id, payload)
            else:
                pipe.hset(failed_key, result.step_id, payload)
            pipe.hdel(running_key, result.step_id)
            self._touch(pipe, job_id)
            written = pipe.execute()[0]
        return bool(written) if result.ok else True

    def finish(self, job_id: str, status: str, metrics: JobMetrics, error: str | None) -> bool:
        """Set a final status, unless the job already ended (e.g. was cancelled)."""
        job_key = _keys(job_id)[0]
        changed = bool(self._set_status_if(keys=[job_key], args=[status, *_ACTIVE]))
        if changed:
            summary = {"metrics": metrics.model_dump(), "error": error}
            with self.r.pipeline() as pipe:
                pipe.hset(
                    job_key,
                    mapping={
                        "finished_at": time.time(),
                        "summary": json.dumps(summary, ensure_ascii=False),
                    },
                )
                self._touch(pipe, job_id)
                pipe.execute()
        return changed

    def cancel(self, job_id: str) -> bool:
        """Mark a queued or running job cancelled; False if it had already ended."""
        self.status(job_id)
        job_key = _keys(job_id)[0]
        changed = bool(self._set_status_if(keys=[job_key], args=[C.STATUS_CANCELLED, *_ACTIVE]))
        if changed:
            self.r.hset(job_key, "finished_at", time.time())
        return changed

    def load(self, job_id: str) -> JobView:
        """Everything about a job in one round trip."""
        job_key, ok_key, failed_key, running_key = _keys(job_id)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(job_key)
            pipe.hgetall(ok_key)
            pipe.hgetall(failed_key)
            pipe.hgetall(running_key)
            job, ok, failed, running = pipe.execute()
        if not job or "record" not in job:
            raise JobNotFoundError(f"no job {job_id!r} in Redis (unknown id, or expired)")
        summary = json.loads(job["summary"]) if job.get("summary") else {}
        return JobView(
            record=JobRecord.model_validate_json(job["record"]),
            status=job.get("status", C.STATUS_QUEUED),
            started_at=float(job["started_at"]) if "started_at" in job else None,
            finished_at=float(job["finished_at"]) if "finished_at" in job else None,
            ok={k: StepResult.model_validate_json(v) for k, v in ok.items()},
            failed={k: StepResult.model_validate_json(v) for k, v in failed.items()},
            running={k: float(v) for k, v in running.items()},
            metrics=JobMetrics(**summary["metrics"]) if summary.get("metrics") else None,
            error=summary.get("error"),
        )

    def recent(self, limit: int = 20) -> list[str]:
        """Ids of the newest jobs still stored, newest first."""
        ids = [str(i) for i in self.r.zrevrange(C.KEY_JOB_INDEX, 0, limit * 2)]
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(_keys(job_id)[0])
            alive = pipe.execute()
        gone = [i for i, a in zip(ids, alive, strict=True) if not a]
        if gone:
            self.r.zrem(C.KEY_JOB_INDEX, *gone)
        return [i for i, a in zip(ids, alive, strict=True) if a][:limit]
