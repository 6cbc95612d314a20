"""What an operator runs into: worker names, the version, the test command itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from producer.client import connect
from tests.conftest import ROOT, genfleet_cmd, wait_for


def test_version_is_the_installed_packages() -> None:
    out = subprocess.run(genfleet_cmd("--version"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"genfleet {version('genfleet')}"


def test_two_llm_workers_on_one_host_get_different_names(env, tmp_path: Path) -> None:
    procs = []
    try:
        for n in range(2):
            log = open(tmp_path / f"worker{n}.log", "wb")  # noqa: SIM115 (closed with the child)
            procs.append(subprocess.Popen(
                genfleet_cmd("worker", "llm", "-c", "1", "--loglevel", "WARNING"),
                env=env, stdout=log, stderr=log, start_new_session=True,
            ))  # fmt: skip
        app = connect().app

        def names() -> list[str]:
            return [name for reply in app.control.ping(timeout=1.0) for name in reply]

        found = wait_for(lambda: len(names()) >= 2 and names(), 60, "two workers answering")
        assert len(set(found)) == 2, found
        assert {n.split("@")[0] for n in found} == {f"llm-{p.pid}" for p in procs}
        logs = "".join((tmp_path / f"worker{n}.log").read_text() for n in range(2))
        assert "DuplicateNodenameWarning" not in logs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def test_the_test_command_passes_with_documented_variables_set(tmp_path: Path) -> None:
    """The README's `pytest` must pass whatever documented variables a user has set."""
    user_env = {
        "GENFLEET_HOME": str(tmp_path / "elsewhere"),
        "WRITER_CHAPTER_VERSION_COUNT": "7",
        "WRITER_PARALLEL_GENERATION": "false",
        "WRITER_MAX_PARALLEL_REQUESTS": "1",
        "LLM_MAX_RETRIES": "5",
        "MAX_CONCURRENT": "3",
        "LLM_MODEL": "someone-elses-model",
        "RESULT_TTL_S": "60",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_settings.py"],
        cwd=ROOT, env={**os.environ, **user_env}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
