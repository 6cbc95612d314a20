"""Any entry at all on a queue list: dropped with a log line, the worker keeps serving.

kombu reads every entry it pops as a JSON envelope; a raw text, a JSON list or an
object without ``properties`` used to end the worker (``workers/transport.py``).
"""

from __future__ import annotations

import json

import pytest
import redis

from genfleet import constants as C
from producer import submit_chapter
from tests.conftest import Workers, wait_for

ENTRIES = [
    "this is not json",
    json.dumps(["a", "json", "list"]),
    json.dumps(42),
    json.dumps({"body": "e30=", "headers": {}}),  # no properties
    json.dumps({"body": 5, "properties": {"delivery_tag": "t", "body_encoding": "base64"}}),
    json.dumps(
        {
            "body": "e30=",
            "properties": {"delivery_tag": "t", "body_encoding": "base64", "delivery_info": {}},
        }
    ),  # fmt: skip
    json.dumps({"body": "x" * 5_000_000, "properties": []}),  # a huge one
]


@pytest.mark.slow  # 3 s or more on this 2-core machine: `pytest -m slow`; .ci/run runs it
def test_crafted_queue_entries_are_dropped_and_the_worker_serves_on(
    sim, workers: Workers, r: redis.Redis
) -> None:
    worker = workers.start(concurrency=2)
    for entry in ENTRIES:
        r.lpush(C.QUEUE_LLM, entry)
    wait_for(lambda: r.llen(C.QUEUE_LLM) == 0, 60, "the entries to be popped")
    wait_for(lambda: worker.log_text().count("dropped a") >= len(ENTRIES), 30, "log lines")
    handle = submit_chapter("after", 1, "A quiet harbour at dawn.", versions=2)
    assert handle.wait(timeout=90, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["by_status"] == {"200": 2}
    assert worker.proc is not None and worker.proc.poll() is None
    log = worker.log_text()
    assert "Unrecoverable error" not in log and "Traceback" not in log
    assert "Connection to broker lost" not in log  # not even a consumer restart
    assert "x" * 100 not in log  # a dropped message is shown short
