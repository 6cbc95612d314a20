"""genfleet's producer: submit jobs, wait for them and read their results."""

from producer.api import get_job, submit_chapter
from producer.jobs import JobHandle

__all__ = ["JobHandle", "get_job", "submit_chapter"]
