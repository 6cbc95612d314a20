"""Names that become paths are checked; user text cannot forge worker log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from genfleet import constants as C
from genfleet.safety import check_name, escape_controls
from producer import submit_chapter
from tests.conftest import Workers
from workers.images.output import image_path
from workers.taskbase import check_ids


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "a/b", "..", "v1/../../x", "", "x" * 200, "v1\n", ".hidden", 7]
)
def test_an_id_that_could_leave_the_jobs_folder_is_refused(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad id argument"):
        check_ids(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad step id"):
        image_path(tmp_path, 1, bad)  # type: ignore[arg-type]


def test_genfleets_own_ids_pass() -> None:
    for good in ("chapter-3f9a1c2b7d10", "v1", "p1.2025-03-01.image", "t2.L3.c1.review", "img7"):
        assert check_name(good) == good


def test_control_characters_are_escaped() -> None:
    assert escape_controls("a\nb\x1b[31mc") == "a\\nb\\x1b[31mc"
    assert escape_controls("plain 日本") == "plain 日本"


def test_a_project_id_cannot_forge_worker_log_lines(sim, workers: Workers) -> None:
    worker = workers.start(concurrency=2)
    forged = "x\n[2026-01-01 00:00:00,000: ERROR/MainProcess] FORGED\x1b[31m red"
    view = submit_chapter(forged, 1, "A quiet harbour at dawn.", versions=1).wait(
        timeout=90, progress=False
    )
    assert view.status == C.STATUS_SUCCEEDED
    lines = worker.log_text().splitlines()
    assert not any(line.startswith("[2026-01-01") for line in lines)  # no forged line
    assert not any("\x1b" in line for line in lines)  # no raw escape reaches the log
    assert any("x\\n[2026-01-01" in line for line in lines)  # shown, escaped
