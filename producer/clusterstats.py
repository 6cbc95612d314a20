"""The cluster's state read from Redis and Celery, for ``genfleet stats`` and the exporter.

Nothing here prints. Sources (keys: ``genfleet.constants``):

- workers online per queue: Celery's ``inspect().active_queues()`` (a short timeout);
- queue depths: the broker's lists. Kombu's Redis transport keeps one list per queue
  and priority step (``llm``, ``llm\\x06\\x163``, ``llm\\x06\\x166``, ``llm\\x06\\x169``);
  a depth is the sum of them all. Messages a worker holds but has not acknowledged
  sit in kombu's ``unacked`` hash instead;
- per key: the call counters ``genfleet:stats:key:{key_id}``; per (key, model): the
  limiter's snapshot of its scope. The models are those the gateway recorded in
  ``genfleet:models:{key_id}`` plus ``LLM_MODEL``, ``LLM_DRAFT_MODEL`` and
  ``LLM_REVIEW_MODEL``;
- jobs by status and cache hits: the job index and each job's call counters.

Only key *ids* are read or returned, never an API key.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS, Channel

from genfleet import constants as C
from genfleet.connection import sanitize_url
from genfleet.errors import SettingsError
from genfleet.settings import Settings
from genfleet.store import JobStore
from genfleet.summary import SUCCESS_FIELD, success_counts
from workers.callstats import read_costs, read_stats
from workers.keypool import DEFAULT_PROVIDER, keys_from_settings, lease_seconds
from workers.limiter import ClusterLimiter, Limits, Scope
from workers.ratelimit_headers import limits_of

logger = logging.getLogger(__name__)

INSPECT_TIMEOUT_S = 1.0  # how long to wait for workers to answer an inspect broadcast
UNACKED_KEY = Channel.unacked_key  # kombu's hash of delivered, unacknowledged messages
_INDEX_CHUNK = 1000  # job ids read per round trip
_JOB_COUNTERS = ("cache_hits", "ok", "failed")


@dataclass(frozen=True)
class KeyRef:
    """A key of the pool without its secret: what stats need to find its state."""

    key_id: str
    provider: str
    limits: Limits


@dataclass
class ScopeStats:
    """The limiter's state of one (key, model) now."""

    model: str
    in_flight: int
    effective_concurrency: int
    max_concurrent: int
    requests_in_window: int
    tokens_in_window: int
    cooldown_left_s: float
    rate_limited_total: int


@dataclass
class KeyStats:
    """One key's call counters (since they were last reset) and its scopes."""

    key_id: str
    provider: str
    disabled: str | None  # why the key was taken out of the pool, if it was
    counters: dict[str, float]
    rate_limited_ratio: float  # 429 answers / calls
    models: list[ScopeStats] = field(default_factory=list)
    costs: dict[str, float | None] = field(default_factory=dict)  # model -> USD, None: unknown


@dataclass
class CacheStats:
    """Cache hits of the jobs still stored, against the requests they answered."""

    hits: int
    requests: int  # hits + requests that ended ok or failed at the provider
    hit_ratio: float


@dataclass
class ClusterStats:
    """Everything ``genfleet stats`` shows."""

    redis: str  # the URL without a password
    taken_at: float
    workers: dict[str, list[str]]  # queue -> worker names
    queues: dict[str, int]  # queue -> messages waiting
    unacked: int  # messages delivered to a worker, not yet acknowledged
    jobs: dict[str, int]  # status -> jobs
    cache: CacheStats
    keys: list[KeyStats]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def gather(
    settings: Settings, client: redis.Redis, app: Celery, *, timeout_s: float = INSPECT_TIMEOUT_S
) -> ClusterStats:
    """Read the cluster's state now (one inspect broadcast, a few Redis round trips)."""
    workers = workers_by_queue(app, timeout_s)
    names = queue_names(app, workers)
    jobs, cache = job_totals(client)
    return ClusterStats(
        redis=sanitize_url(str(app.conf.broker_url)),
        taken_at=time.time(),
        workers=workers,
        queues=queue_depths(client, names, _priority_steps(app)),
        unacked=int(client.hlen(UNACKED_KEY)),
        jobs=jobs,
        cache=cache,
        keys=all_key_stats(settings, client),
    )


