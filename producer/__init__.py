"""genfleet's producer: submit jobs, wait for them and read their results.

The names below are imported on first use, so ``import producer`` (and the
``genfleet`` command's start) stays light: no Celery, Redis client or SDK until a
job is submitted or read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer.api import get_job, submit_chapter
    from producer.jobs import JobHandle
    from producer.pipelines import resume, submit_batch, submit_persona, submit_tweets

_WHERE = {
    "JobHandle": "producer.jobs",
    "get_job": "producer.api",
    "resume": "producer.pipelines",
    "submit_batch": "producer.pipelines",
    "submit_chapter": "producer.api",
    "submit_persona": "producer.pipelines",
    "submit_tweets": "producer.pipelines",
}

__all__ = [
    "JobHandle",
    "get_job",
    "resume",
    "submit_batch",
    "submit_chapter",
    "submit_persona",
    "submit_tweets",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'producer' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
