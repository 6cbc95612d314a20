"""Benchmark: 3 chapter versions serial vs parallel vs a single version.

One run against the built-in simulator (fixed latency, no jitter), one LLM worker
subprocess, Redis from REDIS_URL or the embedded one. Wall time is measured by the
producer, from submit until the job's final status is stored.

    python bench/chapter_versions.py [--latency-ms 2000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genfleet.connection import stop_owned_redis, use_redis  # noqa: E402
from genfleet.settings import load_settings  # noqa: E402
from producer.api import submit_chapter  # noqa: E402
from producer.processes import start_worker  # noqa: E402
from simulator.process import SimulatorProcess  # noqa: E402

OUTLINE = "The cartographer draws a bridge across the gorge and crosses it at dawn."


def timed_job(versions: int, parallel: bool) -> float:
    settings = load_settings(writer_parallel_generation=parallel)
    started = time.perf_counter()
    view = submit_chapter("bench", 1, OUTLINE, versions, settings=settings).wait(progress=False)
    wall = time.perf_counter() - started
    if view.status != "succeeded":
        raise SystemExit(f"bench job {view.id} ended {view.status}: {view.error}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("GENFLEET_HOME", tempfile.mkdtemp(prefix="genfleet-bench-"))
    settings = load_settings()
    try:
        url = use_redis(settings)
        with SimulatorProcess(latency_ms=args.latency_ms) as sim:
            env = {**os.environ, "REDIS_URL": url, "OPENAI_BASE_URL": sim.base_url,
                   "OPENAI_API_KEY": "bench-key"}  # fmt: skip
            os.environ.update(env)
            log = settings.genfleet_home / "logs" / "bench-worker.log"
            worker = start_worker(["llm", "control"], concurrency=4, pool="threads",
                                  name="bench", env=env, log_path=log)  # fmt: skip
            try:
                timed_job(1, True)  # warm-up: connections, imports
                rows = {
                    "1 version": [timed_job(1, True) for _ in range(args.repeat)],
                    "3 versions, serial": [timed_job(3, False) for _ in range(args.repeat)],
                    "3 versions, parallel": [timed_job(3, True) for _ in range(args.repeat)],
                }
            finally:
                worker.stop()
    finally:
        stop_owned_redis()
    single = statistics.median(rows["1 version"])
    print(f"simulator latency {args.latency_ms} ms per call, median of {args.repeat} runs\n")
    print("| run | wall time (s) | vs 1 version |")
    print("|---|---:|---:|")
    for name, times in rows.items():
        wall = statistics.median(times)
        print(f"| {name} | {wall:.2f} | {wall / single:.2f}x |")
    serial = statistics.median(rows["3 versions, serial"])
    parallel = statistics.median(rows["3 versions, parallel"])
    print(f"\nserial / parallel: {serial / parallel:.2f}x; "
          f"parallel / 1 version: {parallel / single:.2f}x (target <= 1.15x)")  # fmt: skip


if __name__ == "__main__":
    main()
