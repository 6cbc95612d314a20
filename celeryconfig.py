"""The one home of genfleet's Celery settings.

Broker and result backend are the same Redis: ``REDIS_URL``, or the embedded server
that ``genfleet`` started under ``GENFLEET_HOME`` (see ``genfleet.connection``).
Only JSON is accepted: a pickle payload on a queue is refused, never deserialized.
A ``rediss://`` URL is TLS with the server's certificate verified (``REDIS_CA_CERTS``).
"""

from __future__ import annotations

import sys

from kombu import Queue

from genfleet import constants as C
from genfleet.celery_backend import backend_url
from genfleet.connection import redis_ssl_options
from genfleet.embedded import EmbeddedRedis
from genfleet.settings import load_settings

FALLBACK_REDIS_URL = "redis://127.0.0.1:6379/0"

_settings = load_settings()
_url = _settings.redis_url or EmbeddedRedis(_settings.genfleet_home).running_url()
if not _url:
    # A plain `celery -A workers worker` must not quietly use an unrelated Redis.
    _url = FALLBACK_REDIS_URL
    sys.stderr.write(
        f"genfleet: warning: REDIS_URL is not set and no embedded Redis runs under "
        f"{_settings.genfleet_home}: using {FALLBACK_REDIS_URL}; set REDIS_URL (or run "
        "'genfleet redis') to choose\n"
    )

broker_url = _url
# kombu's Redis transport, except that an entry on a queue that is not a message
# envelope (a raw text, a JSON list) is dropped with a log line instead of ending the
# worker (see workers/transport.py).
broker_transport = "workers.transport:SafeRedisTransport"
result_backend = backend_url(_url)  # Redis, without per-task result subscriptions
# rediss://: verify the server's certificate (REDIS_CA_CERTS, else the system's CAs);
# without these kombu would connect with CERT_NONE.
broker_use_ssl = redis_ssl_options(_url, _settings)
redis_backend_use_ssl = broker_use_ssl
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # keep reconnecting after a Redis restart
broker_transport_options = {
    "visibility_timeout": _settings.broker_visibility_timeout_s,
    # Look for messages of lost workers every few seconds (kombu's default sweep is
    # about 100 s apart, whatever the visibility timeout).
    "unacked_restore_interval": max(1, min(10, _settings.broker_visibility_timeout_s // 5)),
    "unacked_restore_throttle": 1,
    "socket_keepalive": True,
    "health_check_interval": 10,
}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}
# Storing a result retries through a Redis restart instead of failing the task.
result_backend_always_retry = True
result_backend_max_retries = 60
result_backend_max_sleep_between_retries_ms = 5000
redis_backend_health_check_interval = 10
result_expires = _settings.result_ttl_s

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# A hand-made message of the wrong shape is discarded with a log line instead of
# stopping the worker (see workers/consumer.py).
worker_consumer = "workers.consumer:SafeConsumer"

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True
task_track_started = False  # a step's claim records its start (genfleet:job:{id}:claims)
# Task events (a publish per task state) only where something reads them: Flower turns
# them on in running workers (``enable_events``); GENFLEET_TASK_EVENTS=1 starts every
# worker with them, and makes producers send ``task-sent`` too.
task_send_sent_event = _settings.genfleet_task_events
worker_send_task_events = _settings.genfleet_task_events

task_default_queue = C.QUEUE_CONTROL
task_queues = [
    Queue(C.QUEUE_LLM),
    Queue(C.QUEUE_CONTROL),
    Queue(C.QUEUE_IMAGES),
    *(Queue(f"{C.QUEUE_IMAGES_GPU_PREFIX}{n}") for n in range(C.DEFAULT_IMAGE_GPU_QUEUES)),
]
task_routes = {
    "genfleet.llm.*": {"queue": C.QUEUE_LLM},
    "genfleet.control.*": {"queue": C.QUEUE_CONTROL},
    "genfleet.images.*": {"queue": C.QUEUE_IMAGES},
}
