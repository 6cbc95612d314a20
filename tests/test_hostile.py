"""Hostile messages and oversized inputs.

Messages are put straight onto the ``llm`` queue with kombu, the way Celery's Redis
transport carries them (default exchange, routing key ``llm``): the worker refuses
and logs each one, never unpickles anything, and keeps serving. Oversized inputs
are refused by the producer before a single call reaches the provider.
"""

from __future__ import annotations

import json
import pathlib
import resource
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis

from genfleet import constants as C
from genfleet.errors import InputError
from producer import submit_chapter
from producer.cli import main
from producer.images import submit_images
from producer.inputs import MAX_IMAGE_BYTES
from producer.pipelines import submit_persona
from tests.conftest import Workers
from workers.images.constants import MAX_PROMPT_CHARS

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
JSON = {"content_type": "application/json", "content_encoding": "utf-8"}


MEMORY_HEADROOM_BYTES = 1 << 30
SUBPROCESS_MEMORY_BYTES = 3 << 30


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


@contextmanager
def memory_cap(headroom: int = MEMORY_HEADROOM_BYTES) -> Iterator[None]:
    """Cap this process's address space a little above its size for a while: a
    regression that reads ``/dev/zero`` whole then fails with MemoryError instead
    of exhausting a shared machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def capped_child() -> None:
    """``preexec_fn`` for a ``genfleet`` child: the same guard, for a subprocess."""
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY_BYTES, SUBPROCESS_MEMORY_BYTES))


class TouchOnUnpickle:
    """Pickles to a payload that creates ``path`` when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def task_headers(task: Any, **changes: Any) -> dict[str, Any]:
    """Protocol-2 headers as Celery writes them (see ``app.send_task``)."""
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None,
        "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}", "origin": "hostile",
    }  # fmt: skip
    headers.update(changes)
    return {k: v for k, v in headers.items() if v != "DROP"}


def body(args: list[Any], kwargs: dict[str, Any] | None = None, embed: Any = EMBED) -> str:
    return json.dumps([args, kwargs or {}, embed])


def hostile_messages(marker: Path) -> list[tuple[Any, dict[str, Any], str]]:
    """(body, publish options, the worker's log line) per message."""
    chapter = C.TASK_CHAPTER_VERSION
    return [
        (body(["a", "b", 0]), {**JSON, "headers": task_headers("genfleet.llm.no_such_task")},
         "Received unregistered task of type 'genfleet.llm.no_such_task'"),
        (b"\xff\xfe{not json", {**JSON, "headers": task_headers(chapter)},
         "Can't decode message body: DecodeError"),
        (TouchOnUnpickle(marker), {"serializer": "pickle", "headers": task_headers(chapter)},
         "Received invalid task message: Refusing to deserialize untrusted content of "
         "type pickle"),
        (TouchOnUnpickle(marker), {"serializer": "pickle"},
         "Can't decode message body: ContentDisallowed('Refusing to deserialize untrusted "
         "content of type pickle"),
        (json.dumps({"a": 1}), {**JSON, "headers": task_headers(chapter)},
         "Received invalid task message: the body is not [args, kwargs, embed]"),
        (body([]), {**JSON, "headers": task_headers(["not", "a", "name"])},
         "Received invalid task message: unhashable type: 'list'"),
        (body(["a", "b", 0]), {**JSON, "headers": task_headers(chapter, id="DROP")},
         "Received invalid task message: the id header is not a text"),
        (body(["a", "b", 0]), {**JSON, "headers": task_headers(chapter, timelimit="abc")},
         "Received invalid task message: the timelimit header is not [soft, hard]"),
        (body(["a", "b", 0], embed={"errbacks": [{}]}), {**JSON, "headers": task_headers(chapter)},
         "Received invalid task message: embed errbacks is not a list of signatures"),
        (body(["x" * 1000, "v1", 0]), {**JSON, "headers": task_headers(chapter)},
         "bad id argument: 'xxxx"),
        (body(["chapter-ghost", "v1", 0]), {**JSON, "headers": task_headers(chapter)},
         "no job 'chapter-ghost' in Redis"),
    ]  # fmt: skip


