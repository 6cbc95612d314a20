"""Batch mode, the poller's side: submit queued requests, follow batches, route answers.

One poll cycle (``BatchPoller.cycle``, run by the ``batch_poll`` task every
``LLM_BATCH_POLL_S`` while there is batch work, one at a time in the cluster):

1. *flush*: queued requests are gathered by job, key and model into input files of at
   most ``LLM_BATCH_MAX_REQUESTS`` lines and ``LLM_BATCH_MAX_BYTES`` bytes, uploaded
   (``POST /v1/files``, purpose ``batch``) and submitted (``POST /v1/batches``,
   ``completion_window`` = ``LLM_BATCH_COMPLETION_WINDOW``). A request is moved from
   the queue into exactly one live batch.
2. *poll*: every live batch is read back; a finished one has its output and error
   files routed line by line to their requests, each answer written once (a line seen
   again is ignored, so nothing is counted or billed twice). Requests a batch left
   unanswered (expired, cancelled, failed) are queued once more, then failed.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import openai
import redis

from genfleet import constants as C
from genfleet.prices import PriceTable
from genfleet.settings import Settings
from genfleet.store import JobStore
from workers.budget import Budgets, day_key
from workers.callstats import CallStats, Cost
from workers.keypool import ApiKey, KeyPool

logger = logging.getLogger(__name__)

ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
FINAL = frozenset({"completed", "expired", "cancelled", "failed"})
LOCK_S = 300  # a cycle holds the lock at most this long (a killed poller frees it)


class BatchPoller:
    """One cycle of batch work; needs the worker's key pool (the keys stay here)."""

    def __init__(
        self, client: redis.Redis, settings: Settings, pool: KeyPool, prices: PriceTable,
        stats: CallStats, budgets: Budgets,
    ) -> None:  # fmt: skip
        self.redis = client
        self.settings = settings
        self.jobs = JobStore(client, settings.result_ttl_s)
        self.pool = pool
        self.prices = prices
        self.stats = stats
        self.budgets = budgets

    def cycle(self) -> bool:
        """Flush and poll once; returns whether batch work is left."""
        with self._lock() as held:
            if held:
                self.flush()
                for batch_id in sorted(self.redis.smembers(C.KEY_BATCH_LIVE)):
                    self.poll(str(batch_id))
        return bool(self.redis.zcard(C.KEY_BATCH_PENDING) or self.redis.scard(C.KEY_BATCH_LIVE))

    @contextmanager
    def _lock(self) -> Iterator[bool]:
        token = f"{time.time():.6f}"
        held = bool(self.redis.set(C.KEY_BATCH_LOCK, token, nx=True, ex=LOCK_S))
        try:
            yield held
        finally:
            if held and self.redis.get(C.KEY_BATCH_LOCK) == token:
                self.redis.delete(C.KEY_BATCH_LOCK)

    # --- flush ---------------------------------------------------------------------

    def flush(self) -> None:
        """Submit every queued request, in batches by job, key and model."""
        rids = [str(r) for r in self.redis.zrange(C.KEY_BATCH_PENDING, 0, -1)]
        groups: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)
        with self.redis.pipeline(transaction=False) as pipe:
            for rid in rids:
                pipe.hmget(C.KEY_BATCH_REQ.format(rid=rid), ["job_id", "key_id", "model", "body"])
            rows = pipe.execute()
        for rid, (job_id, key_id, model, body) in zip(rids, rows, strict=True):
            if body is None:  # expired meanwhile
                self.redis.zrem(C.KEY_BATCH_PENDING, rid)
                continue
            groups[(job_id, key_id, model)].append((rid, body))
        for (job_id, key_id, model), requests in groups.items():
            if self._job_status(job_id) == C.STATUS_CANCELLED:
                self._fail_all([rid for rid, _ in requests], "the job was cancelled")
                continue
            for chunk in self._chunks(requests):
                self._submit(job_id, key_id, model, chunk)

    def _chunks(self, requests: list[tuple[str, str]]) -> Iterator[list[tuple[str, str, bytes]]]:
        max_n, max_bytes = self.settings.llm_batch_max_requests, self.settings.llm_batch_max_bytes
        chunk: list[tuple[str, str, bytes]] = []
        size = 0
        for rid, body in requests:
            entry = {"custom_id": rid, "method": "POST", "url": ENDPOINT, "body": json.loads(body)}
            line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
            if chunk and (len(chunk) >= max_n or size + len(line) > max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append((rid, body, line))
            size += len(line)
        if chunk:
            yield chunk

    def _submit(self, job_id: str, key_id: str, model: str,
                chunk: list[tuple[str, str, bytes]]) -> None:  # fmt: skip
        key = self._key(key_id)
        client = self.pool.client_for(key)
        data = b"".join(line for _, _, line in chunk)
        try:
            upload = client.files.create(file=(f"{job_id}.jsonl", data), purpose="batch")
            batch = client.batches.create(
                input_file_id=upload.id, endpoint=ENDPOINT,
                completion_window=self.settings.llm_batch_completion_window,  # type: ignore[arg-type]
                metadata={"genfleet_job": job_id},
            )  # fmt: skip
        except openai.OpenAIError as e:
            logger.warning("job %s: could not submit a batch of %d requests (%s); next cycle",
                           job_id, len(chunk), e)  # fmt: skip
            return
        rids = [rid for rid, _, _ in chunk]
        with self.redis.pipeline() as pipe:
            pipe.hset(C.KEY_BATCH.format(batch_id=batch.id), mapping={
                "job_id": job_id, "key_id": key_id, "model": model, "rids": json.dumps(rids),
                "status": batch.status, "created_at": f"{time.time():.3f}",
            })  # fmt: skip
            pipe.expire(C.KEY_BATCH.format(batch_id=batch.id), self.settings.result_ttl_s)
            pipe.sadd(C.KEY_BATCH_LIVE, batch.id)
            for rid in rids:
                pipe.hset(C.KEY_BATCH_REQ.format(rid=rid),
                          mapping={"state": "submitted", "batch_id": batch.id})  # fmt: skip
            pipe.zrem(C.KEY_BATCH_PENDING, *rids)
            pipe.execute()
        self._show(job_id, batch.id, batch.status, {"total": len(rids), "completed": 0,
                                                    "failed": 0})  # fmt: skip
        logger.info("job %s: batch %s submitted with %d requests (key %s, model %s)",
                    job_id, batch.id, len(rids), key_id, model)  # fmt: skip

    # --- poll ----------------------------------------------------------------------

    def poll(self, batch_id: str) -> None:
        """Read a live batch back; collect it when it has finished."""
        meta = self._hash(C.KEY_BATCH.format(batch_id=batch_id))
        if not meta:
            self.redis.srem(C.KEY_BATCH_LIVE, batch_id)
            return
        key = self._key(meta["key_id"])
        client = self.pool.client_for(key)
        try:
            batch = client.batches.retrieve(batch_id)
        except openai.OpenAIError as e:
            logger.warning("batch %s: could not read it (%s); next cycle", batch_id, e)
            return
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        self._show(meta["job_id"], batch_id, batch.status, counts)
        if batch.status not in FINAL:
            return
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for line in client.files.content(file_id).text.splitlines():
                    if line.strip():
                        self.route(line, key, meta)
        self._left_over(batch_id, batch.status, meta)
        self.redis.srem(C.KEY_BATCH_LIVE, batch_id)
        logger.info("job %s: batch %s %s (%s)", meta["job_id"], batch_id, batch.status, counts)

    def route(self, text: str, key: ApiKey, meta: dict[str, str]) -> None:
        """Store one output or error line as its request's answer, once."""
        try:
            line = json.loads(text)
            rid = str(line["custom_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("batch of job %s: an unreadable line was skipped", meta["job_id"])
            return
        req_key = C.KEY_BATCH_REQ.format(rid=rid)
        req = self.redis.hmget(req_key, ["job_id", "batch_id", "queued_at", "model"])
        if req[0] != meta["job_id"] or not self.redis.hsetnx(req_key, "routed", "1"):
            return  # not ours, or routed before: nothing is counted twice
        response = line.get("response") or {}
        body = response.get("body") or {}
        if response.get("status_code") == 200 and body.get("choices"):
            model, queued = str(req[3] or meta["model"]), str(req[2] or time.time())
            self._store_answer(req_key, rid, body, key, model, queued)
        else:
            self._store_error(req_key, rid, _line_error(line, response, body), key, meta)

    def _store_answer(self, req_key: str, rid: str, body: dict[str, Any], key: ApiKey,
                      model: str, queued_at: str | None) -> None:  # fmt: skip
        usage = body.get("usage") or {}
        tokens_in, tokens_out = (
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )
        answered = body.get("model") or model
        price = self.prices.price(answered, key.provider) or self.prices.price(model, key.provider)
        cost = price.cost(tokens_in, tokens_out, batch=True) if price else None
        choice = body["choices"][0]
        result = {
            "text": (choice.get("message") or {}).get("content") or "", "model": answered,
            "tokens_in": tokens_in, "tokens_out": tokens_out,
            "finish_reason": choice.get("finish_reason") or "", "attempts": 1,
            "seconds": round(time.time() - float(queued_at or time.time()), 3),
            "key_id": key.key_id, "cost_usd": cost,
        }  # fmt: skip
        self.redis.hset(req_key, mapping={"answer": json.dumps(result, ensure_ascii=False),
                                          "state": "done"})  # fmt: skip
        job_id = str(self.redis.hget(req_key, "job_id"))
        self.stats.add(job_id, key.key_id, calls=1, ok=1, tokens_in=tokens_in,
                       tokens_out=tokens_out, model=model, cost=Cost(model, cost))  # fmt: skip
        self._settle(req_key, rid, job_id, cost or 0.0)

    def _store_error(self, req_key: str, rid: str, error: str, key: ApiKey,
                     meta: dict[str, str]) -> None:  # fmt: skip
        self.redis.hset(req_key, mapping={"error": error, "state": "done"})
        self.stats.add(meta["job_id"], key.key_id, calls=1, failed=1)
        self._settle(req_key, rid, meta["job_id"], 0.0)

    def _settle(self, req_key: str, rid: str, job_id: str, cost: float) -> None:
        day, budget = self.redis.hmget(req_key, ["day", "budget"])
        if budget:
            self.budgets.settle(rid, job_id, str(day or day_key()), cost)

    def _left_over(self, batch_id: str, status: str, meta: dict[str, str]) -> None:
        """Requests the batch did not answer: queued once more, or failed."""
        rids = json.loads(meta.get("rids") or "[]")
        cancelled = self._job_status(meta["job_id"]) == C.STATUS_CANCELLED
        for rid in rids:
            req_key = C.KEY_BATCH_REQ.format(rid=rid)
            state, again, current = self.redis.hmget(req_key, ["state", "resubmitted", "batch_id"])
            if state == "done" or current != batch_id:
                continue
            if cancelled:
                self._fail_all([rid], "the job was cancelled")
            elif not again and status != "completed":
                self.redis.hset(req_key, mapping={"state": "pending", "resubmitted": "1"})
                self.redis.zadd(C.KEY_BATCH_PENDING, {rid: time.time()})
            else:
                why = "no answer in its output" if status == "completed" else f"{status} twice"
                self._fail_all([rid], f"batch {batch_id}: {why}")
        if not cancelled and status != "completed":
            logger.warning("job %s: batch %s %s; its unanswered requests are re-submitted once",
                           meta["job_id"], batch_id, status)  # fmt: skip

    def _fail_all(self, rids: list[str], error: str) -> None:
        for rid in rids:
            req_key = C.KEY_BATCH_REQ.format(rid=rid)
            if self.redis.hsetnx(req_key, "routed", "1"):
                self.redis.hset(req_key, mapping={"error": error, "state": "done"})
                job_id = str(self.redis.hget(req_key, "job_id"))
                self._settle(req_key, rid, job_id, 0.0)
            self.redis.zrem(C.KEY_BATCH_PENDING, rid)

    # --- cancel --------------------------------------------------------------------

    def cancel_job(self, job_id: str) -> int:
        """Cancel a job's live batches at the provider; returns how many."""
        cancelled = 0
        for found in self.redis.hkeys(C.KEY_JOB_BATCHES.format(job_id=job_id)):
            batch_id = str(found)
            meta = self._hash(C.KEY_BATCH.format(batch_id=batch_id))
            if not meta or not self.redis.sismember(C.KEY_BATCH_LIVE, batch_id):
                continue
            try:
                self.pool.client_for(self._key(str(meta["key_id"]))).batches.cancel(batch_id)
                cancelled += 1
            except openai.OpenAIError as e:
                logger.warning("job %s: could not cancel batch %s (%s)", job_id, batch_id, e)
        return cancelled

    # --- helpers -------------------------------------------------------------------

    def _hash(self, key: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.redis.hgetall(key).items()}

    def _key(self, key_id: str) -> ApiKey:
        for key in self.pool.keys:
            if key.key_id == key_id:
                return key
        return self.pool.keys[0]

    def _job_status(self, job_id: str) -> str | None:
        return self.jobs.statuses([job_id])[0]

    def _show(self, job_id: str, batch_id: str, status: str, counts: dict[str, Any]) -> None:
        """What ``genfleet status`` shows of a batch."""
        key = C.KEY_JOB_BATCHES.format(job_id=job_id)
        self.redis.hset(key, batch_id, json.dumps({"status": status, "counts": counts}))
        self.redis.expire(key, self.settings.result_ttl_s)


def _line_error(line: dict[str, Any], response: dict[str, Any], body: dict[str, Any]) -> str:
    """A failed line's error as one text: status and the provider's message."""
    error = line.get("error") or body.get("error") or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    status = response.get("status_code")
    return f"the batch answered HTTP {status}: {message or 'no message'}"
