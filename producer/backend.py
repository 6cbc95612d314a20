"""The producer's result backend: Celery's Redis backend without result subscriptions.

The producer reads job records, never Celery results, so subscribing to each task's
result channel on send (what the stock backend does) only costs Redis commands and
leaves pending results to tear down at exit. Workers use the stock backend.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class ProducerResultBackend(RedisBackend):
    """Redis result backend that does not subscribe to results it will never wait on."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        return result

    def remove_pending_result(self, result: Any) -> Any:
        return result


def producer_backend_url(redis_url: str) -> str:
    """The ``result_backend`` value that selects this backend for ``redis_url``."""
    return f"{__name__}:ProducerResultBackend+{redis_url}"
