"""The producer's connections: the job store and the Celery app, on one Redis."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery

from genfleet.celery_backend import backend_url
from genfleet.connection import redis_client, redis_ssl_options, use_redis
from genfleet.settings import Settings, load_settings
from genfleet.store import JobStore


@dataclass
class Client:
    """Settings, store and Celery app of one producer process."""

    settings: Settings
    store: JobStore
    app: Celery


_default: list[Client] = []
_connections: dict[str, tuple[JobStore, Celery]] = {}


def connect(settings: Settings | None = None) -> Client:
    """Connect to Redis (starting the embedded one if ``REDIS_URL`` is unset).

    Without ``settings`` the process's one default client is returned. Connections
    are shared by every client of the same Redis.
    """
    if settings is None and _default:
        return _default[0]
    chosen = settings or load_settings()
    url = use_redis(chosen)
    if url not in _connections:
        store = JobStore(redis_client(url, chosen), chosen.result_ttl_s)
        _connections[url] = (store, _celery_app(url, chosen))
    store, app = _connections[url]
    client = Client(settings=chosen, store=store, app=app)
    if settings is None:
        _default.append(client)
    return client


def connect_unchecked(settings: Settings) -> Client:
    """A client of ``REDIS_URL`` that does not ask Redis first (it may be down now and
    come back later): for ``genfleet metrics``, which reports ``genfleet_redis_up 0``."""
    url = settings.redis_url
    if not url:
        return connect(settings)
    tls = redis_ssl_options(url, settings) if url.startswith("rediss:") else None
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2,
                                  socket_timeout=5, **(tls or {}))  # fmt: skip
    return Client(settings, JobStore(client, settings.result_ttl_s), _celery_app(url, settings))


def _celery_app(url: str, settings: Settings) -> Celery:
    """The producer's own Celery app for one Redis: sends tasks by name, never runs them."""
    app = Celery("genfleet-producer", set_as_current=False)
    app.config_from_object("celeryconfig")
    tls = redis_ssl_options(url, settings)
    app.conf.update(
        broker_url=url, result_backend=backend_url(url),
        broker_use_ssl=tls, redis_backend_use_ssl=tls,
    )  # fmt: skip
    return app


def forget_default() -> None:
    """Drop the default client and connections (a script or test switching servers)."""
    _default.clear()
    for store, app in _connections.values():
        store.r.close()
        app.close()
    _connections.clear()
