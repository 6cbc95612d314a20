"""Batch mode, the step's side: a call becomes a request of the provider's Batch API.

In a job with ``mode="batch"`` the gateway hands each call to ``BatchCalls.chat``.
A call is identified by its job, step and request (``request_id``), so a step that
runs again asks for the same requests. The first time, the request is queued
(``genfleet:batch:pending``), its worst-case batch cost is reserved against the
budgets, and the step re-schedules itself (``RetryLater``) to look again after
``LLM_BATCH_POLL_S``. The poller (``workers.batch_poller``) gathers queued requests
into batch files, submits them and routes every answer back to its request, once.
When the step runs again its calls are answered from there (at the batch price); a
step whose answer leads to another call (a re-ask, the next persona stage) queues
that one for the next round.

Keys (``genfleet.constants``): ``genfleet:batch:req:{rid}`` is a hash of ``job_id``,
``step``, ``key_id``, ``provider``, ``model``, ``body`` (the request JSON), ``day``,
``state`` (pending, submitted, done), ``batch_id``, ``resubmitted``, then ``answer``
(a ``ChatResult`` as JSON) or ``error``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time

import redis

from genfleet import constants as C
from genfleet.errors import PermanentLLMError
from genfleet.prices import PriceTable
from genfleet.scripts import LeanScript
from genfleet.settings import Settings
from genfleet.store import JobStore
from genfleet.tokens import estimate_messages_tokens
from workers.budget import Budgets, make_ask
from workers.gateway_types import CallContext, ChatRequest, ChatResult, RetryLater
from workers.keypool import KeyPool

logger = logging.getLogger(__name__)

RECHECK_MAX_POLLS = 10  # a waiting step looks again at least every 10 polls

# Queue a request once: KEYS 1 request hash, 2 pending set; ARGV 1 rid, 2 now,
# 3.. field/value pairs. Returns 1 when queued now, 0 when it was already known.
_QUEUE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""



def request_id(job_id: str, step: str, request: ChatRequest, round_: int = 0) -> str:
    """A request's id (the batch line's ``custom_id``): stable across deliveries."""
    shape = json.dumps([job_id, step, round_, dataclasses.asdict(request)], sort_keys=True,
                       ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(shape.encode()).hexdigest()[:32]


def batch_lifetime_s(settings: Settings) -> float:
    """How long a request's budget reservation may live: the window, twice (a re-submit)."""
    hours = int(settings.llm_batch_completion_window.rstrip("h"))
    return 2 * hours * 3600 + 3600


class BatchCalls:
    """Answers a batch-mode call from the routed answers, or queues it."""

    def __init__(
        self, client: redis.Redis, settings: Settings, pool: KeyPool, prices: PriceTable,
        budgets: Budgets,
    ) -> None:  # fmt: skip
        self.redis = client
        self.settings = settings
        self.pool = pool
        self.prices = prices
        self.budgets = budgets
        self._queue = LeanScript(client, _QUEUE_LUA)
        self.jobs = JobStore(client, settings.result_ttl_s)

    def chat(self, request: ChatRequest, ctx: CallContext) -> ChatResult:
        """The routed answer; raises ``RetryLater`` while it is awaited, or the line's error."""
        # The job's round (resumes so far) is part of the id: a resumed step asks anew
        # instead of finding its failed answer.
        rid = request_id(ctx.job_id, ctx.step, request, self.jobs.round(ctx.job_id))
        raw = self.redis.hgetall(C.KEY_BATCH_REQ.format(rid=rid))
        state = {str(k): str(v) for k, v in raw.items()}
        if state.get("state") == "done":
            return self._answered(state, request, ctx)
        if not state:
            self._queue_request(rid, request, ctx)
        ensure_poller(self.redis, self.settings)
        raise RetryLater(
            self._recheck_s(state), ctx.attempts_used, "waiting for the Batch API",
            ctx.rate_limited_used,
        )  # fmt: skip

    def _recheck_s(self, state: dict[str, str]) -> float:
        """When the step looks again: every poll at first, less often for a long batch
        (a tenth of the request's age, at most ten polls), so a day-long batch does
        not keep the workers busy with look-ups."""
        poll_s = self.settings.llm_batch_poll_s
        age = time.time() - float(state.get("queued_at") or time.time())
        return min(RECHECK_MAX_POLLS * poll_s, max(poll_s, age / 10))

    def _answered(
        self, state: dict[str, str], request: ChatRequest, ctx: CallContext
    ) -> ChatResult:
        if state.get("answer"):
            return ChatResult(**json.loads(state["answer"]))
        raise PermanentLLMError(
            state.get("error") or "the batch gave no answer", model=request.model,
            job_id=ctx.job_id, step=ctx.step,
        )  # fmt: skip

    def _queue_request(self, rid: str, request: ChatRequest, ctx: CallContext) -> None:
        keys = self.pool.usable()
        if not keys:
            raise PermanentLLMError("no usable API key for the Batch API", model=request.model,
                                    job_id=ctx.job_id, step=ctx.step)  # fmt: skip
        key = keys[0]
        cost = self.prices.cost(
            request.model, estimate_messages_tokens(request.messages), request.max_tokens,
            provider=key.provider, batch=True,
        )  # fmt: skip
        ask = make_ask(cost, ctx.job_id, ctx.max_cost_usd, self.settings.llm_budget_usd_per_day)
        refused = self.budgets.reserve(ask, rid, batch_lifetime_s(self.settings))
        if refused:
            raise self.budgets.exceeded(refused, ask, request.model, ctx.job_id, ctx.step)
        fields = {
            "job_id": ctx.job_id, "step": ctx.step, "key_id": key.key_id,
            "provider": key.provider, "model": request.model, "state": "pending",
            "body": json.dumps(request.body(), ensure_ascii=False),
            "day": ask.day_key if ask.day_max > 0 else "", "queued_at": f"{time.time():.3f}",
            "budget": "1" if ask.active else "",
        }  # fmt: skip
        flat = [x for pair in fields.items() for x in pair]
        keys_ = [C.KEY_BATCH_REQ.format(rid=rid), C.KEY_BATCH_PENDING]
        if self._queue(keys=keys_, args=[rid, time.time(), *flat]):
            self.redis.expire(keys_[0], self.settings.result_ttl_s)
            logger.info("job %s step %s: request %s queued for the Batch API",
                        ctx.job_id, ctx.step, rid)  # fmt: skip


def ensure_poller(client: redis.Redis, settings: Settings, delay_s: float | None = None) -> None:
    """Schedule the poll task unless one is scheduled already (cluster-wide)."""
    poll_s = settings.llm_batch_poll_s
    ttl_ms = int((3 * poll_s + 60) * 1000)
    if client.set(C.KEY_BATCH_POLLER, "1", nx=True, px=ttl_ms):
        from workers.app import app

        app.send_task(C.TASK_BATCH_POLL, countdown=poll_s if delay_s is None else delay_s)
