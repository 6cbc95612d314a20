"""Benchmark: the pipelines against the simulator, in one run.

1. Persona: the seven stages in sequence vs as their dependency graph, same latency.
2. 200 tweets with LLM_MAX_CONCURRENT=20 and 300 ms latency, vs the ideal 200 x 0.3 / 20.
3. Batch items: 60 cloze items with batch_size 1 vs 5: calls, tokens per item, items/s.

Wall times are measured by the producer, from submit until the job's final status.

    python bench/pipelines.py
"""

from __future__ import annotations

import statistics
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import WorkerSpec, cluster, timed  # noqa: E402
from producer.pipelines import submit_batch, submit_persona, submit_tweets  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REPEAT = 2




def persona_rows(latency_ms: int) -> list[tuple[str, float]]:
    with cluster({"latency_ms": latency_ms}, [WorkerSpec("persona", 8)]):
        timed(lambda: submit_persona(EXAMPLES / "face.png"))  # warm-up
        serial = [timed(lambda: submit_persona(EXAMPLES / "face.png", parallel=False))[0]
                  for _ in range(REPEAT)]  # fmt: skip
        graph = [timed(lambda: submit_persona(EXAMPLES / "face.png"))[0] for _ in range(REPEAT)]
    return [("seven stages in sequence", statistics.median(serial)),
            ("stages as a graph", statistics.median(graph))]  # fmt: skip


def tweet_run(latency_ms: int, limit: int, count: int) -> float:
    calendar = {"calendar": {f"2026-{m:02d}-{d:02d}": {"theme": f"day {m}-{d}"}
                             for m in range(1, 8) for d in range(1, 29)}}  # fmt: skip
    persona = EXAMPLES / "personas" / "mika.json"
    workers = [WorkerSpec("tw1", limit // 2), WorkerSpec("tw2", limit - limit // 2)]
    with cluster({"latency_ms": latency_ms}, workers, {"LLM_MAX_CONCURRENT": str(limit)}):
        timed(lambda: submit_tweets(persona, calendar, 10))  # warm-up
        walls = [timed(lambda: submit_tweets(persona, calendar, count))[0] for _ in range(REPEAT)]
    return statistics.median(walls)


def batch_rows() -> list[dict[str, float]]:
    topics = ["Daily life", "Campus", "Travel", "Food", "Work", "Weather"]
    rows = []
    with cluster({"latency_ms": 300, "per_token_ms": 1.0}, [WorkerSpec("batch", 8)]):
        for batch_size in (1, 5):
            wall, view = timed(partial(
                submit_batch, "cloze", "ja", [3, 4], topics, per_combo=5,
                batch_size=batch_size, concurrency=4, retries=2,
            ))  # fmt: skip
            assert view.metrics is not None
            figures = view.metrics.extra["items"]
            rows.append({"batch_size": batch_size, "wall": wall, **figures})
    return rows


def main() -> None:
    latency = 1000
    persona = persona_rows(latency)
    print(f"\n### Persona from an image: stage latency {latency} ms (median of {REPEAT})\n")
    print("| run | wall (s) | vs graph |")
    print("|---|---:|---:|")
    graph_wall = persona[1][1]
    for name, wall in persona:
        print(f"| {name} | {wall:.2f} | {wall / graph_wall:.2f}x |")

    count, limit, latency_s = 200, 20, 0.3
    wall = tweet_run(int(latency_s * 1000), limit, count)
    ideal = count * latency_s / limit
    print(f"\n### {count} tweets, LLM_MAX_CONCURRENT={limit}, {latency_s * 1000:.0f} ms latency\n")
    print("| run | wall (s) | ideal 200 x 0.3 / 20 (s) | wall / ideal |")
    print("|---|---:|---:|---:|")
    ratio = wall / ideal
    print(f"| 2 workers x 10 threads | {wall:.2f} | {ideal:.2f} | {ratio:.2f} (target <= 1.2) |")

    print("\n### Batch items: 60 cloze items (6 topics x 2 levels x 5), concurrency 4\n")
    print("| batch_size | calls | tokens per item | items/s | wall (s) | success rate |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in batch_rows():
        print(f"| {row['batch_size']} | {row['calls']} | {row['tokens_per_item']:.0f} | "
              f"{row['items_delivered'] / row['wall']:.2f} | {row['wall']:.2f} | "
              f"{row['success_rate']:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
