"""Benchmark: 10,000 tweet steps submitted at once (100 personas x 100 days).

Measures the producer's enqueue rate with no worker running (nothing competes for
the CPU), Redis memory with everything queued, then two workers (2 x 8 threads) work
the job off against the simulator with no latency: completion time and peak memory.

    python bench/scale.py [--steps-per-persona 100] [--personas 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import redis
from celery import group

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cluster  # noqa: E402
from genfleet import constants as C  # noqa: E402
from producer.client import connect  # noqa: E402
from producer.pipelines import submit_tweets  # noqa: E402
from producer.processes import start_worker  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _mib(client: redis.Redis) -> float:
    return float(client.info("memory")["used_memory"]) / 2**20


def plain_group(steps: int) -> tuple[float, float]:
    """Seconds and MiB of Redis to enqueue a plain Celery group of ``steps`` tasks with
    the same ids-only arguments (no job record, no chord): the floor for genfleet."""
    with cluster({"latency_ms": 0}, []) as c:
        client = redis.Redis.from_url(c.redis_url)
        app = connect().app
        before = _mib(client)
        started = time.perf_counter()
        group(
            app.signature(C.TASK_TWEET, args=(f"plain-{n // 100}", f"p1.{n}", n), immutable=True)
            for n in range(steps)
        ).apply_async()
        took = time.perf_counter() - started
        used = _mib(client) - before
        client.close()
    return took, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=100)
    parser.add_argument("--steps-per-persona", type=int, default=100)
    args = parser.parse_args()
    persona = json.loads((EXAMPLES / "personas" / "mika.json").read_text())
    days = {(dt.date(2021, 1, 1) + dt.timedelta(days=n)).isoformat(): {"theme": f"day {n}"}
            for n in range(args.steps_per_persona)}  # fmt: skip
    steps = args.personas * args.steps_per_persona
    plain_s, plain_mib = plain_group(steps)
    with cluster({"latency_ms": 0}, []) as c:
        client = redis.Redis.from_url(c.redis_url)
        idle_mib = _mib(client)
        started = time.perf_counter()
        handle = submit_tweets([persona] * args.personas, {"calendar": days},
                               args.steps_per_persona)  # fmt: skip
        enqueue_s = time.perf_counter() - started
        queued_mib = _mib(client)
        env = dict(os.environ)
        for n in range(2):
            c.workers.append(start_worker(
                ["llm", "control"], concurrency=8, pool="threads", name=f"scale{n}", env=env,
                log_path=c.home / f"scale{n}.log", loglevel="WARNING",
            ))  # fmt: skip
        work_started, peak = time.perf_counter(), queued_mib
        while handle.status() not in ("succeeded", "partial", "failed"):
            peak = max(peak, _mib(client))
            time.sleep(0.5)
        work_s = time.perf_counter() - work_started
        view = handle.view()
        done_mib = _mib(client)
        client.close()
    print(f"\n### {steps:,} tweet steps submitted at once ({args.personas} personas x "
          f"{args.steps_per_persona} days), simulator latency 0\n")  # fmt: skip
    print("| measure | value |")
    print("|---|---:|")
    print(f"| enqueue time (no worker running) | {enqueue_s:.1f} s |")
    print(f"| producer enqueue rate | {steps / enqueue_s:,.0f} steps/s |")
    print(
        f"| plain Celery group of {steps:,} tasks: enqueue rate | "
        f"{steps / plain_s:,.0f} tasks/s (genfleet / plain: {plain_s / enqueue_s:.2f}) |"
    )
    print(f"| Redis memory: empty / all queued | {idle_mib:.1f} / {queued_mib:.1f} MiB |")
    ours_mib = queued_mib - idle_mib
    print(
        f"| Redis memory added: genfleet / plain group | {ours_mib:.1f} / {plain_mib:.1f} MiB "
        f"({ours_mib / plain_mib:.2f}x) |"
    )
    print(f"| Redis memory: peak while working / all done | {peak:.1f} / {done_mib:.1f} MiB |")
    rate = steps / work_s
    print(f"| 2 workers x 8 threads: time to finish | {work_s:.1f} s ({rate:.0f} steps/s) |")
    print(f"| steps ok / failed | {len(view.ok):,} / {len(view.failed)} |")


if __name__ == "__main__":
    main()
