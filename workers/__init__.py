"""genfleet's workers: the Celery app and everything that executes jobs."""

from workers.app import app

__all__ = ["app"]
