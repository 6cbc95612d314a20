"""Benchmark: what `genfleet ui` costs with many jobs and a 10,000-step job.

Writes 200 jobs through the store into a private Redis (199 small chapter jobs and
one tweets job of 10,000 steps, half of them done), starts `genfleet ui`, and
measures page times (median of 5) and the UI's CPU while a browser-like client keeps
the big job's live page open: once with the job's counts still, once with a step
finishing every 0.5 s.

    python bench/ui.py [--steps 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cluster  # noqa: E402
from genfleet import constants as C  # noqa: E402
from genfleet.records import JobRecord, StepResult  # noqa: E402
from genfleet.store import JobStore  # noqa: E402
from genfleet.summary import compute_metrics  # noqa: E402
from producer.client import connect  # noqa: E402

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WATCH_S = 10.0


def _result(step_id: str, n: int) -> StepResult:
    now = time.time()
    output = {"pair": "p1", "date": step_id, "persona": "Mika", "text": f"tweet {n} " * 8,
              "hashtags": ["a", "b"], "image_prompt": "a cat"}  # fmt: skip
    return StepResult(step_id=step_id, index=n, ok=True, output=output, started_at=now - 1,
                      finished_at=now, tokens_in=300, tokens_out=60, worker="llm")  # fmt: skip


def make_jobs(store: JobStore, steps: int) -> tuple[str, list[str]]:
    """199 small chapter jobs and one big tweets job; returns (big id, its waiting steps)."""
    for n in range(199):
        ids = ["v1", "v2", "v3"]
        record = JobRecord(id=f"chapter-bench{n:04d}", kind=C.KIND_CHAPTER, created_at=time.time(),
                           spec={"versions": 3}, step_ids=ids)  # fmt: skip
        store.create(record)
        for i, sid in enumerate(ids):
            out = StepResult(step_id=sid, index=i, ok=True, output={"version": i + 1,
                             "content": "text " * 400, "finish_reason": "stop"})  # fmt: skip
            store.save_step(record.id, out)
        store.finish(record.id, C.STATUS_SUCCEEDED, compute_metrics(store.load(record.id)), None)
    ids = [f"p1.{n:05d}" for n in range(steps)]
    big = JobRecord(id="tweets-bigbench", kind=C.KIND_TWEETS, created_at=time.time(),
                    spec={"pairs": [{"key": "p1", "persona": "Mika"}]}, step_ids=ids)  # fmt: skip
    store.create(big)
    store.mark_started(big.id, ids[0])
    for n, sid in enumerate(ids[: steps // 2]):
        store.save_step(big.id, _result(sid, n))
    return big.id, ids[steps // 2 :]


def get_s(url: str) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        with OPENER.open(url, timeout=60) as response:
            response.read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def watch_cpu(ui: psutil.Process, url: str, finish: list[str], store: JobStore, job: str) -> float:
    """The UI's CPU seconds per second while a client holds the live page open."""
    stop = threading.Event()

    def reader() -> None:
        with OPENER.open(url, timeout=WATCH_S + 30) as response:
            while not stop.is_set() and response.readline():
                pass

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(2.0)  # the first full render is not what is measured
    before = sum(ui.cpu_times()[:2])
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        if finish:
            store.save_step(job, _result(finish.pop(0), 0))
        time.sleep(0.5)
    used = sum(ui.cpu_times()[:2]) - before
    stop.set()
    return used / WATCH_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()
    with cluster({"latency_ms": 0}, []) as c:
        store = connect().store
        big, waiting = make_jobs(store, args.steps)
        port = 18100
        log = open(c.home / "ui.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "ui", "--port", str(port)],
            env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            while "genfleet ui on" not in (c.home / "ui.log").read_text():
                time.sleep(0.1)
            ui = psutil.Process(proc.pid)
            rows = [
                ("GET /jobs (200 jobs)", f"{get_s(base + '/jobs') * 1000:.0f} ms"),
                ("GET /jobs/{small job} (3 steps)",
                 f"{get_s(base + '/jobs/chapter-bench0000') * 1000:.0f} ms"),
                (f"GET /jobs/{{big job}} ({args.steps:,} steps)",
                 f"{get_s(f'{base}/jobs/{big}') * 1000:.0f} ms"),
                ("live page of the big job, counts still: UI CPU",
                 f"{watch_cpu(ui, f'{base}/events/jobs/{big}', [], store, big):.3f} s/s"),
                ("live page of the big job, a step done every 0.5 s: UI CPU",
                 f"{watch_cpu(ui, f'{base}/events/jobs/{big}', waiting, store, big):.3f} s/s"),
            ]  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
    print(f"\n{args.steps:,}-step job and 199 small jobs, one `genfleet ui` process\n")
    print("| measure | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
