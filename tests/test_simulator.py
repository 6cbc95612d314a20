"""The provider simulator, driven over real HTTP through the real ``openai`` SDK."""

from __future__ import annotations

import base64
import datetime
import enum
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from PIL import Image
from pydantic import BaseModel, Field

from simulator.caps import KeyCaps
from simulator.config import SimulatorConfig, parse_error_rate
from simulator.process import SimulatorProcess
from simulator.textgen import instance_for_schema, prompt_hash, rng_for

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEYS = ("k1", "k2", "k3")
DEFAULTS: dict[str, Any] = {
    "latency_ms": 0.0,
    "jitter_ms": 0.0,
    "per_token_ms": 0.0,
    "rpm": 0,
    "tpm": 0,
    "error_rates": {},
    "timeout_s": 30.0,
    "output_tokens": 200,
    "image_task_seconds": 1.0,
}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(latency_ms=0, keys=KEYS, forbidden_keys=("k3",), seed=7) as sim:
        yield sim


@pytest.fixture
def sim(shared_sim: SimulatorProcess) -> SimulatorProcess:
    """The shared simulator with default behaviour and zeroed counters."""
    shared_sim.configure(**DEFAULTS)
    shared_sim.reset()
    return shared_sim


def client(sim: SimulatorProcess, key: str = "k1", timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=key, max_retries=0, timeout=timeout)


def ask(cli: openai.OpenAI, text: str, **kw: Any) -> Any:
    return cli.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw
    )


