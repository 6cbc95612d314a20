"""A Prometheus exporter: a collector that reads the cluster's state on every scrape.

No background loop: each scrape runs ``clusterstats.gather`` once (one Celery inspect
broadcast with a short timeout, a few Redis round trips). Labels carry key *ids*
(``key1``, ``openai.2``) and model names, never an API key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genfleet import constants as C
from genfleet.settings import Settings
from producer.clusterstats import INSPECT_TIMEOUT_S, ClusterStats, KeyStats, gather

logger = logging.getLogger(__name__)

JOB_STATUSES = (C.STATUS_QUEUED, C.STATUS_RUNNING, *sorted(C.TERMINAL_STATUSES))
KEY = ["key_id"]
SCOPE = ["key_id", "model"]


class ClusterCollector(Collector):
    """Yields genfleet's metrics, read from Redis and Celery when scraped."""

    def __init__(
        self, settings: Settings, client: redis.Redis, app: Celery,
        *, timeout_s: float = INSPECT_TIMEOUT_S,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.client = client
        self.app = app
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # one scrape at a time: one broadcast, one pipeline

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("genfleet_redis_up", "1 if the last scrape could read Redis")
        try:
            with self._lock:
                stats = gather(self.settings, self.client, self.app, timeout_s=self.timeout_s)
        except (redis.RedisError, OperationalError, OSError) as e:
            logger.warning("metrics scrape: cannot read the cluster's state: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from cluster_metrics(stats)
        yield from key_counter_metrics(stats.keys)
        yield from key_limiter_metrics(stats.keys)


def cluster_metrics(stats: ClusterStats) -> Iterator[Metric]:
    """Jobs, queues, workers and the cache."""
    jobs = GaugeMetricFamily("genfleet_jobs", "Jobs in the job index by status", labels=["status"])
    for status in sorted({*JOB_STATUSES, *stats.jobs}):
        jobs.add_metric([status], stats.jobs.get(status, 0))
    depth = GaugeMetricFamily(
        "genfleet_queue_depth", "Messages waiting in a queue (all priorities)", labels=["queue"]
    )
    online = GaugeMetricFamily(
        "genfleet_workers_online", "Workers consuming a queue that answered", labels=["queue"]
    )
    for queue in sorted({*stats.queues, *stats.workers}):
        depth.add_metric([queue], stats.queues.get(queue, 0))
        online.add_metric([queue], len(stats.workers.get(queue, [])))
    unacked = GaugeMetricFamily(
        "genfleet_broker_unacked", "Messages delivered to workers and not yet acknowledged"
    )
    unacked.add_metric([], stats.unacked)
    hits = CounterMetricFamily(
        "genfleet_llm_cache_hits", "LLM requests answered from the cache (jobs still stored)"
    )
    hits.add_metric([], stats.cache.hits)
    yield from (jobs, depth, online, unacked, hits)


def key_counter_metrics(keys: list[KeyStats]) -> Iterator[Metric]:
    """The call counters of each key (``genfleet:stats:key:{key_id}``)."""
    calls = CounterMetricFamily(
        "genfleet_llm_calls",
        "LLM calls by outcome: ok, retried (an error retried) or failed (an error given up on)",
        labels=["key_id", "outcome"],
    )  # fmt: skip
    limited = CounterMetricFamily("genfleet_llm_rate_limited", "HTTP 429 answers", labels=KEY)
    server = CounterMetricFamily("genfleet_llm_server_errors", "HTTP 5xx answers", labels=KEY)
    retries = CounterMetricFamily("genfleet_llm_retries", "Failed calls retried", labels=KEY)
    tokens = CounterMetricFamily(
        "genfleet_llm_tokens", "Tokens of successful calls", labels=["key_id", "direction"]
    )
    waited = CounterMetricFamily(
        "genfleet_llm_limiter_wait_seconds", "Time calls waited for the limiter", labels=KEY
    )
    disabled = GaugeMetricFamily(
        "genfleet_key_disabled", "1 if the key is out of the pool (401/403)", labels=KEY
    )
    for key in keys:
        c, label = key.counters, [key.key_id]
        calls.add_metric([key.key_id, "ok"], c.get("ok", 0))
        calls.add_metric([key.key_id, "retried"], c.get("retries", 0))
        calls.add_metric([key.key_id, "failed"], c.get("failed", 0))  # as `genfleet stats`
        limited.add_metric(label, c.get("rate_limited", 0))
        server.add_metric(label, c.get("server_errors", 0))
        retries.add_metric(label, c.get("retries", 0))
        tokens.add_metric([key.key_id, "in"], c.get("tokens_in", 0))
        tokens.add_metric([key.key_id, "out"], c.get("tokens_out", 0))
        waited.add_metric(label, c.get("limiter_wait_s", 0.0))
        disabled.add_metric(label, int(key.disabled is not None))
    yield from (calls, limited, server, retries, tokens, waited, disabled)
    yield cost_metric(keys)


def cost_metric(keys: list[KeyStats]) -> Metric:
    """USD spent per (key, model); a model without a price is left out, never 0."""
    cost = CounterMetricFamily(
        "genfleet_llm_cost_usd", "USD spent on LLM calls (models with a price)", labels=SCOPE
    )
    for key in keys:
        for model, usd in key.costs.items():
            if usd is not None:
                cost.add_metric([key.key_id, model], usd)
    return cost


def key_limiter_metrics(keys: list[KeyStats]) -> Iterator[Metric]:
    """The limiter's state of each (key, model) now."""
    families = {
        "effective_concurrency": GaugeMetricFamily(
            "genfleet_key_effective_concurrency", "Calls allowed at once now (AIMD)", labels=SCOPE
        ),
        "max_concurrent": GaugeMetricFamily(
            "genfleet_key_max_concurrent", "The configured concurrency limit", labels=SCOPE
        ),
        "in_flight": GaugeMetricFamily(
            "genfleet_key_in_flight", "Calls in flight now", labels=SCOPE
        ),
        "cooldown_left_s": GaugeMetricFamily(
            "genfleet_key_cooldown_seconds", "Cooldown left after a 429", labels=SCOPE
        ),
        "requests_in_window": GaugeMetricFamily(
            "genfleet_key_requests_in_window", "Requests in the last minute", labels=SCOPE
        ),
        "tokens_in_window": GaugeMetricFamily(
            "genfleet_key_tokens_in_window", "Tokens in the last minute", labels=SCOPE
        ),
    }
    for key in keys:
        for scope in key.models:
            for attr, family in families.items():
                family.add_metric([key.key_id, scope.model], getattr(scope, attr))
    yield from families.values()


def registry_for(settings: Settings, client: redis.Redis, app: Celery) -> CollectorRegistry:
    """A registry holding only genfleet's collector."""
    registry = CollectorRegistry()
    registry.register(ClusterCollector(settings, client, app))
    return registry


def serve(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` on a daemon thread; raises ``OSError`` if the port is taken."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    logger.info("serving metrics on http://%s:%d/metrics", host, port)
    return server
