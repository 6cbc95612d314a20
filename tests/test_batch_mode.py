"""Batch mode on real workers against the simulator's ``/v1/files`` and ``/v1/batches``.

Counted at the simulator: ``batch_lines`` (requests it answered through batches),
``chat_by_prompt`` (answers per distinct prompt: 1 means nothing was asked twice)
and ``by_path`` (no online chat call is made in batch mode).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from genfleet import constants as C
from genfleet.prices import BUILTIN_PRICES
from producer import resume, submit_chapter, submit_persona
from producer.control import cancel
from tests.conftest import ROOT, Workers, genfleet_cmd

OUTLINE = "A ferry pilot keeps a logbook of passengers who never disembark."
BATCH_ENV = {"LLM_BATCH_POLL_S": "1"}  # the first poll gathers what a second queued
CHAT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def _all_versions_at_once(monkeypatch) -> None:
    # A chapter job's versions run in lanes of WRITER_MAX_PARALLEL_REQUESTS chained
    # versions: in batch mode each link would be another round. One lane per version.
    monkeypatch.setenv("WRITER_MAX_PARALLEL_REQUESTS", "10")


def _start(workers: Workers, **env: str) -> None:
    workers.start(concurrency=4, **{**BATCH_ENV, **env})


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_a_batch_job_costs_the_batch_price_and_makes_no_online_call(
    sim, workers: Workers, env
) -> None:
    sim.configure(batch_seconds=0.5)
    _start(workers)
    handle = submit_chapter("batch", 1, OUTLINE, versions=6, mode="batch")
    view = handle.wait(timeout=120, progress=False)
    assert view.status == "succeeded"
    stats = sim.stats()
    assert stats["batch_lines"] == 6
    assert CHAT not in stats["by_path"]
    assert sorted(stats["chat_by_prompt"].values()) == [1] * 6
    online = BUILTIN_PRICES["gpt-4o-mini"].cost(stats["prompt_tokens"], stats["completion_tokens"])
    assert view.metrics is not None
    assert view.metrics.cost_usd == pytest.approx(online * 0.5, rel=1e-6)
    assert len({s["output"]["content"] for s in handle.results()}) == 6
    batches = [json.loads(b) for b in handle.batches().values()]
    assert {b["status"] for b in batches} == {"completed"}
    assert sum(b["counts"]["total"] for b in batches) == 6
    out = subprocess.run(genfleet_cmd("status", handle.id), env=env, capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert out.stdout.count(": completed, ") == len(batches)
    assert "(Batch API prices)" in out.stdout


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_a_failed_line_fails_only_its_step(sim, workers: Workers) -> None:
    sim.configure(batch_seconds=0.3, fail_patterns={"version 2 of 4": 500})
    _start(workers)
    handle = submit_chapter("batch", 2, OUTLINE, versions=4, mode="batch")
    view = handle.wait(timeout=120, progress=False)
    assert view.status == "partial"
    assert set(view.ok) == {"v1", "v3", "v4"}
    assert "HTTP 500" in (view.failed["v2"].error or "")
    assert sim.stats()["batch_lines"] == 4  # a failed line is not asked again
    sim.configure(fail_patterns={})
    _, steps = resume(handle.id)  # a resumed step asks anew, in a new batch
    assert steps == ["v2"]
    assert handle.wait(timeout=120, progress=False).status == "succeeded"
    assert sim.stats()["batch_lines"] == 5


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_an_expired_batch_is_resubmitted_once_then_fails(sim, workers: Workers) -> None:
    # The first two batches expire with half their lines answered: of 6 requests, 3
    # are answered, 3 re-submitted, of which 1 is answered and 2 fail (when the first
    # batch holds all six).
    sim.configure(batch_seconds=0.3, batch_expire_first=2)
    _start(workers)
    handle = submit_chapter("batch", 3, OUTLINE, versions=6, mode="batch")
    view = handle.wait(timeout=120, progress=False)
    assert view.status == "partial"
    assert view.failed and all("expired twice" in (r.error or "") for r in view.failed.values())
    assert len(view.ok) + len(view.failed) == 6
    stats = sim.stats()
    assert stats["batch_lines"] == len(view.ok)  # each answered line routed, none twice
    assert sorted(stats["chat_by_prompt"].values()) == [1] * len(view.ok)
    statuses = [json.loads(b)["status"] for b in handle.batches().values()]
    assert statuses.count("expired") == 2


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_an_expired_batch_is_resubmitted_and_the_job_completes(sim, workers: Workers) -> None:
    sim.configure(batch_seconds=0.3, batch_expire_first=1)
    _start(workers)
    handle = submit_chapter("batch", 4, OUTLINE, versions=6, mode="batch")
    assert handle.wait(timeout=120, progress=False).status == "succeeded"
    stats = sim.stats()
    assert stats["batch_lines"] == 6  # 3 answered, then the other 3: none billed twice
    assert sorted(stats["chat_by_prompt"].values()) == [1] * 6


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_persona_stages_advance_round_by_round(sim, workers: Workers) -> None:
    sim.configure(batch_seconds=0.3)
    _start(workers)
    handle = submit_persona(ROOT / "examples" / "face.png", mode="batch")
    view = handle.wait(timeout=180, progress=False)
    assert view.status == "succeeded", view.error
    stats = sim.stats()
    assert CHAT not in stats["by_path"]
    assert stats["batch_lines"] == 7  # seven stages, each answered once
    # core, then strategy with the four others, then examples: three rounds at least
    assert len(handle.batches()) >= 3


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_cancel_cancels_the_batches_at_the_provider(sim, workers: Workers) -> None:
    sim.configure(batch_seconds=300)
    _start(workers)
    handle = submit_chapter("batch", 5, OUTLINE, versions=3, mode="batch")
    deadline = time.monotonic() + 60
    while not handle.batches() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert handle.batches()
    cancel(handle.id)
    deadline = time.monotonic() + 30
    while '"cancelled"' not in "".join(handle.batches().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert '"cancelled"' in "".join(handle.batches().values())
    assert handle.status() == C.STATUS_CANCELLED
    assert sim.stats()["batch_lines"] == 0


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_a_budget_holds_in_batch_mode(sim, workers: Workers) -> None:
    # A request reserves its worst case at the batch price (about $0.00033): $0.001
    # admits three of the eight.
    sim.configure(batch_seconds=0.3)
    _start(workers)
    handle = submit_chapter("batch", 6, OUTLINE, versions=8, mode="batch", max_cost_usd=0.001)
    view = handle.wait(timeout=120, progress=False)
    assert view.status == "partial"
    stats = sim.stats()
    assert 1 <= stats["batch_lines"] < 8 and stats["batch_lines"] == len(view.ok)
    spent = BUILTIN_PRICES["gpt-4o-mini"].cost(
        stats["prompt_tokens"], stats["completion_tokens"], batch=True
    )
    assert spent <= 0.001
    stopped = [r for r in view.failed.values() if r.error_type == C.STEP_BUDGET_EXCEEDED]
    assert len(stopped) == 8 - len(view.ok)


def test_bad_mode_on_the_command_line(env, r) -> None:
    out = subprocess.run(
        genfleet_cmd("submit", "chapter", "--project", "p", "--chapter", "1", "--outline-file",
                     str(ROOT / "examples" / "outline.txt"), "--mode", "bulk"),
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0 and "--mode" in out.stderr and "Traceback" not in out.stderr
    assert r.zcard(C.KEY_JOB_INDEX) == 0
    assert Path(ROOT / "examples" / "face.png").exists()
