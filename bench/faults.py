"""Benchmark: exactly once under faults. One table, one row per fault.

Each scenario runs a tweets job on real workers, with its own redis-server (which
the scenario may kill, restart or fill up) and the simulator, and counts at the
simulator: provider calls, extra calls (beyond one per step), steps whose answer was
paid twice, results lost, steps failed, and the longest stall (seconds during which
steps were waiting and the provider saw no call). REDIS_URL is ignored.

    python bench/faults.py
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genfleet import constants as C  # noqa: E402
from genfleet.embedded import find_redis_server  # noqa: E402
from genfleet.errors import GenfleetError  # noqa: E402
from producer.client import connect, forget_default  # noqa: E402
from producer.jobs import JobHandle  # noqa: E402
from producer.pipelines import resume, submit_tweets  # noqa: E402
from producer.processes import ChildProcess, start_worker  # noqa: E402
from simulator.process import SimulatorProcess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PERSONA = json.loads((ROOT / "examples" / "personas" / "mika.json").read_text())
SHORT_VISIBILITY = {"BROKER_VISIBILITY_TIMEOUT_S": "5"}


@dataclass
class Row:
    scenario: str
    steps: int
    calls: int
    paid_twice: int
    lost: int
    failed: int
    stall_s: float
    note: str = ""


class Lab:
    """One scenario's redis-server, simulator and workers."""

    def __init__(self, home: Path, sim: SimulatorProcess) -> None:
        self.home = home
        self.sim = sim
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.workers: list[ChildProcess] = []

    def start_redis(self) -> None:
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.home), "--appendonly", "yes", "--save", ""]  # fmt: skip
        self.redis_proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        _until(lambda: _pings(client), 10)

    def stop_redis(self) -> None:
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            self.redis_proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def worker(self, name: str, threads: int, **env: str) -> ChildProcess:
        child = start_worker(
            ["llm", "control"], concurrency=threads, pool="threads", name=name,
            env={**os.environ, **env}, log_path=self.home / f"{name}.log", loglevel="WARNING",
        )  # fmt: skip
        self.workers.append(child)
        return child


@contextlib.contextmanager
def lab(**sim_config: Any) -> Iterator[Lab]:
    """A fresh cluster; ``sim_config`` is the simulator's run-time config."""
    saved = dict(os.environ)
    with (
        tempfile.TemporaryDirectory(prefix="genfleet-faults-") as tmp,
        SimulatorProcess() as sim,
    ):
        sim.configure(**sim_config)
        box = Lab(Path(tmp), sim)
        box.start_redis()
        os.environ.update({"REDIS_URL": box.url, "GENFLEET_HOME": tmp, "OPENAI_API_KEY":
                           "bench-key-0001", "OPENAI_BASE_URL": sim.base_url})  # fmt: skip
        forget_default()
        try:
            yield box
        finally:
            for child in box.workers:
                child.stop()
            box.stop_redis()
            os.environ.clear()
            os.environ.update(saved)
            forget_default()


def calendar(days: int) -> dict[str, Any]:
    start = 738_000
    return {"calendar": {dt.date.fromordinal(start + n).isoformat(): {"theme": f"day {n}"}
                         for n in range(days)}}  # fmt: skip


class StallMeter:
    """Samples the simulator and the job: the longest time steps waited with no call."""

    def __init__(self, box: Lab, handle: JobHandle) -> None:
        self.box, self.handle = box, handle
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        idle_since: float | None = None
        while not self._stop.wait(0.25):
            try:
                busy = self.box.sim.stats()["in_flight"] > 0
                progress = connect().store.progress(self.handle.id)
                waiting = progress.done < progress.total and progress.status in (
                    C.STATUS_QUEUED, C.STATUS_RUNNING)  # fmt: skip
            except Exception:  # Redis down: that is a stall too
                busy, waiting = False, True
            now = time.monotonic()
            if busy or not waiting:
                idle_since = None
                continue
            idle_since = idle_since or now
            self.longest = max(self.longest, now - idle_since)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.longest, 1)


def finish(name: str, box: Lab, handle: JobHandle, meter: StallMeter, steps: int,
           note: str = "") -> Row:  # fmt: skip
    view = handle.wait(timeout=300, progress=False)
    stall = meter.stop()
    stats = box.sim.stats()
    calls = sum(stats["chat_calls_by_prompt"].values())
    paid_twice = sum(1 for n in stats["chat_by_prompt"].values() if n > 1)
    lost = steps - len(view.ok) - len(set(view.failed) - set(view.ok))
    return Row(name, steps, calls, paid_twice, lost, len(set(view.failed) - set(view.ok)), stall,
               note)  # fmt: skip


def _job(box: Lab, steps: int) -> tuple[JobHandle, StallMeter]:
    handle = submit_tweets(PERSONA, calendar(steps), count=steps)
    return handle, StallMeter(box, handle)


def killed_worker() -> Row:
    with lab(latency_ms=4000) as box:
        first = box.worker("a", 2, **SHORT_VISIBILITY)
        handle, meter = _job(box, 8)
        _until(lambda: box.sim.stats()["in_flight"] == 2, 60)
        first.signal(signal.SIGKILL)
        killed_at = _redis_now(box.client())
        expiries = _lease_expiries(box.client())
        box.worker("b", 2, **SHORT_VISIBILITY)
        freed = max(expiries) - killed_at if expiries else 0.0
        note = f"2 calls killed in flight; key free {freed:.1f}s after the kill"
        return finish("worker SIGKILLed mid-call", box, handle, meter, 8, note)