def workers_by_queue(app: Celery, timeout_s: float = INSPECT_TIMEOUT_S) -> dict[str, list[str]]:
    """Queue -> names of the workers consuming it that answered within ``timeout_s``."""
    replies = app.control.inspect(timeout=timeout_s).active_queues() or {}
    out: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            out.setdefault(str(queue["name"]), []).append(str(worker))
    return {q: sorted(ws) for q, ws in sorted(out.items())}


def queue_names(app: Celery, workers: Iterable[str] = ()) -> list[str]:
    """The declared queues, and any other queue a worker consumes."""
    declared = [q.name for q in app.conf.task_queues or []]
    return sorted({*declared, *workers})


def _priority_steps(app: Celery) -> list[int]:
    options = app.conf.broker_transport_options or {}
    return list(options.get("priority_steps", PRIORITY_STEPS))


def priority_lists(queue: str, steps: Iterable[int] = PRIORITY_STEPS) -> list[str]:
    """The Redis lists kombu keeps for one queue (priority 0 is the plain name)."""
    return [f"{queue}{Channel.sep}{p}" if p else queue for p in sorted(set(steps))]


def queue_depths(
    client: redis.Redis, queues: Iterable[str], steps: Iterable[int] = PRIORITY_STEPS
) -> dict[str, int]:
    """Queue -> messages waiting in it, over all its priority lists."""
    lists = {q: priority_lists(q, steps) for q in queues}
    with client.pipeline(transaction=False) as pipe:
        for names in lists.values():
            for name in names:
                pipe.llen(name)
        lengths = iter(pipe.execute())
    return {q: sum(int(next(lengths)) for _ in names) for q, names in lists.items()}


def job_totals(client: redis.Redis) -> tuple[dict[str, int], CacheStats]:
    """Jobs by status, and cache hits over the jobs' call counters (read-only)."""
    statuses: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    start = 0
    while True:
        ids = [str(i) for i in client.zrange(C.KEY_JOB_INDEX, start, start + _INDEX_CHUNK - 1)]
        if not ids:
            break
        start += len(ids)
        job_statuses = JobStore(client, 0).statuses(ids)  # read-only: the TTL is unused
        with client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(C.KEY_STATS_JOB.format(job_id=job_id), [*_JOB_COUNTERS, SUCCESS_FIELD])
            counter_rows = pipe.execute()
        for status, counters in zip(job_statuses, counter_rows, strict=True):
            if status is not None:  # None: the job expired and is not yet pruned
                statuses[str(status)] += 1
            for name, value in zip(_JOB_COUNTERS, counters[:-1], strict=True):
                sums[name] += int(float(value or 0))
            sums["ok"] += int(success_counts(counters[-1]).get("ok", 0))
    requests = sums["cache_hits"] + sums["ok"] + sums["failed"]
    ratio = sums["cache_hits"] / requests if requests else 0.0
    return dict(sorted(statuses.items())), CacheStats(sums["cache_hits"], requests, ratio)


def key_refs(settings: Settings, client: redis.Redis) -> list[KeyRef]:
    """The pool's keys, without their secrets.

    When this process has no keys configured (an operator's shell without
    ``OPENAI_API_KEY``), the key ids come from the counters in Redis and the limits
    from the ``LLM_*`` settings.
    """
    try:
        return [KeyRef(k.key_id, k.provider, k.limits) for k in keys_from_settings(settings)]
    except SettingsError as e:
        logger.info("no key pool in this process's settings (%s); using Redis' counters", e)
    limits = limits_of(settings.llm_max_concurrent, settings.llm_rpm_limit,
                       settings.llm_tpm_limit, lease_seconds(settings.llm_timeout_s))  # fmt: skip
    provider = settings.openai_base_url or DEFAULT_PROVIDER
    prefix = C.KEY_STATS_KEY.format(key_id="")
    found = sorted(str(k)[len(prefix) :] for k in client.scan_iter(match=prefix + "*", count=500))
    return [KeyRef(key_id, provider, limits) for key_id in found]