def publish(redis_url: str, messages: list[tuple[Any, dict[str, Any], str]]) -> None:
    with kombu.Connection(redis_url) as connection:
        producer = connection.Producer()
        for payload, options, _ in messages:
            producer.publish(payload, exchange="", routing_key=C.QUEUE_LLM, retry=True, **options)


def wait_until(check: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow  # a long fault or load test: `pytest -m slow`
def test_hostile_messages_are_refused_and_the_worker_keeps_serving(
    sim, workers: Workers, r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled-here"
    worker = workers.start(concurrency=2)
    messages = hostile_messages(marker)
    publish(redis_url, messages)
    expected = [line for _, _, line in messages]
    assert wait_until(lambda: all(line in worker.log_text() for line in expected)), [
        line for line in expected if line not in worker.log_text()
    ]
    assert wait_until(lambda: r.llen(C.QUEUE_LLM) == 0 and r.hlen("unacked") == 0)
    assert not r.keys(f"{C.KEY_PREFIX}:job:*")  # the forged steps wrote nothing
    handle = submit_chapter("after", 1, "A quiet harbour at dawn.", versions=2)
    assert handle.wait(timeout=60, progress=False).status == C.STATUS_SUCCEEDED
    assert sim.stats()["by_status"] == {"200": 2}
    log = worker.log_text()
    assert worker.proc is not None and worker.proc.poll() is None
    assert "Unrecoverable error" not in log and "Frequent restarts" not in log
    assert not marker.exists()  # nothing was ever unpickled


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info, memory_cap():
        main(argv)
    out = capsys.readouterr()
    assert info.value.code == 2 and out.out == "", (argv, out)
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("genfleet: "), out.err
    return lines[0]


def test_oversized_inputs_are_refused_before_any_call(
    sim, workers: Workers, r: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workers.start(queues=("llm", "control", "images"))
    outline = tmp_path / "outline.txt"
    outline.write_text("é" * (C.MAX_OUTLINE_CHARS + 1), encoding="utf-8")
    image = tmp_path / "huge.png"
    image.write_bytes((Path(__file__).parent.parent / "examples" / "face.png").read_bytes())
    with image.open("ab") as f:
        f.write(b"\0" * (MAX_IMAGE_BYTES + 1))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse\n" + "x" * (MAX_PROMPT_CHARS + 1) + "\n")

    with pytest.raises(InputError, match=f"outline has {C.MAX_OUTLINE_CHARS + 1} characters"):
        submit_chapter("p", 1, "x" * (C.MAX_OUTLINE_CHARS + 1))
    with pytest.raises(InputError, match=f"over the cap|{MAX_IMAGE_BYTES}-byte cap"):
        submit_persona(image)
    with pytest.raises(InputError, match=f"has {MAX_PROMPT_CHARS + 1} characters"):
        submit_images(["x" * (MAX_PROMPT_CHARS + 1)])

    chapter = ["submit", "chapter", "--project", "p", "--chapter", "1", "--outline-file"]
    assert "outline has 20001 characters" in _cli([*chapter, str(outline)], capsys)
    assert "-byte cap" in _cli([*chapter, "/dev/zero"], capsys)  # never read whole
    assert f"{MAX_IMAGE_BYTES}-byte cap" in _cli(["submit", "persona", "--image", str(image)],
                                                 capsys)  # fmt: skip
    assert "-byte cap" in _cli(["submit", "persona", "--image", "/dev/zero"], capsys)
    assert f"prompt 2 has {MAX_PROMPT_CHARS + 1} characters" in _cli(
        ["submit", "images", "--prompts-file", str(prompts)], capsys
    )

    assert sim.stats()["requests"] == 0
    assert all(r.llen(q) == 0 for q in (C.QUEUE_LLM, C.QUEUE_CONTROL, C.QUEUE_IMAGES))
    assert r.zcard(C.KEY_JOB_INDEX) == 0
