"""Benchmark: one image worker vs two, on the same batch of images.

Each worker is what ``genfleet worker images`` starts for one GPU (pool solo, one
picture at a time, queues images, images.gpuN, control), here on the CPU with a
made-up GPU index. The placeholder backend with ``GENFLEET_PLACEHOLDER_DELAY_S``
stands in for a model's time per picture, so the table shows how the work spreads
over workers, not how fast a GPU draws. Wall time is measured by the producer,
from submit until every job's final status is stored.

    python bench/images.py [--images 16] [--delay-s 0.5] [--repeat 3]
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
from producer.cli_images import image_worker_env  # noqa: E402
from producer.images import submit_images  # noqa: E402
from producer.processes import ChildProcess, start_worker  # noqa: E402
from workers.images.gpus import worker_queues  # noqa: E402


def timed_batch(prompts: list[str], pins: list[int | None]) -> float:
    """Submit the prompts split evenly over ``pins`` (one job each); wall time to done."""
    started = time.perf_counter()
    handles = [submit_images(prompts[n :: len(pins)], gpu) for n, gpu in enumerate(pins)]
    for handle in handles:
        view = handle.wait(progress=False)
        if view.status != "succeeded":
            raise SystemExit(f"bench job {view.id} ended {view.status}: {view.error}")
    return time.perf_counter() - started


def start_gpu_worker(gpu: int, env: dict[str, str], logs: Path) -> ChildProcess:
    return start_worker(
        worker_queues(gpu), concurrency=1, pool="solo", name=f"gpu{gpu}",
        env=image_worker_env(gpu, env), log_path=logs / f"gpu{gpu}.log",
    )  # fmt: skip


def measure(args: argparse.Namespace, env: dict[str, str], logs: Path) -> dict[str, float]:
    prompts = [f"benchmark picture {n}" for n in range(args.images)]
    runs: dict[str, list[float]] = {}
    workers = [start_gpu_worker(0, env, logs)]
    try:
        timed_batch(prompts[:2], [None])  # warm-up: connections, imports
        runs["1 worker"] = [timed_batch(prompts, [None]) for _ in range(args.repeat)]
        workers.append(start_gpu_worker(1, env, logs))
        timed_batch(prompts[:2], [None])
        runs["2 workers, shared queue"] = [timed_batch(prompts, [None]) for _ in range(args.repeat)]
        runs["2 workers, pinned half each"] = [
            timed_batch(prompts, [0, 1]) for _ in range(args.repeat)
        ]
    finally:
        for worker in workers:
            worker.stop()
    return {name: statistics.median(times) for name, times in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--delay-s", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("GENFLEET_HOME", tempfile.mkdtemp(prefix="genfleet-bench-"))
    os.environ["IMAGE_BACKEND"] = "placeholder"
    os.environ["GENFLEET_PLACEHOLDER_DELAY_S"] = str(args.delay_s)
    settings = load_settings()
    try:
        env = {**os.environ, "REDIS_URL": use_redis(settings)}
        walls = measure(args, env, settings.genfleet_home / "logs")
    finally:
        stop_owned_redis()
    print(f"{args.images} images, placeholder backend with {args.delay_s:g} s per image, "
          f"{settings.image_size}; median of {args.repeat} runs\n")  # fmt: skip
    print("| run | wall time (s) | images/s | vs 1 worker |")
    print("|---|---:|---:|---:|")
    single = walls["1 worker"]
    for name, wall in walls.items():
        print(f"| {name} | {wall:.2f} | {args.images / wall:.2f} | {single / wall:.2f}x |")


if __name__ == "__main__":
    main()
