"""Run the simulator as a subprocess on a free loopback port, for tests and benchmarks.

Only the standard library is used here so that importing it costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

logger = logging.getLogger(__name__)

READY_PREFIX = "simulator listening on "
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 10.0
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The simulator is on loopback: never send these calls through an HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def simulator_args(options: Mapping[str, Any]) -> list[str]:
    """Command-line arguments for ``python -m simulator`` from keyword options."""
    args: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        if name == "error_rates":
            for kind, rate in value.items():
                args += ["--error-rate", f"{kind}={rate}"]
        elif name in ("keys", "forbidden_keys", "moderation_words"):
            args += [_flag(name), ",".join(value)]
        else:
            args += [_flag(name), str(value)]
    return args


def _read_ready_line(stream: IO[bytes], proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """Read stdout up to the first newline, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"simulator did not start within {timeout_s:.0f}s")
            if not selector.select(left):
                continue
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"simulator exited with status {proc.wait()} before listening")
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode("utf-8", "replace")


class SimulatorProcess:
    """``with SimulatorProcess(latency_ms=50, rpm=600) as sim:`` runs a simulator.

    Keyword options follow the command line (``latency_ms``, ``jitter_ms``,
    ``per_token_ms``, ``rpm``, ``tpm``, ``error_rates`` as a dict, ``timeout_s``,
    ``output_tokens``, ``keys``, ``forbidden_keys``, ``moderation_words``,
    ``image_task_seconds``, ``seed``, ``host``, ``port``, ``log_level``).
    """

    def __init__(self, *, extra_args: Sequence[str] = (), **options: Any) -> None:
        self._args = [*simulator_args(options), *extra_args]
        self._proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.returncode: int | None = None  # set once stopped

    @property
    def pid(self) -> int:
        """The process id of the running simulator."""
        return self._running().pid

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` without the ``/v1`` suffix."""
        return self.base_url.removesuffix("/v1")

    def start(self) -> SimulatorProcess:
        """Start the subprocess and wait until it listens."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        command = [sys.executable, "-m", "simulator", *self._args]
        # Own session: a terminal's Ctrl-C goes to the parent, which stops this by PID.
        self._proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, env=env, start_new_session=True
        )
        try:
            assert self._proc.stdout is not None
            line = _read_ready_line(self._proc.stdout, self._proc, START_TIMEOUT_S)
            if not line.startswith(READY_PREFIX):
                raise RuntimeError(f"unexpected simulator output: {line!r}")
        except BaseException:
            self.stop()
            raise
        self.base_url = line.removeprefix(READY_PREFIX).strip()
        logger.debug("simulator pid %d listening on %s", self._proc.pid, self.base_url)
        return self

    def stop(self) -> None:
        """SIGTERM the subprocess, then SIGKILL it if it has not ended in 5 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("simulator pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
        self.returncode = proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stats(self) -> dict[str, Any]:
        """The ``GET /stats`` document."""
        return self._call("GET", "/stats")

    def reset(self) -> None:
        """Zero the counters and cap windows (``POST /stats/reset``)."""
        self._call("POST", "/stats/reset", {})

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change run-time settings (``POST /admin/config``); returns the new ones."""
        return dict(self._call("POST", "/admin/config", changes)["config"])

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("the simulator is not running")
        return self._proc

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self._running()
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.root_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=HTTP_TIMEOUT_S) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            raise ValueError(f"{method} {path} failed with {e.code}: {detail}") from e

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
