"""Benchmark: the same 1,000-call job online and through the provider's Batch API.

A tweets job of 1,000 calendar days (one call each) runs twice against the built-in
simulator, on a private embedded Redis with 2 LLM workers x 8 threads: once with
``mode="online"`` (200 ms per call) and once with ``mode="batch"`` (the simulator
answers a batch ``--batch-seconds`` after it was created; ``LLM_BATCH_POLL_S=2``).
Calls are counted at the simulator; the cost is the job's own figure (built-in
gpt-4o-mini prices, batch discount 50%). Goal: batch cost <= 0.55 x online.

    python bench/spend.py [--days 1000] [--batch-seconds 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import WorkerSpec, cluster  # noqa: E402
from genfleet.prices import format_usd  # noqa: E402
from producer.pipelines import submit_tweets  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKERS = [WorkerSpec(f"spend{n}", 8, env={"LLM_BATCH_POLL_S": "2"}) for n in range(2)]


def run(mode: str, days: int, batch_seconds: float) -> dict[str, object]:
    persona = json.loads((EXAMPLES / "personas" / "mika.json").read_text())
    calendar = {(dt.date(2024, 1, 1) + dt.timedelta(days=n)).isoformat(): {"theme": f"day {n}"}
                for n in range(days)}  # fmt: skip
    sim = {"latency_ms": 200, "batch_seconds": batch_seconds}
    with cluster(sim, WORKERS) as c:
        started = time.perf_counter()
        handle = submit_tweets(persona, {"calendar": calendar}, days, mode=mode)
        view = handle.wait(timeout=3600, progress=False)
        wall = time.perf_counter() - started
        stats = c.sim.stats()
        batches = len(handle.batches())
    online_calls = stats["by_path"].get("/v1/chat/completions", 0)
    return {
        "mode": mode, "status": view.status, "ok": len(view.ok),
        "calls": online_calls + stats["batch_lines"], "online": online_calls,
        "batch_lines": stats["batch_lines"], "batches": batches,
        "cost": view.metrics.cost_usd if view.metrics else None, "wall": wall,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1000, help="calls in the job (max 1000)")
    parser.add_argument("--batch-seconds", type=float, default=20.0,
                        help="the simulator's batch completion delay")  # fmt: skip
    opts = parser.parse_args()
    rows = [run("online", opts.days, opts.batch_seconds),
            run("batch", opts.days, opts.batch_seconds)]  # fmt: skip
    print(f"\n### One tweets job of {opts.days} calls, online and in batch mode\n")
    print("| mode | status | steps ok | calls at the provider | batches | cost | wall (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cost = r["cost"] if isinstance(r["cost"], float) else None
        print(f"| {r['mode']} | {r['status']} | {r['ok']} | {r['calls']} "
              f"(online {r['online']}, batch lines {r['batch_lines']}) | {r['batches']} | "
              f"{format_usd(cost)} | {r['wall']:.1f} |")  # fmt: skip
    online, batch = rows[0]["cost"], rows[1]["cost"]
    if isinstance(online, float) and isinstance(batch, float) and online:
        print(f"\nbatch cost / online cost: {batch / online:.2f} (goal <= 0.55)")


if __name__ == "__main__":
    main()
