"""Benchmark: ``LLM_RPM_LIMIT=auto`` and ``LLM_TPM_LIMIT=auto`` against a capped simulator.

The workers are told nothing about the caps: they learn them from the simulator's
``x-ratelimit-*`` headers. Two runs, 3 LLM workers on a private embedded Redis:

1. the simulator caps the key at 600 requests/min; short requests;
2. the simulator caps it at a tokens-per-minute limit; long Chinese prompts with
   ``max_tokens`` well above what the simulator charges (genfleet must learn from the
   remaining-tokens header that the provider counts differently from its estimate).

Figures come from the simulator's own log of calls (arrival time, status): the
share of the cap used and the 429s in the minutes after the first (the first minute
is when the limits are learned).

    python bench/auto_limits.py [--minutes 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.celery_tasks import DONE_KEY  # noqa: E402
from bench.rate_limits import CHINESE_PROMPT, SHORT_PROMPT, Cluster  # noqa: E402
from simulator.process import SimulatorProcess  # noqa: E402

OUTPUT_TOKENS = 100  # what the simulator writes (and charges) per answer


def scenario(sim_opts: dict[str, Any], env: dict[str, str], prompt: str, max_tokens: int,
             minutes: float) -> dict[str, float]:  # fmt: skip
    """Keep the workers saturated for ``minutes``; measure after the first minute."""
    with (
        tempfile.TemporaryDirectory(prefix="genfleet-bench-") as tmp,
        SimulatorProcess(latency_ms=100, output_tokens=OUTPUT_TOKENS, **sim_opts) as sim,
    ):
        cluster = Cluster(Path(tmp), sim, env, threads=8)
        try:
            started = time.time()
            n, sent = 0, 0
            with cluster.app.producer_or_acquire() as producer:
                while time.time() - started < minutes * 60:
                    while sent - int(cluster.r.get(DONE_KEY) or 0) < 200:  # keep a backlog
                        cluster.app.send_task("bench.gateway_call", args=(prompt, max_tokens, n),
                                              queue="llm", producer=producer)  # fmt: skip
                        n, sent = n + 1, sent + 1
                    time.sleep(0.5)
            stats = sim.stats()
        finally:
            cluster.close()
    calls = [(t, status) for t, status, _ in stats["recent"] if t >= started + 60]
    span_min = (minutes * 60 - 60) / 60
    ok = sum(1 for _, s in calls if s == "200")
    per_call = stats["prompt_tokens"] / max(1, stats["by_status"].get("200", 1)) + min(
        max_tokens, OUTPUT_TOKENS
    )
    return {
        "ok_per_min": ok / span_min,
        "tokens_per_min": ok * per_call / span_min,
        "late_429": sum(1 for _, s in calls if s == "429"),
        "first_min_429": sum(1 for t, s, _ in stats["recent"] if s == "429" and t < started + 60),
        "per_call": per_call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each run")
    opts = parser.parse_args()
    rpm = 600
    env = {"LLM_RPM_LIMIT": "auto", "LLM_MAX_CONCURRENT": "32"}
    a = scenario({"rpm": rpm}, env, SHORT_PROMPT, 16, opts.minutes)
    print(f"rpm run: {a}", file=sys.stderr)
    tpm = 120_000
    env = {"LLM_TPM_LIMIT": "auto", "LLM_MAX_CONCURRENT": "32"}
    b = scenario({"tpm": tpm}, env, CHINESE_PROMPT, 400, opts.minutes)
    print(f"\n### Limits learned from the headers, {opts.minutes:g} minutes each, 3 workers\n")
    print("| cap (simulator) | genfleet setting | used after minute 1 | share of the cap | "
          "429s in minute 1 | 429s after minute 1 |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    print(
        f"| {rpm} requests/min | LLM_RPM_LIMIT=auto | {a['ok_per_min']:.0f} req/min | "
        f"{a['ok_per_min'] / rpm:.0%} | {a['first_min_429']:.0f} | {a['late_429']:.0f} |"
    )
    print(
        f"| {tpm} tokens/min, Chinese prompts (~{b['per_call']:.0f} tokens charged, "
        f"max_tokens 400) | LLM_TPM_LIMIT=auto | {b['tokens_per_min']:.0f} tokens/min | "
        f"{b['tokens_per_min'] / tpm:.0%} | {b['first_min_429']:.0f} | {b['late_429']:.0f} |"
    )


if __name__ == "__main__":
    main()
