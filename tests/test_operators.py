"""What an operator runs into: worker names, the version, the test command itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from producer.client import connect
from tests.conftest import ROOT, free_port, genfleet_cmd, wait_for


def test_version_is_the_installed_packages() -> None:
    out = subprocess.run(genfleet_cmd("--version"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"genfleet {version('genfleet')}"


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
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
        for proc in procs:  # the command became the worker: no parent interpreter waits
            args = Path(f"/proc/{proc.pid}/cmdline").read_text().split("\0")
            assert args[1:4] == ["-m", "celery", "-A"], args
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


OUTLINE_FILE = str(ROOT / "examples" / "outline.txt")


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_wait_says_when_no_worker_serves_the_queue_and_keeps_waiting(sim, workers, env) -> None:
    proc = subprocess.Popen(
        genfleet_cmd("submit", "chapter", "--project", "p", "--chapter", "1", "--versions", "2",
                     "--outline-file", OUTLINE_FILE, "--wait"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        job_id = proc.stdout.readline().strip()  # readable at once, through a pipe
        assert job_id.startswith("chapter-")
        for line in proc.stderr:
            if "warning" in line:
                break
        assert line.strip() == (
            "genfleet: warning: queue 'llm' has 2 message(s) waiting and no worker consumes "
            "it (start one: genfleet worker llm); still waiting"
        )
        assert proc.poll() is None  # still waiting
        workers.start()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert f"job {job_id} succeeded" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_exits_1_for_a_cancelled_job_as_submit_wait_does(env) -> None:
    submitted = subprocess.run(
        genfleet_cmd("submit", "chapter", "--project", "p", "--chapter", "1",
                     "--outline-file", OUTLINE_FILE),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    job_id = submitted.stdout.strip()
    cancel = subprocess.run(genfleet_cmd("cancel", job_id), env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert cancel.returncode == 0, cancel.stderr
    watched = subprocess.run(genfleet_cmd("watch", job_id), env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert watched.returncode == 1
    assert f"job {job_id} cancelled" in watched.stdout
    assert "v1: not run (job cancelled)" in watched.stdout
    assert "speed-up n/a (cancelled)" in watched.stdout


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_results_jsonl_has_a_line_per_item_and_per_failed_step(
    sim, workers, env, tmp_path: Path
) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_text("weather\nthe kitchen\n")
    sim.configure(fail_patterns={"the kitchen": 400})
    workers.start()
    submitted = subprocess.run(
        genfleet_cmd("submit", "batch", "--kind", "vocab", "--lang", "ja", "--levels", "3",
                     "--topics-file", str(topics), "--per-combo", "2", "--batch-size", "2",
                     "--wait"),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    out = tmp_path / "items.jsonl"
    done = subprocess.run(
        genfleet_cmd("results", job_id, "--format", "jsonl", "--out", str(out)),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    made = [r for r in records if r["ok"]]
    (failed,) = [r for r in records if not r["ok"]]
    assert len(made) == 2 and len(records) == 3
    assert {(r["topic"], r["level"], r["lang"], r["kind"]) for r in made} == {
        ("weather", 3, "ja", "vocab")
    }
    assert (failed["step_id"], failed["topic"], failed["level"]) == ("t2.L3.c1", "the kitchen", 3)
    assert "400" in failed["error"]
    assert done.stdout.strip() == (
        f"wrote 3 lines (2 results, 1 failed steps) of {job_id} to {out}"
    )


def test_simulate_help_lists_the_simulators_options() -> None:
    out = subprocess.run(genfleet_cmd("simulate", "--help"), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: genfleet simulate")
    for option in ("--latency-ms", "--rpm", "--tpm", "--error-rate", "/admin/config",
                   "fail_patterns", "OPENAI_BASE_URL"):  # fmt: skip
        assert option in out.stdout


def test_llm_worker_without_a_key_refuses_to_start(env) -> None:
    no_key = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    out = subprocess.run(genfleet_cmd("worker", "llm"), env=no_key, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "genfleet: OPENAI_API_KEY is not set: the LLM worker needs an API key "
        "(or OPENAI_API_KEYS, or GENFLEET_PROVIDERS)"
    ]


def test_the_readme_key_table_names_every_redis_key() -> None:
    from genfleet import constants as C

    def shape(key: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", key)

    section = (ROOT / "README.md").read_text().split("## Where results are (Redis keys)")[1]
    documented = [shape(k) for k in re.findall(r"`(genfleet:[^`]+)`", section.split("\n## ")[0])]
    keys = {name: shape(v) for name, v in vars(C).items()
            if name.startswith("KEY_") and name != "KEY_PREFIX"}  # fmt: skip
    missing = [n for n, k in keys.items() if not any(d.startswith(k) for d in documented)]
    assert missing == []


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_cache_reuses_answers_within_a_run_of_a_step_and_resume_asks_anew(sim, workers, r) -> None:
    from genfleet import constants as C
    from producer.pipelines import resume, submit_tweets

    sim.configure(garbage_patterns={"2026-03-01": "truncated"})  # every answer unusable
    workers.start()
    handle = submit_tweets(ROOT / "examples/personas/mika.json",
                           ROOT / "examples/calendars/mika.json", count=1)  # fmt: skip
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_FAILED
    (step_id,) = view.record.step_ids
    assert sim.stats()["by_status"] == {"200": 3}  # the answer and two re-asks, all paid
    # The same step run again in the same run of the job (as a redelivered task is):
    # the answers it paid for come from the cache, the provider is not called.
    connect().app.send_task(C.TASK_TWEET, args=(handle.id, step_id, 0))
    hits = C.KEY_STATS_JOB.format(job_id=handle.id)
    wait_for(lambda: r.hget(hits, "cache_hits") == "3", 60, "three answers from the cache")
    assert sim.stats()["by_status"] == {"200": 3}
    # genfleet resume is a new run: the step asks anew and gets a fresh answer.
    sim.configure(garbage_patterns={})
    resume(handle.id)
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["by_status"] == {"200": 4}


def test_every_third_party_import_is_declared_in_pyproject() -> None:
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
    declared = {re.split(r"[\[<>=!~ ]", d)[0].lower().replace("_", "-") for d in wanted}
    dists = packages_distributions()
    imported: set[str] = set()
    for package in ("genfleet", "workers", "producer", "simulator"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split(".")[0])
    undeclared = sorted(
        module for module in imported - {"genfleet", "workers", "producer", "simulator"}
        if module in dists
        and not {d.lower().replace("_", "-") for d in dists[module]} & declared
    )  # fmt: skip
    assert undeclared == [], undeclared


def _bad_files(tmp_path: Path) -> dict[str, str]:
    prompts = tmp_path / "prompts.json"
    prompts.write_text('{"prompt": "a cat on a roof"}')
    persona = tmp_path / "persona.json"
    persona.write_text('{"name": "Ken", "core": {"age": ' + "7" * 5000 + "}}")
    return {"PROMPTS": str(prompts), "PERSONA": str(persona)}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("submit", "tweets", "--persona", "examples/personas/mika.json", "--calendar",
          "examples/calendars/mika.json", "--count", "20"),
         "count=20 but the calendar of "),
        (("submit", "images", "--prompts-file", "PROMPTS"), "must be a list of texts"),
        (("submit", "tweets", "--persona", "PERSONA", "--calendar",
          "examples/calendars/mika.json"), "a number in it is too long"),
    ],
)  # fmt: skip
@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_silent_surprises_are_one_line_refusals(env, r, tmp_path: Path, args, needle) -> None:
    files = _bad_files(tmp_path)
    argv = [files.get(a, a) for a in args]
    out = subprocess.run(genfleet_cmd(*argv), env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert r.llen("llm") == 0 and r.zcard("genfleet:jobs") == 0  # nothing enqueued


def test_plain_celery_without_redis_url_says_which_redis_it_uses(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GENFLEET_"))}
    env.update({"GENFLEET_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    out = subprocess.run([sys.executable, "-c", "import celeryconfig"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "REDIS_URL is not set and no embedded Redis runs under" in out.stderr
    assert "redis://127.0.0.1:6379/0" in out.stderr


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_image_job_status_shows_pictures_not_zero_tokens(workers, env) -> None:
    from producer.images import submit_images

    workers.start("img", queues=("images", "control"), concurrency=1)
    handle = submit_images(["a lighthouse at dusk"])
    assert handle.wait(timeout=60, progress=False).status == "succeeded"
    out = subprocess.run(genfleet_cmd("status", handle.id), env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "tokens" not in out.stdout and "LLM calls" not in out.stdout
    assert f"{handle.id}/0000-img1.png" in out.stdout


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_metrics_starts_while_redis_is_down_and_reports_it(env, tmp_path: Path) -> None:
    import urllib.request

    port = free_port()
    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens
    log = tmp_path / "metrics.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(genfleet_cmd("metrics", "--port", str(port)), env=down,
                                stdout=out, stderr=out)  # fmt: skip
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def scrape() -> str:
            assert proc.poll() is None, log.read_text()
            try:
                with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    return response.read().decode()
            except OSError:
                return ""

        text = wait_for(scrape, 60, "the exporter answering")
        assert "genfleet_redis_up 0.0" in text
        assert "warning" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_structured_steps_record_the_key_they_used(sim, workers) -> None:
    from producer.pipelines import submit_batch, submit_tweets

    workers.start()
    tweets = submit_tweets(ROOT / "examples/personas/mika.json",
                           ROOT / "examples/calendars/mika.json", count=2)  # fmt: skip
    batch = submit_batch("vocab", "ja", [3], ["weather"], per_combo=2, batch_size=2)
    for handle in (tweets, batch):
        assert handle.wait(timeout=60, progress=False).status == "succeeded"
        assert [r["meta"]["key_id"] for r in handle.results()] == ["key1"] * len(handle.results())
