"""Benchmark: what genfleet's step path costs over the plain script users would write.

One invocation, one table: for each scenario the plain ``asyncio`` + ``Semaphore``
script (one process, the openai SDK, the same tweet prompt, its JSON answer parsed)
and a genfleet tweet job (workers started as ``genfleet worker llm`` starts them, at
INFO) run against the same simulator, A then B. Printed per run: calls/s, genfleet /
plain, CPU ms per call of every process but the simulator (plain: the script;
genfleet: workers, Redis and the producer), Redis commands per call (``INFO
commandstats`` deltas over the run, which count the commands Lua scripts run inside
Redis too; and, from an extra untimed run of 400 calls under ``MONITOR``, the
commands clients sent, where a script call counts once) and worker memory (RSS when
idle, once a tenth of the calls are done, at the end).

Scenarios: 500 ms per call with 64 in flight, 20 ms with 128 in flight, and 50 ms
under a 1,200 requests/min cap (the simulator enforces it; genfleet runs with
LLM_RPM_LIMIT, the plain script spaces its calls by hand).

CPU ms and commands per call hold on a busy machine; calls/s does not, so run it
when the machine is quiet (``--pairs`` repeats each A/B pair and prints medians).

    python bench/overhead.py [--quick] [--pairs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import openai
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BENCH_KEY, CommandCounter, cluster  # noqa: E402
from producer.client import connect  # noqa: E402
from producer.pipelines import submit_tweets  # noqa: E402
from producer.processes import ChildProcess, start_worker  # noqa: E402
from simulator.process import SimulatorProcess  # noqa: E402
from workers.tweets import tweet_messages  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKERS = 2
MONITORED_CALLS = 400  # the extra, untimed run that tells commands sent from those run
TERMINAL = ("succeeded", "partial", "failed")


@dataclass
class Scenario:
    name: str
    latency_ms: int
    in_flight: int
    calls: int
    rpm: int = 0


@dataclass
class Run:
    calls: int
    wall_s: float
    cpu_s: float
    commands: int = 0
    rss_idle_mib: float = 0.0
    rss_warm_mib: float = 0.0  # once a tenth of the calls are done
    rss_end_mib: float = 0.0
    failed: int = 0
    sent: int = 0  # commands clients sent (a script call is one); MONITOR runs only

    @property
    def per_s(self) -> float:
        return self.calls / self.wall_s


def _persona() -> dict[str, Any]:
    return json.loads((EXAMPLES / "personas" / "mika.json").read_text())


def _days(n: int) -> dict[str, Any]:
    start = dt.date(2001, 1, 1)
    return {(start + dt.timedelta(days=k)).isoformat(): {"theme": f"day {k}"} for k in range(n)}


def _sim(s: Scenario) -> SimulatorProcess:
    return SimulatorProcess(latency_ms=s.latency_ms, rpm=s.rpm or None)


# --- A: the plain script ----------------------------------------------------------


async def _plain(base_url: str, s: Scenario, messages: list[list[dict[str, Any]]]) -> int:
    client = openai.AsyncOpenAI(api_key=BENCH_KEY, base_url=base_url, max_retries=5)
    semaphore = asyncio.Semaphore(s.in_flight)
    spacing = 60.0 / s.rpm if s.rpm else 0.0
    next_slot = [time.monotonic()]
    failed = 0

    async def one(m: list[dict[str, Any]]) -> None:
        nonlocal failed
        async with semaphore:
            if spacing:  # the hand-written spacing a user adds under a cap
                slot, next_slot[0] = next_slot[0], max(next_slot[0], time.monotonic()) + spacing
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
            answer = await client.chat.completions.create(  # type: ignore[call-overload]
                model="bench", messages=m, max_tokens=400, response_format={"type": "json_object"}
            )
            try:
                json.loads(answer.choices[0].message.content or "")
            except ValueError:
                failed += 1

    await asyncio.gather(*(one(m) for m in messages))
    await client.close()
    return failed


def plain_run(s: Scenario) -> Run:
    persona = _persona()
    messages = [tweet_messages(persona, d, p) for d, p in _days(s.calls).items()]
    with _sim(s) as sim:
        cpu0, started = time.process_time(), time.perf_counter()
        failed = asyncio.run(_plain(sim.base_url, s, messages))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return Run(s.calls, wall, cpu, failed=failed)


# --- B: genfleet ------------------------------------------------------------------


def _commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def _cpu_s(procs: list[psutil.Process], client: redis.Redis) -> float:
    own = 0.0
    for p in procs:
        for q in [p, *p.children(recursive=True)]:
            t = q.cpu_times()
            own += t.user + t.system
    info = client.info("cpu")
    return own + float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) + time.process_time()


def _rss_mib(procs: list[psutil.Process]) -> float:
    return sum(q.memory_info().rss for p in procs for q in [p, *p.children(recursive=True)]) / 2**20


def genfleet_run(s: Scenario, calls_per_job: int = 1000, monitor: bool = False) -> Run:
    env = {"LLM_MAX_CONCURRENT": str(s.in_flight)}
    if s.rpm:
        env["LLM_RPM_LIMIT"] = str(s.rpm)
    with cluster({"latency_ms": s.latency_ms, "rpm": s.rpm or None}, [], env) as c:
        workers: list[ChildProcess] = []
        for n in range(WORKERS):
            workers.append(start_worker(
                ["llm", "control"], concurrency=-(-s.in_flight // WORKERS), pool="threads",
                name=f"overhead{n}", env=dict(os.environ), log_path=c.home / f"w{n}.log",
            ))  # fmt: skip
        c.workers.extend(workers)
        procs = [psutil.Process(w.pid) for w in workers]
        client = redis.Redis.from_url(c.redis_url)
        rss_idle = _rss_mib(procs)
        persona = _persona()
        # Tweet jobs take at most 1,000 days each: several jobs, all in flight at once.
        sizes = [min(calls_per_job, s.calls - k) for k in range(0, s.calls, calls_per_job)]
        watch = CommandCounter(c.redis_url) if monitor else contextlib.nullcontext()
        with watch:
            cmd0, cpu0, started = _commands(client), _cpu_s(procs, client), time.perf_counter()
            handles = [submit_tweets(persona, {"calendar": _days(n)}, n) for n in sizes]
            rss_warm, store = 0.0, connect().store
            while any(h.status() not in TERMINAL for h in handles):
                if not rss_warm and sum(store.progress(h.id).done for h in handles) >= s.calls / 10:
                    rss_warm = _rss_mib(procs)
                time.sleep(0.25)
            wall = time.perf_counter() - started
            cpu, commands = _cpu_s(procs, client) - cpu0, _commands(client) - cmd0
        rss_end = _rss_mib(procs)
        failed = sum(len(h.view().failed) for h in handles)
        client.close()
    sent = len(watch.sent) if isinstance(watch, CommandCounter) else 0
    return Run(s.calls, wall, cpu, commands, rss_idle, rss_warm or rss_end, rss_end, failed, sent)


def scenarios(scale: float) -> list[Scenario]:
    return [
        Scenario("500 ms per call, 64 in flight", 500, 64, int(2000 * scale)),
        Scenario("20 ms, 128 in flight", 20, 128, int(3000 * scale)),
        Scenario("50 ms, 64 in flight, capped at 1,200/min", 50, 64, int(600 * scale), rpm=1200),
    ]


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the calls (a smoke run)")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs per scenario (medians)")
    parser.add_argument("--only", type=int, default=None, help="run one scenario (1-3)")
    opts = parser.parse_args()
    chosen = scenarios(0.2 if opts.quick else 1.0)
    if opts.only:
        chosen = [chosen[opts.only - 1]]
    print("| run | plain calls/s | genfleet calls/s | genfleet / plain | CPU ms per call, "
          "plain → genfleet | CPU genfleet / plain | Redis commands per call: sent / run "
          "(scripts' included) | worker RSS idle → a tenth done → end (MiB) "
          "| failed steps |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in chosen:
        plain: list[Run] = []
        ours: list[Run] = []
        for _ in range(opts.pairs):
            plain.append(plain_run(s))
            ours.append(genfleet_run(s))
        p_rate, g_rate = _median(plain, "per_s"), _median(ours, "per_s")
        p_cpu = statistics.median(r.cpu_s / r.calls * 1000 for r in plain)
        g_cpu = statistics.median(r.cpu_s / r.calls * 1000 for r in ours)
        # Each pair's own ratio (A and B ran back to back), then their median: the
        # machine's speed drifts between pairs more than within one.
        cpu_ratio = statistics.median(g.cpu_s / p.cpu_s for p, g in zip(plain, ours, strict=True))
        cmds = statistics.median(r.commands / r.calls for r in ours)
        counted = genfleet_run(replace(s, calls=min(s.calls, MONITORED_CALLS)), monitor=True)
        sent = counted.sent / counted.calls
        print(f"| {s.name}, {s.calls:,} calls | {p_rate:.0f} | {g_rate:.0f} | "
              f"{g_rate / p_rate:.2f} | {p_cpu:.1f} → {g_cpu:.1f} | {cpu_ratio:.2f} | "
              f"{sent:.1f} / {cmds:.1f} | "
              f"{_median(ours, 'rss_idle_mib'):.0f} → {_median(ours, 'rss_warm_mib'):.0f} → "
              f"{_median(ours, 'rss_end_mib'):.0f} | "
              f"{_median(ours, 'failed'):.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