def models_of(settings: Settings, client: redis.Redis, key_id: str) -> list[str]:
    """Models the gateway used with this key, and the configured ones."""
    seen = {str(m) for m in client.smembers(C.KEY_MODELS.format(key_id=key_id))}
    return sorted({*seen, settings.llm_model, settings.draft_model, settings.review_model})


def scope_stats(limiter: ClusterLimiter, ref: KeyRef, model: str) -> ScopeStats:
    """The limiter's snapshot of one (key, model)."""
    snap = limiter.snapshot(Scope(ref.provider, ref.key_id, model), ref.limits)
    names = [f.name for f in dataclasses.fields(ScopeStats) if f.name in snap]
    return ScopeStats(
        model=model, max_concurrent=ref.limits.max_concurrent, **{n: snap[n] for n in names}
    )


def all_key_stats(settings: Settings, client: redis.Redis) -> list[KeyStats]:
    """Counters and limiter state of every key, with the reason a key is disabled."""
    limiter = ClusterLimiter(client)
    disabled = disabled_reasons(client)
    out = []
    for ref in key_refs(settings, client):
        counters = read_stats(client, C.KEY_STATS_KEY.format(key_id=ref.key_id))
        calls = counters.get("calls", 0)
        models = [scope_stats(limiter, ref, m) for m in models_of(settings, client, ref.key_id)]
        out.append(
            KeyStats(
                key_id=ref.key_id,
                provider=sanitize_url(ref.provider),
                disabled=disabled.get(ref.key_id),
                counters=counters,
                rate_limited_ratio=counters.get("rate_limited", 0) / calls if calls else 0.0,
                models=models,
                costs=read_costs(client, ref.key_id),
            )
        )
    return out


def unserved_queues(app: Celery, client: redis.Redis, extra: Iterable[str] = ()) -> dict[str, int]:
    """Queues holding messages that no worker (answering within a second) consumes."""
    workers = workers_by_queue(app)
    queues = sorted({*queue_names(app, workers), *extra})
    depths = queue_depths(client, queues, _priority_steps(app))
    return {q: n for q, n in depths.items() if n and q not in workers}


def worker_command_for(queue: str) -> str:
    """The command that starts a worker on ``queue``."""
    if queue.startswith(C.QUEUE_IMAGES_GPU_PREFIX):
        return f"genfleet worker images --gpus {queue.removeprefix(C.QUEUE_IMAGES_GPU_PREFIX)}"
    if queue == C.QUEUE_IMAGES:
        return "genfleet worker images"
    return "genfleet worker llm"


def no_worker_warning(app: Celery, client: redis.Redis, extra: Iterable[str] = ()) -> str | None:
    """One line saying which queues wait for a worker that is not there (None if none)."""
    unserved = unserved_queues(app, client, extra)
    if not unserved:
        return None
    where = "; ".join(
        f"queue '{q}' has {n} message(s) waiting and no worker consumes it "
        f"(start one: {worker_command_for(q)})"
        for q, n in unserved.items()
    )
    return f"{where}; still waiting"


def disabled_reasons(client: redis.Redis) -> dict[str, str]:
    """key id -> why, for the keys whose lock-out (by fingerprint) is still on."""
    refused = {str(k): str(v) for k, v in client.hgetall(C.KEY_DISABLED_KEYS).items()}
    ids = list(refused)
    if not ids:
        return {}
    locks = client.mget([C.KEY_DISABLED_KEY.format(fingerprint=refused[i]) for i in ids])
    return {i: str(lock).partition(": ")[2] for i, lock in zip(ids, locks, strict=True) if lock}
