"""Money on real workers: cost per step, job, key and model; budgets; prices.

Costs are checked against the tokens the simulator itself counted (its ``/stats``),
priced with the built-in table: genfleet's own counters are what is under test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from genfleet import constants as C
from genfleet.errors import InputError
from genfleet.prices import BUILTIN_PRICES, Price
from producer import resume, submit_chapter
from tests.conftest import ROOT, Workers, genfleet_cmd, wait_for

OUTLINE = "A cartographer maps a city that rearranges itself every night."
MINI = BUILTIN_PRICES["gpt-4o-mini"]


def _billed(stats: dict, price: Price = MINI) -> float:
    """What the simulator's own token counts cost."""
    return price.cost(stats["prompt_tokens"], stats["completion_tokens"])


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_cost_per_step_job_key_and_model(sim, workers: Workers, env) -> None:
    workers.start(concurrency=3)
    handle = submit_chapter("cost", 1, OUTLINE, versions=3)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == "succeeded"
    billed = _billed(sim.stats())
    assert billed > 0
    assert view.metrics is not None
    assert view.metrics.cost_usd == pytest.approx(billed, rel=1e-6)
    steps = handle.results()
    assert sum(s["cost_usd"] for s in steps) == pytest.approx(billed, rel=1e-6)
    for s in steps:
        assert s["cost_usd"] == pytest.approx(MINI.cost(s["tokens_in"], s["tokens_out"]))

    from producer.client import connect
    from producer.clusterstats import gather
    from producer.metrics import registry_for

    client = connect()

    def key_cost() -> float:
        stats = gather(client.settings, client.store.r, client.app, timeout_s=0.5)
        key = next(k for k in stats.keys if k.key_id == "key1")
        return key.costs.get("gpt-4o-mini") or 0.0

    # A key's counters are written at most KEY_STATS_FLUSH_S after its last call.
    wait_for(lambda: key_cost() == pytest.approx(billed, rel=1e-6), 10, "the key's cost")
    text = generate_latest(registry_for(client.settings, client.store.r, client.app)).decode()
    line = next(x for x in text.splitlines() if x.startswith("genfleet_llm_cost_usd_total{"))
    assert 'key_id="key1"' in line and 'model="gpt-4o-mini"' in line
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(billed, rel=1e-6)

    status = subprocess.run(
        genfleet_cmd("status", handle.id), env=env, capture_output=True, text=True, timeout=30
    )
    assert f"cost ${billed:.4f}" in status.stdout


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_a_model_without_a_price_costs_unknown_not_zero(
    sim, workers: Workers, env, monkeypatch
) -> None:
    monkeypatch.setenv("LLM_MODEL", "house-model-7")
    env["LLM_MODEL"] = "house-model-7"
    workers.start()
    handle = submit_chapter("cost", 2, OUTLINE, versions=2)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == "succeeded"  # the model ran; only its price is unknown
    assert sim.stats()["by_status"] == {"200": 2}
    assert view.metrics is not None and view.metrics.cost_usd is None
    assert all(s["cost_usd"] is None for s in handle.results())
    status = subprocess.run(
        genfleet_cmd("status", handle.id), env=env, capture_output=True, text=True, timeout=30
    )
    assert "cost unknown" in status.stdout and "$0.0000" not in status.stdout


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_prices_file_overrides_the_built_in_price(
    sim, workers: Workers, tmp_path: Path, monkeypatch
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."gpt-4o-mini"]\ninput = 100.0\noutput = 1000.0\n')
    workers.start(GENFLEET_PRICES=str(prices))
    view = submit_chapter("cost", 3, OUTLINE, versions=1).wait(timeout=60, progress=False)
    assert view.metrics is not None
    assert view.metrics.cost_usd == pytest.approx(
        _billed(sim.stats(), Price(100.0, 1000.0)), rel=1e-6
    )


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_a_budget_stops_the_job_and_resume_goes_on(sim, workers: Workers, env) -> None:
    # Each call reserves prompt + max_tokens (1024) at gpt-4o-mini's price, about
    # $0.00065, and is billed about $0.00013: a $0.0016 budget admits a few calls only.
    sim.configure(latency_ms=50)
    workers.start(concurrency=2)
    handle = submit_chapter("budget", 1, OUTLINE, versions=10, max_cost_usd=0.0016)
    view = handle.wait(timeout=60, progress=False)
    assert view.status == "partial"
    called = sim.stats()["by_status"]["200"]
    assert 1 <= called < 10
    assert len(view.ok) == called
    stopped = [r for r in view.failed.values() if r.error_type == C.STEP_BUDGET_EXCEEDED]
    assert len(stopped) == 10 - called and all(r.attempts == 0 for r in stopped)
    spent = _billed(sim.stats())
    assert spent <= 0.0016  # never over: reservations are worst cases
    assert view.error is not None
    assert f"genfleet resume {handle.id} --max-cost USD" in view.error
    assert f"${spent:.4f} spent" in view.error

    with pytest.raises(InputError, match="not above"):
        resume(handle.id, max_cost_usd=spent / 2)
    _, steps = resume(handle.id, max_cost_usd=1.0)
    assert len(steps) == 10 - called
    view = handle.wait(timeout=60, progress=False)
    assert view.status == "succeeded"
    assert sim.stats()["by_status"] == {"200": 10}  # nothing billed twice


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_the_days_budget_holds_for_every_worker(sim, workers: Workers) -> None:
    sim.configure(latency_ms=50)
    for n in range(2):
        workers.start(f"w{n}", concurrency=2, LLM_BUDGET_USD_PER_DAY="0.002")
    first = submit_chapter("day", 1, OUTLINE, versions=6)
    second = submit_chapter("day", 2, OUTLINE, versions=6)
    views = [h.wait(timeout=60, progress=False) for h in (first, second)]
    called = sim.stats()["by_status"]["200"]
    assert called < 12
    assert _billed(sim.stats()) <= 0.002
    assert all(v.status == "partial" or v.status == "succeeded" for v in views)
    errors = " ".join(v.error or "" for v in views)
    assert "LLM_BUDGET_USD_PER_DAY" in " ".join(
        r.error or "" for v in views for r in v.failed.values()
    )
    assert "was reached" in errors


