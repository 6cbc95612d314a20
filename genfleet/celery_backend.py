"""genfleet's result backend: Celery's Redis backend without result subscriptions.

Nothing in genfleet waits on a Celery result (jobs are read from their records in
Redis, and a task never waits on another), so the stock backend's subscription to
every sent task's result channel only costs a SUBSCRIBE per message (per chain link,
on the workers) and leaves pending results to tear down at exit, where they print
tracebacks. Chords, result storage and ``AsyncResult.state`` work as before.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class QuietRedisBackend(RedisBackend):
    """Redis result backend that does not subscribe to results it will never wait on."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        return result

    def remove_pending_result(self, result: Any) -> Any:
        return result


def backend_url(redis_url: str) -> str:
    """The ``result_backend`` value that selects this backend for ``redis_url``."""
    return f"{__name__}:QuietRedisBackend+{redis_url}"
