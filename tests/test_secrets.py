"""Secrets and access: API keys and Redis passwords never leak; TLS and AUTH work.

After real jobs (a refused key, 429s, tasks left waiting in a queue), every key of the
test database, of every type, is read back (task messages' base64 bodies decoded) and
searched for the API keys and every 8-character piece of them, as are the worker's
log and ``genfleet stats``. A password-protected Redis and a TLS one (``rediss://``,
certificate verified against ``REDIS_CA_CERTS``) each run a real job end to end.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from genfleet import constants as C
from genfleet.connection import redis_client, sanitize_url
from genfleet.embedded import find_redis_server
from genfleet.errors import GenfleetError, RedisUnavailableError
from producer import submit_chapter
from producer.pipelines import submit_batch
from producer.processes import start_worker
from tests.conftest import ROOT, Workers, free_port, genfleet_cmd

API_KEYS = ("sk-live-AAAA1111secret", "sk-live-BBBB2222secret")
OUTLINE = "A night ferry crosses a frozen bay."
REDIS_START_TIMEOUT_S = 10.0
UNTRUSTED_WORKER_WAIT_S = 8.0  # a worker that cannot verify the server never gets ready


def pieces(secret: str, size: int = 8) -> set[str]:
    """Every ``size``-character piece of a secret (and the secret itself)."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)} | {secret}


def leaks(texts: list[str], *secrets_: str) -> list[str]:
    """The pieces of ``secrets_`` found in ``texts``, with where."""
    found = []
    for piece in set().union(*(pieces(s) for s in secrets_)):
        found += [f"{piece!r} in {text[:120]!r}" for text in texts if piece in text]
    return found


