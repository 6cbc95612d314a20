"""Benchmark: cluster-wide limits of the gateway vs Celery's per-worker rate_limit.

One run, three tables, all against the built-in simulator, with 3 LLM worker
processes on a private embedded Redis (REDIS_URL is ignored, nothing else is touched):

1. The simulator caps the key at 600 requests/min; 1,000 short requests through
   (a) this gateway with LLM_RPM_LIMIT=600, (b) Celery's rate_limit="600/m" on a task
   that calls the SDK directly (retrying 429s after Retry-After), (c) rate_limit="200/m"
   (the limit split by hand over 3 workers).
2. No cap, 500 ms latency, LLM_MAX_CONCURRENT=64, 2,000 requests: the gateway through
   Celery vs a plain asyncio + semaphore script in one process (the seeds' approach),
   with CPU seconds per 1,000 calls (workers, Redis and producer for genfleet).
3. A tokens-per-minute cap with long Chinese prompts through the gateway.

    python bench/rate_limits.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import psutil
import redis
from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.celery_tasks import DONE_KEY, SEEN_429_KEY  # noqa: E402
from genfleet.embedded import EmbeddedRedis  # noqa: E402
from genfleet.tokens import estimate_messages_tokens  # noqa: E402
from producer.processes import ChildProcess, start_worker  # noqa: E402
from simulator.process import SimulatorProcess  # noqa: E402

SHORT_PROMPT = "Write one short line about the sea."
CHINESE_PROMPT = (
    "请根据以下大纲写一段小说的开头。" + "少年在山中醒来，看见一只白鹤从云里飞下。" * 60
)
WORKERS = 3


@dataclass
class Run:
    name: str
    requests: int
    wall_s: float
    rate_limited: int
    cpu_s: float = 0.0
    tokens: int = 0

    @property
    def per_min(self) -> float:
        return self.requests / self.wall_s * 60


class Cluster:
    """A private Redis, the simulator and 3 worker processes for one scenario."""

    def __init__(
        self, home: Path, sim: SimulatorProcess, env: dict[str, str], threads: int,
        worker_args: tuple[str, ...] = (),
    ):  # fmt: skip
        self.redis_server = EmbeddedRedis(home)
        self.url = self.redis_server.start()
        self.r = redis.Redis.from_url(self.url, decode_responses=True)
        self.env = {**os.environ, **env, "REDIS_URL": self.url, "OPENAI_BASE_URL": sim.base_url,
                    "OPENAI_API_KEY": "bench-key-0001", "GENFLEET_HOME": str(home)}  # fmt: skip
        self.workers: list[ChildProcess] = []
        try:
            for n in range(WORKERS):
                self.workers.append(start_worker(
                    ["llm"], concurrency=threads, pool="threads", name=f"bench{n}",
                    env=self.env, log_path=home / f"worker{n}.log", loglevel="WARNING",
                    extra=["-I", "bench.celery_tasks", *worker_args],
                ))  # fmt: skip
        except BaseException:
            self.close()  # a worker that cannot start must not leave Redis running
            raise
        # A fresh app per scenario: each scenario has its own Redis.
        self.app = Celery("genfleet-bench")
        self.app.config_from_object("celeryconfig")
        self.app.conf.update(broker_url=self.url, result_backend=self.url)

    def cpu_s(self) -> float:
        procs = [psutil.Process(w.pid) for w in self.workers]
        own = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
        info = self.r.info("cpu")
        return (
            own + float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) + time.process_time()
        )

    def run(self, task: str, n: int, args: tuple[Any, ...], with_index: bool = False) -> float:
        self.r.delete(DONE_KEY, SEEN_429_KEY)
        started = time.perf_counter()
        with self.app.producer_or_acquire() as producer:
            for i in range(n):
                task_args = (*args, i) if with_index else args
                self.app.send_task(task, args=task_args, queue="llm", producer=producer)
        while int(self.r.get(DONE_KEY) or 0) < n:
            time.sleep(0.02)
        return time.perf_counter() - started

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.r.close()
        self.redis_server.stop()


def scenario(
    name: str, task: str, n: int, sim_opts: dict[str, Any], env: dict[str, str],
    threads: int, args: tuple[Any, ...], rate_limit: str | None = None,
    worker_args: tuple[str, ...] = (),
) -> Run:  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="genfleet-bench-") as tmp,
        SimulatorProcess(**sim_opts) as sim,
    ):
        cluster = Cluster(Path(tmp), sim, env, threads, worker_args)
        try:
            if rate_limit:
                replies = cluster.app.control.rate_limit(task, rate_limit, reply=True, timeout=5)
                assert len(replies) == WORKERS, replies
            cpu0 = cluster.cpu_s()
            wall = cluster.run(task, n, args, with_index=task == "bench.gateway_call")
            cpu = cluster.cpu_s() - cpu0
        finally:
            cluster.close()
        stats = sim.stats()
    return Run(name, n, wall, stats["by_status"].get("429", 0), cpu,
               stats["prompt_tokens"] + stats["completion_tokens"])  # fmt: skip


async def _plain_asyncio(base_url: str, n: int, limit: int) -> None:
    client = openai.AsyncOpenAI(api_key="bench-key-0001", base_url=base_url, max_retries=0)
    semaphore = asyncio.Semaphore(limit)

    async def one() -> None:
        async with semaphore:
            await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": SHORT_PROMPT}], max_tokens=16
            )

    await asyncio.gather(*(one() for _ in range(n)))
    await client.close()


def plain_script(n: int, limit: int, latency_ms: int) -> Run:
    with SimulatorProcess(latency_ms=latency_ms) as sim:
        cpu0, started = time.process_time(), time.perf_counter()
        asyncio.run(_plain_asyncio(sim.base_url, n, limit))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return Run("plain asyncio + Semaphore(64), one process", n, wall, 0, cpu)


def table_1(n: int) -> list[Run]:
    sim = {"latency_ms": 50, "rpm": 600}
    args = (SHORT_PROMPT, 16)
    return [
        scenario("genfleet gateway, LLM_RPM_LIMIT=600", "bench.gateway_call", n, sim,
                 {"LLM_RPM_LIMIT": "600"}, 8, args),
        scenario('Celery rate_limit="600/m" per task', "bench.direct_call", n, sim, {}, 8, args,
                 rate_limit="600/m"),
        scenario('Celery rate_limit="200/m" (split by hand)', "bench.direct_call", n, sim, {}, 8,
                 args, rate_limit="200/m"),
        scenario('Celery rate_limit="600/m", Celery\'s default prefetch (x4)', "bench.direct_call",
                 n, sim, {}, 8, args, rate_limit="600/m",
                 worker_args=("--prefetch-multiplier", "4")),
    ]  # fmt: skip


def table_2(n: int) -> list[Run]:
    latency = 500
    ours = scenario("genfleet: 3 workers x 22 threads, gateway, LLM_MAX_CONCURRENT=64",
                    "bench.gateway_call", n, {"latency_ms": latency},
                    {"LLM_MAX_CONCURRENT": "64"}, 22, (SHORT_PROMPT, 16))  # fmt: skip
    return [ours, plain_script(n, 64, latency)]


def table_3(n: int, tpm: int) -> Run:
    args = (CHINESE_PROMPT, 200)
    return scenario(f"genfleet gateway, LLM_TPM_LIMIT={tpm}", "bench.gateway_call", n,
                    {"latency_ms": 200, "tpm": tpm, "output_tokens": 200},
                    {"LLM_TPM_LIMIT": str(tpm), "LLM_MAX_CONCURRENT": "32"}, 8, args)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    opts = parser.parse_args()
    scale = 0.2 if opts.quick else 1.0

    rows = table_1(int(1000 * scale))
    print("\n### 1. Simulator capped at 600 requests/min per key; 3 workers; short requests\n")
    print("| run | requests | achieved req/min | 429s seen | wall (s) |")
    print("|---|---:|---:|---:|---:|")
    for run in rows:
        print(f"| {run.name} | {run.requests} | {run.per_min:.0f} | {run.rate_limited} | "
              f"{run.wall_s:.1f} |")  # fmt: skip

    ours, plain = table_2(int(2000 * scale))
    print("\n### 2. No cap, 500 ms latency, 64 in flight\n")
    print("| run | requests | wall (s) | calls/s | CPU s per 1,000 calls |")
    print("|---|---:|---:|---:|---:|")
    for run in (ours, plain):
        print(f"| {run.name} | {run.requests} | {run.wall_s:.1f} | {run.requests / run.wall_s:.1f}"
              f" | {run.cpu_s / run.requests * 1000:.1f} |")  # fmt: skip
    print(f"\ngenfleet / plain throughput: {plain.wall_s / ours.wall_s:.2f} (target >= 0.9)")

    tpm = 120_000
    per_call = estimate_messages_tokens([{"role": "user", "content": CHINESE_PROMPT}]) + 200
    run = table_3(int(150 * scale), tpm)
    print(f"\n### 3. Simulator capped at {tpm} tokens/min; Chinese prompts of ~{per_call} tokens\n")
    print("| run | requests | 429s seen | tokens/min used | share of the cap | wall (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    used = run.tokens / run.wall_s * 60
    print(f"| {run.name} | {run.requests} | {run.rate_limited} | {used:.0f} | "
          f"{used / tpm:.0%} | {run.wall_s:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
