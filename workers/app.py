"""The Celery application: ``celery -A workers worker -Q llm,control``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from genfleet import constants as C
from genfleet.safety import EscapeControls

app = Celery("genfleet", include=["workers.tasks", "workers.kind_tasks", "workers.batch_tasks"])
app.config_from_object("celeryconfig")


@worker_process_init.connect
def _fresh_resources(**_: Any) -> None:
    from workers import runtime
    from workers.images.backends import reset_backend

    runtime.reset()
    reset_backend()  # a forked pool process loads its own image model


@worker_process_shutdown.connect
@worker_shutdown.connect
def _write_held_counters(**_: Any) -> None:
    # Keys' call counters are held up to a second (workers.callstats): a worker that
    # stops writes them first.
    from workers.gateway import flush_gateway

    flush_gateway()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _one_line_per_record(logger: logging.Logger, **_: Any) -> None:
    # A newline or ANSI escape in user text (a project id) must not forge log lines.
    for handler in logger.handlers:
        handler.addFilter(EscapeControls())


@worker_ready.connect
def _announce_ready(sender: Any = None, **_: Any) -> None:
    # An LLM worker loads the openai SDK now, while idle, not on its first call (its
    # memory then shows at rest, and the first calls do not wait for the import).
    queues = sender.app.amqp.queues if sender is not None else {}
    names = set(getattr(queues, "consume_from", None) or queues)  # -Q, else every queue
    if any(name == C.QUEUE_LLM or name.startswith(C.QUEUE_LLM + ".") for name in names):
        _warm_gateway()

    # A parent that started this worker (genfleet demo, tests, benchmarks) waits for
    # this file, whatever the log level.
    ready_file = os.environ.get("GENFLEET_READY_FILE")
    if ready_file:
        Path(ready_file).touch()


def _warm_gateway() -> None:
    """Import the SDK (its chat resources too) and make each key's client (its TLS
    setup takes a tenth of a second) before the first step, not during it; on any
    trouble the first call does it instead."""
    try:
        from workers import runtime

        pool = runtime.gateway().pool
        for key in pool.keys:
            pool.client_for(key).chat.completions  # noqa: B018  (imports the chat resources)
    except Exception as e:
        logging.getLogger(__name__).warning("LLM clients not made ahead (%s)", e)


# Celery's two INFO lines per task ("received", "succeeded in ...: <result repr>") and
# httpx's line per request ("HTTP Request: POST ...", from "httpx2" in the openai SDK
# of today) cost more than the step's own short line (workers.taskbase); they show at
# DEBUG only.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "httpx", "httpx2")


@after_setup_logger.connect
def _quiet_per_task_lines(logger: logging.Logger, loglevel: int, **_: Any) -> None:
    if loglevel > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
