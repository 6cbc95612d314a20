"""The producer's connections: the job store and the Celery app, on one Redis."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from genfleet.celery_backend import backend_url
from genfleet.connection import redis_client, use_redis
from genfleet.settings import Settings, load_settings
from genfleet.store import JobStore


@dataclass
class Client:
    """Settings, store and Celery app of one producer process."""

    settings: Settings
    store: JobStore
    app: Celery


_default: list[Client] = []


def connect(settings: Settings | None = None) -> Client:
    """Connect to Redis (starting the embedded one if ``REDIS_URL`` is unset).

    Without ``settings`` the process's one default client is returned.
    """
    if settings is None and _default:
        return _default[0]
    client = _new_client(settings or load_settings())
    if settings is None:
        _default.append(client)
    return client


def _new_client(settings: Settings) -> Client:
    url = use_redis(settings)
    store = JobStore(redis_client(url), settings.result_ttl_s)
    from workers.app import app

    app.conf.broker_url = url
    app.conf.result_backend = backend_url(url)
    return Client(settings=settings, store=store, app=app)