def _readings(raw: bytes | str) -> Iterator[str]:
    """A stored value as text, plus every base64 text inside it, decoded (Celery's
    task messages carry their body base64-encoded in a JSON envelope)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    yield text
    try:
        doc = json.loads(text)
    except ValueError:
        return
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str) and len(item) >= 8:
            with contextlib.suppress(binascii.Error, ValueError):
                yield from _readings(base64.b64decode(item, validate=True))


def redis_texts(client: redis.Redis) -> tuple[list[str], set[str]]:
    """Every key and value of the database as texts, and the key types seen."""
    values: list[bytes | str] = []
    kinds = set()
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        kinds.add(kind)
        values.append(key)
        if kind == "string":
            values.append(client.get(key) or b"")
        elif kind == "hash":
            values += [x for pair in client.hgetall(key).items() for x in pair]
        elif kind == "list":
            values += client.lrange(key, 0, -1)
        elif kind == "set":
            values += client.smembers(key)
        elif kind == "zset":
            values += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            entries = client.xrange(key)
            values += [x for _, fields in entries for pair in fields.items() for x in pair]
    return [text for value in values for text in _readings(value)], kinds


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        genfleet_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_api_keys_never_reach_redis_logs_or_output(
    sim, workers: Workers, r: redis.Redis, redis_url: str, env: dict[str, str], monkeypatch
) -> None:
    sim.configure(valid_keys=[API_KEYS[1]], error_rates={"429": 0.4}, retry_after_s=0.05)
    pool = ",".join(API_KEYS)
    monkeypatch.setenv("OPENAI_API_KEYS", pool)  # the producer's environment holds them too
    worker = workers.start(concurrency=4, OPENAI_API_KEYS=pool, LLM_MAX_RETRIES=5)
    handles = [
        submit_chapter("keys", 1, OUTLINE, versions=4),
        submit_batch("vocab", "ja", [1, 2], ["harbour", "ferry"], per_combo=2, batch_size=1,
                     concurrency=4, retries=5),
    ]  # fmt: skip
    assert [h.wait(timeout=90, progress=False).status for h in handles] == ["succeeded"] * 2
    by_status = sim.stats()["by_status"]
    assert by_status.get("401", 0) >= 1 and by_status.get("429", 0) >= 1, by_status
    log = worker.log_text()
    assert "API key key1" in log and "taken out of the pool" in log and "429 on key" in log
    worker.stop()
    waiting = submit_chapter("keys", 2, OUTLINE, versions=2)  # no worker reads llm now
    assert r.llen(C.QUEUE_LLM) == 2

    stats = run("stats", "--json", env={**env, "OPENAI_API_KEYS": pool})
    assert stats.returncode == 0, stats.stderr
    status = run("status", handles[0].id, env={**env, "OPENAI_API_KEYS": pool})
    assert status.returncode == 0, status.stderr
    texts, kinds = redis_texts(redis.Redis.from_url(redis_url))
    assert {"string", "hash", "list", "set", "zset"} <= kinds, kinds
    assert any(f'"{waiting.id}"' in t for t in texts)  # the queued messages were read
    outputs = [log, worker.log_text(), stats.stdout, stats.stderr, status.stdout]
    assert not leaks(texts + outputs, *API_KEYS)


# ---------------------------------------------------------------- Redis AUTH and TLS


class RedisServer:
    """A redis-server child on a free loopback port, stopped by PID."""

    def __init__(self, binary: str, folder: Path, password: str, tls: dict[str, Path] | None):
        self.port = free_port()
        self.folder = folder
        self.password = password
        self.tls = tls
        listen = ["--port", str(self.port)]
        if tls:
            cert, key = str(tls["cert"]), str(tls["key"])
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert,
                      "--tls-key-file", key, "--tls-ca-cert-file", cert,
                      "--tls-auth-clients", "no"]  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        self.args = [binary, *listen, "--bind", "127.0.0.1", "--requirepass", password,
                     "--save", "", "--appendonly", "no", "--dir", str(folder),
                     "--logfile", str(folder / "redis.log")]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        """Start it; False if it exits at once (a binary without TLS support)."""
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(redis.RedisError, OSError):
                if self.client().ping():
                    return True
            time.sleep(0.05)
        self.stop()
        return False

    def client(self) -> redis.Redis:
        tls: dict[str, Any] = {}
        if self.tls:
            tls = {"ssl": True, "ssl_ca_certs": str(self.tls["cert"])}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_connect_timeout=1, **tls)  # fmt: skip

    def url(self, password: str | None = None) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://:{quote(password or self.password, safe='')}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def redis_server(folder: Path, tls: dict[str, Path] | None = None) -> Iterator[RedisServer]:
    """A password-protected server (with TLS: the first binary that supports it)."""
    password = "pw-" + secrets.token_hex(12)
    binaries = dict.fromkeys(
        b for b in (find_redis_server(), shutil.which("redis-server"), "/usr/bin/redis-server")
        if b and Path(b).is_file()
    )  # fmt: skip
    for binary in binaries:
        server = RedisServer(binary, folder, password, tls)
        if server.start():
            try:
                yield server
            finally:
                server.stop()
            return
    pytest.skip(f"no redis-server here starts {'with TLS' if tls else 'at all'}: {list(binaries)}")


def self_signed_cert(folder: Path) -> dict[str, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {made.stderr.strip()[:200]}")
    return {"cert": cert, "key": key}


def _job_end_to_end(
    server: RedisServer, workers: Workers, env: dict[str, str], sim, extra: dict[str, str]
) -> list[str]:
    """Run a worker and a chapter job against ``server``; return every output seen."""
    url = server.url()
    job_env = {**env, **extra, "REDIS_URL": url, "OPENAI_BASE_URL": sim.base_url}
    worker = workers.start("secure", REDIS_URL=url, **extra)
    try:
        submitted = run("submit", "chapter", "--project", "tls", "--chapter", "1",
                        "--versions", "2", "--outline-file", str(ROOT / "examples/outline.txt"),
                        "--wait", env=job_env)  # fmt: skip
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        job_id = submitted.stdout.splitlines()[0]
        status = run("status", job_id, env=job_env)
        assert status.returncode == 0 and "succeeded" in status.stdout, status.stderr
        stats = run("stats", "--json", env=job_env)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["redis"] == sanitize_url(url)
        assert sim.stats()["by_status"] == {"200": 2}
    finally:
        worker.stop()
    texts, _ = redis_texts(server.client())
    assert any(job_id in t for t in texts)  # the job really ran on this server
    outputs = [submitted.stdout, submitted.stderr, status.stdout, status.stderr, stats.stdout]
    return [*texts, worker.log_text(), *outputs]


def _wrong_password_line(server: RedisServer, env: dict[str, str], extra: dict[str, str]) -> str:
    wrong = "wrong-" + secrets.token_hex(8)
    out = run("status", "chapter-x", env={**env, **extra, "REDIS_URL": server.url(wrong)})
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "refused the credentials" in lines[0], lines[0]
    assert wrong not in lines[0] and server.password not in lines[0]
    return lines[0]


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_password_protected_redis(sim, workers: Workers, env: dict[str, str], tmp_path) -> None:
    with redis_server(tmp_path / "redis") as server:
        seen = _job_end_to_end(server, workers, env, sim, {})
        assert not leaks(seen, server.password.removeprefix("pw-"))
        _wrong_password_line(server, env, {})


@pytest.mark.slow  # long: `pytest -m slow`; .ci/run runs it
def test_rediss_with_a_verified_certificate(
    sim, workers: Workers, env: dict[str, str], tmp_path
) -> None:
    tls = self_signed_cert(tmp_path)
    with redis_server(tmp_path / "redis", tls) as server:
        trusted = {"REDIS_CA_CERTS": str(tls["cert"])}
        seen = _job_end_to_end(server, workers, env, sim, trusted)
        assert not leaks(seen, server.password.removeprefix("pw-"))
        _wrong_password_line(server, env, trusted)
        # Verified by default: the system's CAs do not know this certificate.
        untrusted = run("status", "chapter-x", env={**env, "REDIS_URL": server.url()})
        assert untrusted.returncode == 2 and untrusted.stderr.splitlines() == [
            f"genfleet: cannot reach Redis at rediss://:***@127.0.0.1:{server.port}/0: its TLS "
            "certificate is not trusted; set REDIS_CA_CERTS to the CA file that signed it"
        ]
        log = tmp_path / "untrusted-worker.log"
        with pytest.raises(GenfleetError, match="not ready"):
            start_worker(["llm"], concurrency=1, pool="threads", name="untrusted",
                         env={**env, "REDIS_URL": server.url()}, log_path=log,
                         ready_timeout=UNTRUSTED_WORKER_WAIT_S)  # fmt: skip
        assert "CERTIFICATE_VERIFY_FAILED" in log.read_text()  # the broker verifies too
        assert server.password not in log.read_text()


# ---------------------------------------------------------------- URLs in messages


@settings(max_examples=300, deadline=None, database=None)
@given(
    scheme=st.sampled_from(["redis", "rediss", "unix", "http"]),
    user=st.sampled_from(["", "default", "app"]),
    password=st.text(min_size=1, max_size=24),
    tail=st.sampled_from(["127.0.0.1:6379/0", "localhost/2", "h:1/0?ssl_cert_reqs=required"]),
    encode=st.booleans(),
)
def test_sanitize_url_never_shows_the_password(
    scheme: str, user: str, password: str, tail: str, encode: bool
) -> None:
    secret = "Zq9" + password  # distinctive: cannot appear by chance in the rest
    shown_secret = quote(secret, safe="") if encode else secret
    shown = sanitize_url(f"{scheme}://{user}:{shown_secret}@{tail}")
    assert shown_secret not in shown and secret not in shown, shown
    assert "***" in shown


@pytest.mark.parametrize(
    "password", ["abc/def=", "p#ss", "p?ss", "a:b", "p%zz", "new\nline", "@@", "x" * 300]
)
def test_a_bad_redis_url_is_one_line_without_the_password(password: str) -> None:
    url = f"redis://:{password}@127.0.0.1:1/0"
    with pytest.raises(GenfleetError) as info:
        redis_client(url)
    message = str(info.value)
    assert "\n" not in message and "***" in message
    assert not leaks([message], password) if len(password) >= 8 else password not in message
    if isinstance(info.value, RedisUnavailableError):
        assert message.startswith("cannot reach Redis at redis://:***@")
