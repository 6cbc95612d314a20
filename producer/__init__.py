"""genfleet's producer: submit jobs, wait for them and read their results."""

from producer.api import get_job, submit_chapter
from producer.jobs import JobHandle
from producer.pipelines import resume, submit_batch, submit_persona, submit_tweets

__all__ = [
    "JobHandle",
    "get_job",
    "resume",
    "submit_batch",
    "submit_chapter",
    "submit_persona",
    "submit_tweets",
]
