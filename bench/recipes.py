"""Benchmark: recipes against the built-in kinds they can replace, in one run.

1. A two-stage recipe over N rows (2N calls: a JSON stage, then a text stage that
   needs it) against the built-in tweets job with the same number of calls (4
   personas x N/2 days), the same latency and the same cluster limit. Goal: the
   recipe's wall time at most 1.2x the tweets job's.
2. The persona recipe (examples/recipes/persona.yaml) against the built-in persona
   job, same image and latency. Goal: the same critical path (3 calls).

Wall times are measured by the producer, from submit until the job's final status.

    python bench/recipes.py [--rows 2000] [--limit 40] [--latency-ms 500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import WorkerSpec, cluster, timed  # noqa: E402
from genfleet.records import JobView  # noqa: E402
from producer.pipelines import submit_persona, submit_tweets  # noqa: E402
from producer.recipes import submit_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
REPEAT = 2
TWO_STAGES = {
    "name": "bench-two-stages",
    "inputs": ["topic"],
    "stages": [
        {"name": "plan", "prompt": "Three points about {{ topic }}.", "max_tokens": 100,
         "schema": {"type": "object", "required": ["points"], "properties": {
             "points": {"type": "array", "items": {"type": "string"}, "minItems": 3}}}},
        {"name": "post", "needs": ["plan"], "max_tokens": 100,
         "prompt": "A post about {{ topic }}: {{ plan.points | join('; ') }}"},
    ],
}  # fmt: skip




def critical_path(view: JobView, names: list[list[str]]) -> int:
    """Calls on the longest chain of steps that ran one after another (by their
    start and end times): the length of ``names`` checked in order."""
    longest = 0
    for chain in names:
        steps = [view.ok[s] for s in chain]
        if all(a.finished_at <= b.started_at for a, b in zip(steps, steps[1:], strict=False)):
            longest = max(longest, len(steps))
    return longest


def tweets_vs_recipe(rows: int, limit: int, latency_ms: int) -> list[tuple[str, int, float]]:
    days = rows // 2
    start = dt.date(2026, 1, 1)
    calendar = {"calendar": {(start + dt.timedelta(days=n)).isoformat(): {"theme": f"day {n}"}
                             for n in range(days)}}  # fmt: skip
    persona = json.loads((EXAMPLES / "personas" / "mika.json").read_text())
    personas = [{**persona, "name": f"{persona['name']} {n}"} for n in range(4)]
    topic_rows = [{"topic": f"topic {n}"} for n in range(rows)]
    workers = [WorkerSpec("rb1", limit // 2), WorkerSpec("rb2", limit - limit // 2)]
    env = {"LLM_MAX_CONCURRENT": str(limit)}
    out = []
    with cluster({"latency_ms": latency_ms}, workers, env):
        timed(lambda: submit_recipe(TWO_STAGES, topic_rows[:20]))  # warm-up
        tweets = [timed(lambda: submit_tweets(personas, calendar, days))[0] for _ in range(REPEAT)]
        recipe = [timed(lambda: submit_recipe(TWO_STAGES, topic_rows))[0] for _ in range(REPEAT)]
    out.append((f"built-in tweets: 4 personas x {days} days", 4 * days, statistics.median(tweets)))
    out.append((f"recipe: {rows} rows x 2 stages", 2 * rows, statistics.median(recipe)))
    return out


def persona_runs(latency_ms: int) -> list[tuple[str, int, float, int]]:
    chain = ["core", "strategy", "examples"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "faces.jsonl"
        rows.write_text(json.dumps({"image": str(EXAMPLES / "face.png")}) + "\n")
        with cluster({"latency_ms": latency_ms}, [WorkerSpec("persona", 8)]):
            timed(lambda: submit_persona(EXAMPLES / "face.png"))  # warm-up
            built = [timed(lambda: submit_persona(EXAMPLES / "face.png")) for _ in range(REPEAT)]
            recipe_file = EXAMPLES / "recipes" / "persona.yaml"
            made = [timed(lambda: submit_recipe(recipe_file, rows)) for _ in range(REPEAT)]
    return [
        ("built-in persona job", 7, statistics.median(w for w, _ in built),
         critical_path(built[0][1], [[f"p1.{s}" for s in chain]])),
        ("persona recipe", 7, statistics.median(w for w, _ in made),
         critical_path(made[0][1], [[f"r1.{s}" for s in chain]])),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=40, help="LLM_MAX_CONCURRENT")
    parser.add_argument("--latency-ms", type=int, default=500)
    args = parser.parse_args()

    runs = tweets_vs_recipe(args.rows, args.limit, args.latency_ms)
    print(f"\n### A {args.rows}-row two-stage recipe vs the tweets job: same calls, "
          f"LLM_MAX_CONCURRENT={args.limit}, {args.latency_ms} ms latency "
          f"(median of {REPEAT})\n")  # fmt: skip
    print("| run | calls | wall (s) | vs tweets |")
    print("|---|---:|---:|---:|")
    base = runs[0][2]
    for name, calls, wall in runs:
        print(f"| {name} | {calls} | {wall:.2f} | {wall / base:.2f}x |")

    latency = 1000
    print(f"\n### Persona: the recipe vs the built-in job, {latency} ms a call "
          f"(median of {REPEAT})\n")  # fmt: skip
    print("| run | LLM calls | wall (s) | wall / latency | critical path (calls in sequence) |")
    print("|---|---:|---:|---:|---:|")
    for name, calls, wall, path in persona_runs(latency):
        print(f"| {name} | {calls} | {wall:.2f} | {wall / (latency / 1000):.1f} | {path} |")


if __name__ == "__main__":
    main()
