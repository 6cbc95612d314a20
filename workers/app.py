"""The Celery application: ``celery -A workers worker -Q llm,control``."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

app = Celery("genfleet", include=["workers.tasks"])
app.config_from_object("celeryconfig")


@worker_process_init.connect
def _fresh_resources(**_: Any) -> None:
    from workers import runtime

    runtime.reset()
