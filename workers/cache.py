"""The LLM response cache in Redis.

Keyed by a hash of everything that shapes the answer (provider, model, messages,
parameters, and the seed that holds a version index, so parallel versions stay
distinct). A hit costs no call and no limiter capacity.

What a user expects from it, per job (``cache`` of the job's spec):

- default (None): a step asking again what it already asked in this run of the job
  (its task delivered again after a lost worker, or sent again) gets the answer it paid
  for; a new job, or ``genfleet resume`` (a new run), asks anew, so fresh candidate
  versions stay fresh and a resumed step gets a new answer. Temperature-0 calls, whose
  answer does not change, are shared by every job.
- ``True``: every call is shared by every job (re-running a job reproduces its outputs).
- ``False``: no cache at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable

import redis

from genfleet import constants as C
from genfleet.store import JobStore
from workers.gateway_types import CallContext, ChatRequest, ChatResult
from workers.ops import Ops

logger = logging.getLogger(__name__)


def cache_digest(provider: str, request: ChatRequest, scope: str = "") -> str:
    """A stable hash of a request (the API key is not part of it); ``scope`` limits
    the entry to one step of one run of a job (empty: shared by every job)."""
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}  # no copy
    shape = {"provider": provider, "scope": scope, **fields}
    raw = json.dumps(shape, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


class Entry:
    """A call's cache entry: ``look`` whether to read it first; ``digest`` (made once,
    when first asked for) names it; ``per_run``: it belongs to one step of one run,
    so it serves only that step asking again (a step whose result is stored with the
    answer never reads it). False when the call does not use the cache."""

    __slots__ = ("_make", "look", "per_run", "_digest")

    def __init__(self, make: Callable[[], str] | None, look: bool, per_run: bool = False) -> None:
        self._make, self.look, self.per_run, self._digest = make, look, per_run, ""

    @property
    def digest(self) -> str:
        if not self._digest and self._make is not None:
            self._digest = self._make()
        return self._digest

    def __bool__(self) -> bool:
        return self._make is not None


class ResponseCache:
    """get/put of chat results; ``ttl_s`` 0 turns the cache off."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.jobs = JobStore(client, ttl_s)  # reads the job's round only

    def entry_for(self, provider: str, request: ChatRequest, ctx: CallContext) -> Entry:
        """The cache entry of a call (false when the call must not use the cache), and
        whether an answer may be there to read: an entry of one step of one run is
        only worth a look when an earlier attempt of that step in that run asked. Its
        digest is computed when first used (most answers are stored as their step's
        result and need no entry)."""
        if self.ttl_s <= 0 or ctx.cache is False:
            return Entry(None, False)
        if ctx.cache is True or request.temperature == 0:
            return Entry(lambda: cache_digest(provider, request), True)
        if not ctx.job_id:
            return Entry(None, False)
        run = self.jobs.round(ctx.job_id) if ctx.run_round is None else ctx.run_round
        scope = f"{ctx.job_id}/{ctx.step}/r{run}"
        return Entry(lambda: cache_digest(provider, request, scope), ctx.asked_before, True)

    def get(self, digest: str) -> ChatResult | None:
        raw = self.redis.get(C.KEY_CACHE.format(digest=digest))
        if raw is None:
            return None
        data = json.loads(raw)
        hit = {**data, "cached": True, "attempts": 0, "seconds": 0.0, "cost_usd": 0.0}
        return ChatResult(**hit)

    def put_op(self, ops: Ops, digest: str, result: ChatResult) -> None:
        """Keep an answer: an update another script call makes (``workers.ops``)."""
        ops.add("SETEX", C.KEY_CACHE.format(digest=digest), self.ttl_s, _payload(result))


def _payload(result: ChatResult) -> str:
    return json.dumps(vars(result), ensure_ascii=False)  # flat: no deep copy needed