def test_bad_spending_options_enqueue_nothing(env, r) -> None:
    with pytest.raises(InputError, match="max_cost_usd=-1"):
        submit_chapter("bad", 1, OUTLINE, max_cost_usd=-1)
    with pytest.raises(InputError, match="mode='cheap' is invalid"):
        submit_chapter("bad", 1, OUTLINE, mode="cheap")
    out = subprocess.run(
        genfleet_cmd("submit", "chapter", "--project", "p", "--chapter", "1", "--outline-file",
                     str(ROOT / "examples" / "outline.txt"), "--max-cost", "0"),
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0 and "--max-cost" in out.stderr and "Traceback" not in out.stderr
    assert r.zcard(C.KEY_JOB_INDEX) == 0


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_results_hold_the_cost(sim, workers: Workers, env) -> None:
    workers.start()
    handle = submit_chapter("cost", 4, OUTLINE, versions=1)
    handle.wait(timeout=60, progress=False)
    out = subprocess.run(
        genfleet_cmd("results", handle.id), env=env, capture_output=True, text=True, timeout=30
    )
    doc = json.loads(out.stdout)
    assert doc["metrics"]["cost_usd"] == pytest.approx(_billed(sim.stats()), rel=1e-6)
    assert doc["steps"][0]["cost_usd"] == pytest.approx(doc["metrics"]["cost_usd"], rel=1e-6)


def test_a_providers_own_prices_and_auto_limits(tmp_path: Path, monkeypatch) -> None:
    from genfleet.prices import load_prices
    from workers.keypool import keys_from_file

    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[[provider]]\nname = "house"\nbase_url = "https://llm.house.test/v1"\n'
        'keys = ["k-1"]\nrpm = "auto"\ntpm = 50000\n'
        '[provider.prices."house-model-7"]\ninput = 0.3\noutput = 1.2\nbatch_discount = 0.4\n'
        '[provider.prices."gpt-4o-mini"]\ninput = 1.0\noutput = 2.0\n'
    )
    table = load_prices(None, providers)
    house = "https://llm.house.test/v1"
    assert table.cost("house-model-7", 1_000_000, 0, provider=house) == pytest.approx(0.3)
    assert table.cost("house-model-7", 0, 1_000_000, provider=house, batch=True) == (
        pytest.approx(1.2 * 0.6)
    )
    assert table.price("gpt-4o-mini", house) == Price(1.0, 2.0)  # the provider's own
    assert table.price("gpt-4o-mini-2024-07-18", "https://other.test/v1") == MINI
    assert table.cost("house-model-7", 10, 10, provider="https://other.test/v1") is None
    (key,) = keys_from_file(providers, 60.0)
    assert key.limits.auto_rpm and not key.limits.auto_tpm and key.limits.tpm == 50_000


def test_a_bad_prices_file_is_one_line(tmp_path: Path) -> None:
    from genfleet.errors import SettingsError
    from genfleet.prices import load_prices

    bad = tmp_path / "prices.toml"
    bad.write_text('[models."gpt-4o"]\ninput = -1\noutput = 2\n')
    with pytest.raises(SettingsError, match=r"^GENFLEET_PRICES=.*models\.gpt-4o\.input") as e:
        load_prices(bad, None)
    assert "\n" not in str(e.value)
    with pytest.raises(SettingsError, match="no such file"):
        load_prices(tmp_path / "missing.toml", None)
