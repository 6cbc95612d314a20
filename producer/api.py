"""The Python API for scripts: ``submit_chapter`` and friends, and ``get_job``."""

from __future__ import annotations

from genfleet import constants as C
from genfleet.kinds.chapter import KIND as CHAPTER
from genfleet.kinds.checks import check_int, check_text
from genfleet.settings import Settings
from producer.canvas import job_canvas
from producer.client import connect
from producer.jobs import JobHandle, enqueue, make_record
from producer.spend import spend_spec

__all__ = ["check_int", "check_text", "get_job", "submit_chapter"]


def submit_chapter(
    project_id: str,
    chapter_number: int,
    outline: str,
    versions: int | None = None,
    *,
    cache: bool | None = None,
    mode: str = C.API_ONLINE,
    max_cost_usd: float | None = None,
    settings: Settings | None = None,
) -> JobHandle:
    """Enqueue candidate versions of a chapter (seed 000); returns the job handle.

    ``versions`` defaults to ``WRITER_CHAPTER_VERSION_COUNT``. With
    ``WRITER_PARALLEL_GENERATION`` the versions run as a group, at most
    ``WRITER_MAX_PARALLEL_REQUESTS`` at once; otherwise as a serial chain. ``cache``
    turns the response cache on or off for this job (default: temperature-0 calls only).
    ``mode="batch"`` uses the provider's Batch API; ``max_cost_usd`` is the job's budget.
    """
    client = connect(settings)
    s = client.settings
    check_text("project_id", project_id, C.MAX_PROJECT_ID_CHARS)
    check_int("chapter_number", chapter_number, 1, 100_000)
    check_text("outline", outline, C.MAX_OUTLINE_CHARS)
    count = check_int(
        "versions", s.writer_chapter_version_count if versions is None else versions, 1, 10
    )
    spec = CHAPTER.check_spec(
        "chapter", project_id=project_id, chapter_number=chapter_number, outline=outline,
        versions=count, model=s.llm_model, max_tokens=s.llm_max_tokens, cache=cache,
        **spend_spec(s, mode, max_cost_usd, [s.llm_model]),
    )  # fmt: skip
    parallel = s.writer_parallel_generation
    record = make_record(
        CHAPTER.name, spec.model_dump(), CHAPTER.step_ids(spec),
        mode="parallel" if parallel else "serial",
        max_parallel=s.writer_max_parallel_requests if parallel else 1,
    )  # fmt: skip
    return enqueue(client, record, job_canvas(client.app, record))


def get_job(job_id: str, *, settings: Settings | None = None) -> JobHandle:
    """A handle on an existing job; raises ``JobNotFoundError`` if there is none."""
    client = connect(settings)
    client.store.status(job_id)
    return JobHandle(job_id, client)