def http(
    sim: SimulatorProcess, method: str, path: str, body: Any = None, key: str | None = "k1"
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(sim.root_url + path, data=data, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with _NO_PROXY.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- chat -----------------------------------------------------------------------------------


def test_chat_returns_text_and_usage(sim: SimulatorProcess) -> None:
    reply = ask(client(sim), "Write a haiku about queues.")
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason == "stop"
    assert reply.model == "gpt-4o-mini" and reply.choices[0].message.role == "assistant"
    messages = [{"role": "user", "content": "Write a haiku about queues."}]
    # The provider's own count: 27 bytes of UTF-8 -> 7 tokens, plus 3 for the message.
    assert reply.usage.prompt_tokens == 3 + 7
    assert reply.usage.completion_tokens == -(-len(text.encode()) // 4)
    assert 150 <= reply.usage.completion_tokens <= 200
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    stats = sim.stats()
    assert stats["completion_tokens"] == reply.usage.completion_tokens
    assert stats["chat_by_prompt"] == {prompt_hash(messages): 1}


def test_max_tokens_truncates(sim: SimulatorProcess) -> None:
    cli = client(sim)
    for kw in ({"max_tokens": 12}, {"max_completion_tokens": 12}):
        reply = ask(cli, "Tell me a long story.", **kw)
        assert reply.choices[0].finish_reason == "length"
        assert 0 < reply.usage.completion_tokens <= 12


def test_same_request_same_text_and_different_prompt_differs(sim: SimulatorProcess) -> None:
    cli = client(sim)
    first, again = ask(cli, "Describe Redis."), ask(cli, "Describe Redis.")
    other = ask(cli, "Describe Celery.")
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    hot = ask(cli, "Describe Redis.", temperature=1.5)
    assert hot.choices[0].message.content != first.choices[0].message.content
    assert (
        sim.stats()["chat_by_prompt"][prompt_hash([{"role": "user", "content": "Describe Redis."}])]
        == 3
    )


def test_cjk_prompt_gets_cjk_text(sim: SimulatorProcess) -> None:
    text = ask(client(sim), "请用中文写一段关于春天的短文。").choices[0].message.content
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert cjk > len(text) * 0.8
    latin = ask(client(sim), "Write about spring.").choices[0].message.content
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in latin)


def test_multimodal_content_is_accepted(sim: SimulatorProcess) -> None:
    image = "data:image/png;base64," + base64.b64encode(PNG_MAGIC).decode()
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    messages: Any = [{"role": "user", "content": content}]
    reply = client(sim).chat.completions.create(model="gpt-4o", messages=messages)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens >= 85


def test_stream_and_bad_json_are_400(sim: SimulatorProcess) -> None:
    with pytest.raises(openai.BadRequestError):
        ask(client(sim), "hi", stream=True)
    request = urllib.request.Request(
        sim.base_url + "/chat/completions",
        data=b"{nope",
        method="POST",
        headers={"Authorization": "Bearer k1"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        _NO_PROXY.open(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"]["type"] == "invalid_request_error"


# --- structured output ------------------------------------------------------------------


class Genre(enum.StrEnum):
    novel = "novel"
    essay = "essay"


class Author(BaseModel):
    name: str = Field(min_length=3, max_length=12)
    email: str | None = None
    born: datetime.date


class Chapter(BaseModel):
    title: str
    pages: int = Field(ge=1, le=50)
    score: float = Field(gt=0, lt=1)
    tags: list[str] = Field(min_length=1, max_length=2)


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Book(BaseModel):
    title: str
    kind: Literal["draft", "final"]
    genre: Genre
    author: Author
    coauthor: Author | None
    chapters: list[Chapter] = Field(min_length=4)
    meta: dict[str, int]
    pair: tuple[int, str]
    tree: Node
    ok: bool


def test_schema_instances_validate_without_server() -> None:
    schema = Book.model_json_schema()
    for seed in range(30):
        value = instance_for_schema(schema, rng_for(bytes([seed]) * 32))
        book = Book.model_validate_json(json.dumps(value))
        assert len(book.chapters) >= 4


def test_json_schema_answer_validates(sim: SimulatorProcess) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "Book", "schema": Book.model_json_schema()},
    }
    reply = ask(client(sim), "Invent a book.", response_format=fmt)
    book = Book.model_validate_json(reply.choices[0].message.content)
    assert book.author.born.year >= 2000
    parsed = client(sim).chat.completions.parse(
        model="gpt-4o", messages=[{"role": "user", "content": "Another."}], response_format=Book
    )
    assert isinstance(parsed.choices[0].message.parsed, Book)


def test_json_object_answer_is_json(sim: SimulatorProcess) -> None:
    reply = ask(client(sim), "Give JSON.", response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


# --- caps and injected errors -------------------------------------------------------------


def test_rpm_cap_refuses_exactly_the_extra_request(sim: SimulatorProcess) -> None:
    sim.configure(rpm=5)
    cli, ok, refused = client(sim), 0, []
    for i in range(6):
        try:
            ask(cli, f"question {i}")
            ok += 1
        except openai.RateLimitError as e:
            refused.append(e)
    assert ok == 5 and len(refused) == 1
    error = refused[0]
    assert int(error.response.headers["retry-after"]) >= 1
    assert 55_000 < int(error.response.headers["retry-after-ms"]) <= 60_000
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert sim.stats()["by_status"] == {"200": 5, "429": 1}
    ask(client(sim, "k2"), "another key has its own window")


def test_tpm_cap_counts_prompt_and_max_tokens(sim: SimulatorProcess) -> None:
    cost = 3 + 1 + 50  # "hi": one token (2 bytes), its message 3, and max_tokens
    sim.configure(tpm=2 * cost)
    cli = client(sim)
    ask(cli, "hi", max_tokens=50)
    ask(cli, "hi", max_tokens=50)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(cli, "hi", max_tokens=50)
    assert caught.value.type == "tokens"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert sim.stats()["by_status"] == {"200": 2, "429": 1}


def test_injected_503_is_a_server_error(sim: SimulatorProcess) -> None:
    sim.configure(error_rates={"503": 1.0})
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client(sim), "hi")
    assert caught.value.status_code == 503


def test_injected_429_rate_matches_stats(sim: SimulatorProcess) -> None:
    sim.configure(error_rates={"429": 0.3})
    cli, limited = client(sim), 0
    for i in range(60):
        try:
            ask(cli, f"q{i}")
        except openai.RateLimitError as e:
            limited += 1
            assert e.response.headers["retry-after"] == "1"
            assert e.response.headers["retry-after-ms"] == "1000"
    assert 0 < limited < 60
    assert sim.stats()["by_status"] == {"200": 60 - limited, "429": limited}


def test_injected_timeout_times_the_client_out(sim: SimulatorProcess) -> None:
    sim.configure(error_rates={"timeout": 1.0}, timeout_s=3.0)
    with pytest.raises(openai.APITimeoutError):
        ask(client(sim, timeout=0.5), "hang")
    deadline = time.monotonic() + 3
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["in_flight"] == 0  # the abandoned call was cancelled


def test_unknown_and_forbidden_keys(sim: SimulatorProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        ask(client(sim, "stranger"), "hi")
    with pytest.raises(openai.PermissionDeniedError):
        ask(client(sim, "k3"), "hi")
    status, body = http(sim, "POST", "/v1/chat/completions", {"model": "m"}, key=None)
    assert status == 401 and body["error"]["message"]
    stats = sim.stats()
    assert stats["by_status"] == {"401": 2, "403": 1}
    assert "stranger" not in json.dumps(stats)
    assert stats["by_key"]["key-...k3"] == {"requests": 1, "by_status": {"403": 1}}


def test_max_in_flight_counts_concurrency(sim: SimulatorProcess) -> None:
    sim.configure(latency_ms=300)
    cli, barrier = client(sim), threading.Barrier(8)

    def call(i: int) -> None:
        barrier.wait()
        ask(cli, f"parallel {i}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = sim.stats()
    assert stats["max_in_flight"] == 8 and stats["by_status"] == {"200": 8}


def test_admin_config_rejects_bad_values(sim: SimulatorProcess) -> None:
    with pytest.raises(ValueError, match="400"):
        sim.configure(rpm=-3)
    with pytest.raises(ValueError, match="400"):
        sim.configure(fail_patterns={"x": 200})  # only 400-599 can be injected
    with pytest.raises(ValueError, match="400"):
        sim.configure(seed=3)  # not a run-time field


# --- images ---------------------------------------------------------------------------------


def test_image_generation_returns_a_png(sim: SimulatorProcess) -> None:
    cli = client(sim)
    size: Any = "64x48"  # the SDK's literal type lists only the provider's sizes
    result = cli.images.generate(model="sim-image", prompt="a red fox", size=size)
    assert result.data and result.data[0].b64_json
    png = base64.b64decode(result.data[0].b64_json)
    assert png.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(png)).size == (64, 48)
    again = cli.images.generate(model="sim-image", prompt="a red fox", size=size)
    assert again.data and again.data[0].b64_json == result.data[0].b64_json
    by_url = cli.images.generate(model="sim-image", prompt="a fox", response_format="url")
    assert by_url.data and by_url.data[0].url
    with _NO_PROXY.open(by_url.data[0].url, timeout=10) as response:
        assert Image.open(io.BytesIO(response.read())).size == (256, 256)


def test_moderation_word_is_a_content_policy_400(sim: SimulatorProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(sim).images.generate(model="sim-image", prompt="a FORBIDDEN castle")
    assert caught.value.code == "content_policy_violation"
    status, body = http(sim, "POST", "/v1/images/tasks", {"prompt": "forbidden"})
    assert status == 400 and body["error"]["code"] == "content_policy_violation"


def test_async_image_task_goes_from_pending_to_succeeded(sim: SimulatorProcess) -> None:
    sim.configure(image_task_seconds=0.4)
    status, created = http(sim, "POST", "/v1/images/tasks", {"prompt": "a boat", "size": "32x32"})
    assert status == 200 and created["status"] == "pending"
    path = f"/v1/images/tasks/{created['task_id']}"
    assert http(sim, "GET", path)[1]["status"] in ("pending", "running")
    time.sleep(0.5)
    status, done = http(sim, "GET", path)
    assert done["status"] == "succeeded"
    assert Image.open(io.BytesIO(base64.b64decode(done["b64_json"]))).size == (32, 32)
    assert http(sim, "GET", "/v1/images/tasks/nope")[0] == 404


# --- caps, config and process without HTTP ------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_caps_requests_spread_over_the_window_are_never_refused() -> None:
    clock = FakeClock()
    caps = KeyCaps(now=clock)
    for _ in range(50):
        assert caps.admit("k", 1, rpm=5, tpm=0) is None
        clock.t += 12.0


def test_caps_burst_refuses_once_with_exact_wait() -> None:
    clock = FakeClock()
    caps = KeyCaps(now=clock)
    for _ in range(5):
        assert caps.admit("k", 1, rpm=5, tpm=0) is None
        clock.t += 1.0
    rejection = caps.admit("k", 1, rpm=5, tpm=0)
    assert rejection is not None and rejection.kind == "requests"
    assert rejection.retry_after_s == pytest.approx(55.0)
    assert caps.admit("other", 1, rpm=5, tpm=0) is None
    clock.t += 54.999
    assert caps.admit("k", 1, rpm=5, tpm=0) is not None
    clock.t += 0.001
    assert caps.admit("k", 1, rpm=5, tpm=0) is None


def test_caps_tokens_wait_for_enough_to_expire() -> None:
    clock = FakeClock()
    caps = KeyCaps(now=clock)
    for amount in (40, 30, 20):
        assert caps.admit("k", amount, rpm=0, tpm=100) is None
        clock.t += 10.0
    rejection = caps.admit("k", 50, rpm=0, tpm=100)  # 40 must expire first, at t0+60
    assert rejection is not None and rejection.kind == "tokens"
    assert rejection.retry_after_s == pytest.approx(30.0)
    too_big = caps.admit("k", 101, rpm=0, tpm=100)
    assert too_big is not None and too_big.too_large
    caps.reset()
    assert caps.admit("k", 100, rpm=0, tpm=100) is None


def test_config_validation() -> None:
    assert parse_error_rate("429=0.1") == ("429", 0.1)
    assert parse_error_rate("timeout=1") == ("timeout", 1.0)
    for bad in ("429", "429=x", "200=0.1", "429=1.5", "oops=0.1"):
        with pytest.raises(ValueError):
            parse_error_rate(bad)
    with pytest.raises(ValueError, match="add up"):
        SimulatorConfig(error_rates={"429": 0.6, "500": 0.6})
    with pytest.raises(ValueError, match="latency_ms"):
        SimulatorConfig(latency_ms=-1)


def test_cli_bad_argument_is_one_line_and_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "--error-rate", "429=7"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_process_stops_cleanly_on_sigterm() -> None:
    sim = SimulatorProcess(latency_ms=0).start()
    pid = sim.pid
    assert sim.stats()["requests"] == 0
    sim.stop()
    assert sim.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_tokens_are_counted_by_the_providers_own_rule(sim: SimulatorProcess) -> None:
    """UTF-8 bytes / 4, not genfleet's estimator: Chinese costs 3/4 token a character."""
    chinese = "灯塔守护者在风暴之夜收到一封来自远方的信。" * 4  # 84 characters, 252 bytes
    reply = ask(client(sim), chinese)
    assert reply.usage.prompt_tokens == 3 + 252 // 4
    english = "The lighthouse keeper reads the letter twice."  # 45 bytes
    assert ask(client(sim), english).usage.prompt_tokens == 3 + 12
