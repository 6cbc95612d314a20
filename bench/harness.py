"""A private cluster for benchmarks: its own embedded Redis and home, the simulator,
and worker subprocesses; the producer API of this process points at it.

REDIS_URL is ignored: a benchmark never touches a Redis it did not start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from genfleet.embedded import EmbeddedRedis
from genfleet.records import JobView
from producer.client import forget_default
from producer.jobs import JobHandle
from producer.processes import ChildProcess, start_worker
from simulator.process import SimulatorProcess

BENCH_KEY = "bench-key-0001"


class CommandCounter:
    """Watches the commands clients send to one Redis database (``MONITOR``): ``sent``,
    and apart from them ``scripted``, those Lua scripts run inside Redis (which ``INFO
    commandstats`` counts too). MONITOR costs Redis time: what is measured under it is
    not timed."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.sent: list[str] = []
        self.scripted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            for command in monitor.listen():
                if self._stop.is_set():
                    return
                if command.get("db") != self.db:
                    continue
                seen = self.scripted if command.get("client_type") == "lua" else self.sent
                seen.append(str(command["command"]))

    def __enter__(self) -> CommandCounter:
        self._thread.start()
        time.sleep(0.5)  # MONITOR is on
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.client.ping()  # a last command wakes the listener
        self._thread.join(10)
        self.client.close()


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
