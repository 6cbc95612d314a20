"""A private cluster for benchmarks: its own embedded Redis and home, the simulator,
and worker subprocesses; the producer API of this process points at it.

REDIS_URL is ignored: a benchmark never touches a Redis it did not start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genfleet.embedded import EmbeddedRedis
from genfleet.records import JobView
from producer.client import forget_default
from producer.jobs import JobHandle
from producer.processes import ChildProcess, start_worker
from simulator.process import SimulatorProcess

BENCH_KEY = "bench-key-0001"


@dataclass
class WorkerSpec:
    name: str
    threads: int
    queues: tuple[str, ...] = ("llm", "control")
    env: dict[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()


@dataclass
class Cluster:
    home: Path
    redis_url: str
    sim: SimulatorProcess
    workers: list[ChildProcess]


def timed(submit: Callable[[], JobHandle]) -> tuple[float, JobView]:
    """Wall time from submit to the job's stored final status; a bench job must succeed."""
    started = time.perf_counter()
    view = submit().wait(progress=False)
    wall = time.perf_counter() - started
    if view.status != "succeeded":
        raise SystemExit(f"bench job {view.id} ended {view.status}: {view.error}")
    return wall, view


@contextlib.contextmanager
def cluster(sim_options: dict[str, Any], workers: list[WorkerSpec],
            env: dict[str, str] | None = None) -> Iterator[Cluster]:  # fmt: skip
    """Start everything, point this process's producer at it, stop it all after."""
    saved = dict(os.environ)
    with (
        tempfile.TemporaryDirectory(prefix="genfleet-bench-") as tmp,
        SimulatorProcess(**sim_options) as sim,
    ):
        home = Path(tmp)
        redis_server = EmbeddedRedis(home)
        url = redis_server.start()
        started: list[ChildProcess] = []
        try:
            os.environ.update({"REDIS_URL": url, "GENFLEET_HOME": str(home),
                               "OPENAI_BASE_URL": sim.base_url, "OPENAI_API_KEY": BENCH_KEY,
                               **(env or {})})  # fmt: skip
            forget_default()
            for spec in workers:
                started.append(start_worker(
                    list(spec.queues), concurrency=spec.threads, pool="threads", name=spec.name,
                    env={**os.environ, **spec.env}, log_path=home / f"{spec.name}.log",
                    loglevel="WARNING", extra=list(spec.extra),
                ))  # fmt: skip
            yield Cluster(home, url, sim, started)
        finally:
            for child in started:
                child.stop()
            redis_server.stop()
            os.environ.clear()
            os.environ.update(saved)
            forget_default()
