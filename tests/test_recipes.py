"""Recipes (users' own kinds from files) and a job kind added as the README says,
on real workers, counted at the simulator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.templates import TemplateProblem, render
from producer.recipes import check_recipe, submit_recipe
from producer.views import output_records
from tests.conftest import ROOT, Workers, genfleet_cmd
from tests.echo_kind import submit_echo

RECIPES = ROOT / "examples" / "recipes"
BLURBS = RECIPES / "product-blurbs.yaml"
PRODUCTS = RECIPES / "products.jsonl"


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(genfleet_cmd(*args), env=env, capture_output=True, text=True,
                          timeout=180, cwd=ROOT)  # fmt: skip


def _jsonl(env: dict, job_id: str) -> list[dict]:
    out = _run(env, "results", job_id, "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_recipe_rows_run_their_graph_and_results_are_one_line_a_row(
    sim, workers: Workers, env
) -> None:
    workers.start(concurrency=8)
    out = _run(env, "submit", "recipe", str(BLURBS), "--input", str(PRODUCTS), "--wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.splitlines()[0]
    assert job_id.startswith("product-blurbs-")
    assert "succeeded" in out.stdout
    assert sim.stats()["by_status"] == {"200": 3 * (1 + 3)}  # facts + 3 blurbs a row
    lines = _jsonl(env, job_id)
    assert [line["row"] for line in lines] == [1, 2, 3]
    products = [json.loads(x) for x in PRODUCTS.read_text().splitlines()]
    for line, product in zip(lines, products, strict=True):
        assert line["input"] == product and line["errors"] == {}
        assert len(line["outputs"]["facts"]["points"]) >= 3  # the schema's minItems
        blurbs = line["outputs"]["blurb"]
        assert len(blurbs) == 3 and len(set(blurbs)) == 3  # versions are distinct
    jobs = _run(env, "jobs")
    assert f"{job_id:<28} product-blurbs" in jobs.stdout


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_failed_stage_skips_its_dependants_and_resume_reruns_only_those(
    sim, workers: Workers, env, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("product,audience\nlamp,hikers\nBROKEN kettle,cooks\n", encoding="utf-8")
    sim.configure(fail_patterns={"BROKEN": 400})
    workers.start(concurrency=8)
    handle = submit_recipe(BLURBS, rows)
    view = handle.wait(timeout=120, progress=False)
    assert view.status == C.STATUS_PARTIAL
    assert sim.stats()["by_status"] == {"200": 4, "400": 1}  # row 2's blurbs never called
    skipped = [view.failed[f"r2.blurb.v{v}"] for v in (1, 2, 3)]
    assert all(s.error_type == "StepSkipped" and "needs r2.facts" in (s.error or "")
               for s in skipped)  # fmt: skip
    line = _jsonl(env, handle.id)[1]
    assert line["outputs"] == {} and set(line["errors"]) == {"facts", "blurb"}
    assert "400" in line["errors"]["facts"] and "v1: needs r2.facts" in line["errors"]["blurb"]
    stages = view.metrics.extra["recipe"]["stages"]
    assert stages["blurb"] == {"ok": 3, "failed": 0, "skipped": 3}

    sim.configure(fail_patterns={})
    sim.reset()
    out = _run(env, "resume", handle.id, "--wait")
    assert out.returncode == 0, out.stderr
    assert "re-submitted 4 step(s): r2.facts, r2.blurb.v1, r2.blurb.v2, r2.blurb.v3" in out.stdout
    assert sim.stats()["by_status"] == {"200": 4}  # only what was missing
    view = handle.view()
    assert view.status == C.STATUS_SUCCEEDED and len(view.ok) == 8


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_persona_recipe_runs_its_graph(sim, workers: Workers, env) -> None:
    sim.configure(latency_ms=300)
    workers.start(concurrency=8)
    handle = submit_recipe(RECIPES / "persona.yaml", RECIPES / "faces.jsonl")
    view = handle.wait(timeout=120, progress=False)
    assert view.status == C.STATUS_SUCCEEDED, view.error
    assert sim.stats()["by_status"] == {"200": 7}
    ok = view.ok
    for stage, needs in {"strategy": ["core"], "examples": ["core", "strategy"],
                         "social": ["core"], "book": ["core"]}.items():  # fmt: skip
        for need in needs:  # a stage starts only after what it needs
            assert ok[f"r1.{stage}"].started_at >= ok[f"r1.{need}"].finished_at
    # the four side stages do not wait for strategy: they start before examples does
    assert all(ok[f"r1.{s}"].started_at < ok["r1.examples"].started_at
               for s in ("social", "authenticity", "visual", "book"))  # fmt: skip
    out = _run(env, "results", handle.id, "--format", "jsonl")
    assert len(json.loads(out.stdout)["outputs"]["examples"]["tweets"]) == 8


@pytest.mark.parametrize(
    ("recipe", "rows", "needle"),
    [
        (
            "name: t\ninputs: [a]\nstages:\n  - {name: s, prompt: '{{ b }}'}\n",
            '{"a": 1}',
            "rows.jsonl: row 1: stage s: prompt: 'b' is undefined",
        ),
        (
            "name: t\ninputs: [a]\nstages:\n  - {name: s, prompt: x, needs: [s2]}\n"
            "  - {name: s2, prompt: y, needs: [s]}\n",
            '{"a": 1}',
            "recipe.yaml: the stages form a cycle: s -> s2 -> s",
        ),
        (
            "name: t\ninputs: [a]\nstages:\n  - {name: s, prompt: x, schema: {type: objekt}}\n",
            '{"a": 1}',
            "recipe.yaml: stage s: schema: not a valid JSON schema",
        ),
        (
            "name: t\ninputs: [a]\nstages:\n  - {name: s, prompt: '{{ a }}'}\n",
            '{"a": 1}\n{"b": 2}',
            "rows.jsonl: row 2: missing input field 'a'",
        ),
        (
            "name: t\ninputs: [a]\nstages:\n  - {name: s, prompt: '{{ a.__class__ }}'}\n",
            '{"a": 1}',
            "rows.jsonl: row 1: stage s: prompt: refused by the template sandbox",
        ),
        (
            "name: t\ninputs: [a]\nstages:\n  - {name: s, prompt: x, needs: [nope]}\n",
            '{"a": 1}',
            "stage 's' needs 'nope', which is no stage",
        ),
        (
            "name: t\ninputs: [a]\nstages:\n  - {name: s, prompt: x, image: '{{ a }}'}\n",
            '{"a": "missing.png"}',
            "rows.jsonl: row 1: stage s: image:",
        ),
    ],
)
def test_bad_recipe_or_row_is_one_line_and_enqueues_nothing(
    env, r: redis.Redis, tmp_path: Path, recipe: str, rows: str, needle: str
) -> None:
    (tmp_path / "recipe.yaml").write_text(recipe, encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text(rows + "\n", encoding="utf-8")
    for command in ("submit", "recipe"), ("recipe", "check"):
        out = subprocess.run(
            genfleet_cmd(*command, "recipe.yaml", "--input", "rows.jsonl"),
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert r.keys("genfleet:*") == [] and r.llen(C.QUEUE_LLM) == 0  # nothing enqueued


def test_recipe_check_prints_the_graph_and_enqueues_nothing(env, r: redis.Redis) -> None:
    text = check_recipe(RECIPES / "persona.yaml", RECIPES / "faces.jsonl")
    assert "7 steps (7 per row)" in text
    assert "critical path: core -> strategy -> examples (3 call(s) a row)" in text
    assert "estimated tokens: about" in text
    assert r.keys("*") == []


def test_hostile_templates_stay_in_the_sandbox() -> None:
    row = {"a": "<script>alert(1)</script>", "b": "{{ 7 * 7 }}", "n": [1, 2]}
    # data is data: markup passes as text, a row's own braces are never rendered
    assert render("{{ a }} {{ b }}", row) == "<script>alert(1)</script> {{ 7 * 7 }}"
    hostile = [
        "{{ a.__class__.__mro__ }}", "{{ n|attr('__class__') }}", "{{ n.append(3) }}",
        "{{ 'x' * 100000000 }}", "{{ 'x'.ljust(1000000000) }}", "{{ 'x'|center(999999999) }}",
        "{{ range(10**9)|list }}", "{{ 9 ** 99999 }}", "{{ lipsum(99999) }}",
        "{% for i in n %}{% for j in n %}{% endfor %}{% endfor %}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{% include 'x' %}",
        "{{ config }}", "{{ cycler }}",
    ]  # fmt: skip
    for template in hostile:
        with pytest.raises(TemplateProblem):
            render(template, row)
    assert row["n"] == [1, 2]


def test_python_submit_checks_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="rows: no rows"):
        submit_recipe(BLURBS, [])
    with pytest.raises(InputError, match="row 1: a row is an object"):
        submit_recipe(BLURBS, ["not a dict"])


def test_a_kind_added_as_the_readme_says(sim, workers: Workers) -> None:
    workers.start(concurrency=4, extra=("-I", "tests.echo_kind"))
    handle = submit_echo(["alpha", "beta", "gamma"])
    view = handle.wait(timeout=60, progress=False)
    assert view.status == C.STATUS_SUCCEEDED
    assert sim.stats()["by_status"] == {"200": 3}
    assert [rec["word"] for rec in output_records(view)] == ["alpha", "beta", "gamma"]
    assert view.metrics.extra["echo"] == {"words": 3, "echoed": 3}