def redis_restart() -> Row:
    with lab(latency_ms=1500) as box:
        box.worker("r", 2)
        handle, meter = _job(box, 8)
        _until(lambda: box.sim.stats()["in_flight"] == 2, 60)
        box.stop_redis()
        time.sleep(3)
        box.start_redis()
        return finish("redis-server restarted mid-job (3 s down)", box, handle, meter, 8)


def long_calls() -> Row:
    with lab(latency_ms=9000) as box:
        box.worker("v1", 3, **SHORT_VISIBILITY)
        box.worker("v2", 3, **SHORT_VISIBILITY)
        handle, meter = _job(box, 6)
        return finish("9 s calls, 5 s visibility timeout", box, handle, meter, 6)


def long_retry_after() -> Row:
    with lab(latency_ms=200, retry_after_s=12) as box:
        box.sim.configure(error_rates={"429": 1.0})
        box.worker("ra", 3, **SHORT_VISIBILITY)
        handle, meter = _job(box, 6)
        _until(lambda: box.sim.stats()["by_status"].get("429", 0) >= 1, 60)
        box.sim.configure(error_rates={})
        return finish("429 with Retry-After 12 s, 5 s visibility", box, handle, meter, 6,
                      "the stall is the Retry-After, honoured")  # fmt: skip


def malformed() -> Row:
    with lab(latency_ms=200) as box:
        box.sim.configure(malformed_patterns={PERSONA["name"]: "html*4"})
        box.worker("m", 3)
        handle, meter = _job(box, 8)
        return finish("4 HTML bodies with HTTP 200", box, handle, meter, 8,
                      "4 extra calls: the malformed answers, re-asked")  # fmt: skip


def drip() -> Row:
    with lab(latency_ms=0, drip_s=0.5) as box:
        box.worker("d", 4, LLM_TIMEOUT_S="2", LLM_MAX_CONCURRENT="2", LLM_MAX_RETRIES="5")
        handle, meter = _job(box, 4)
        time.sleep(6)
        box.sim.configure(drip_s=0)
        row = finish("provider drips its body (LLM_TIMEOUT_S=2)", box, handle, meter, 4)
        most = box.sim.stats()["max_in_flight"]
        row.note = f"abandoned calls re-asked; provider max in flight {most} (cap 2)"
        return row


def out_of_memory() -> Row:
    with lab(latency_ms=3000) as box:
        box.worker("o", 2)
        handle, meter = _job(box, 4)
        _until(lambda: box.sim.stats()["in_flight"] == 2, 60)
        client = box.client()
        jobs_before = len(client.keys(f"{C.KEY_PREFIX}:job:*"))
        client.config_set("maxmemory", 1)
        refused = False
        try:
            submit_tweets(PERSONA, calendar(1), count=1)
        except GenfleetError:
            refused = True
        orphans = len(client.keys(f"{C.KEY_PREFIX}:job:*")) - jobs_before
        time.sleep(6)
        client.config_set("maxmemory", 0)
        note = f"a submit meanwhile refused: {refused}, orphan records: {orphans}"
        return finish("Redis at maxmemory for 6 s", box, handle, meter, 4, note)


def clock_skew() -> Row:
    with lab(latency_ms=4000) as box:
        env = {"BROKER_VISIBILITY_TIMEOUT_S": "10"}
        box.worker("skewed", 4, GENFLEET_TEST_CLOCK_OFFSET_S="-60", **env)
        box.worker("on-time", 4, **env)
        handle, meter = _job(box, 6)
        return finish("one worker's clock 60 s behind", box, handle, meter, 6)


def concurrent_resumes() -> Row:
    with lab(latency_ms=200) as box:
        box.sim.configure(fail_patterns={PERSONA["name"]: 500})
        box.worker("c", 4, LLM_MAX_RETRIES="0")
        handle = submit_tweets(PERSONA, calendar(6), count=6)
        handle.wait(timeout=120, progress=False)
        box.sim.configure(fail_patterns={})
        box.sim.reset()
        outcomes: list[str] = []

        def again() -> None:
            try:
                resume(handle.id)
                outcomes.append("resumed")
            except GenfleetError:
                outcomes.append("refused")

        threads = [threading.Thread(target=again) for _ in range(2)]
        meter = StallMeter(box, handle)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        note = f"resumes: {sorted(outcomes)}"
        return finish("two resumes at once (after 6 failed)", box, handle, meter, 6, note)


SCENARIOS: list[Callable[[], Row]] = [
    killed_worker, redis_restart, long_calls, long_retry_after, malformed, drip,
    out_of_memory, clock_skew, concurrent_resumes,
]  # fmt: skip


def main() -> None:
    rows = []
    for scenario in SCENARIOS:
        started = time.monotonic()
        rows.append(scenario())
        print(f"  {rows[-1].scenario}: {time.monotonic() - started:.0f}s", file=sys.stderr)
    print("| scenario | steps | provider calls | extra calls | paid twice | lost | failed "
          "| longest stall (s) | note |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.scenario} | {r.steps} | {r.calls} | {r.calls - r.steps} | {r.paid_twice} "
              f"| {r.lost} | {r.failed} | {r.stall_s} | {r.note} |")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _until(check: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("a bench scenario timed out waiting")
        time.sleep(0.1)


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def _lease_expiries(client: redis.Redis) -> list[float]:
    out: list[float] = []
    for key in client.scan_iter(f"{C.KEY_LIMITER_PREFIX}:*:leases"):
        if ":job:" not in str(key):
            pairs = client.zrange(key, 0, -1, withscores=True)
            out += [float(pair[1]) for pair in pairs]
    return out


if __name__ == "__main__":
    main()
