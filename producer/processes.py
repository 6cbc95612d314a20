"""Child processes the ``genfleet`` command runs: Celery workers (and the simulator).

Each is started with an explicit environment, logs to a file, and is stopped by PID
(SIGTERM, then SIGKILL) when its context ends, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from genfleet.errors import GenfleetError


def celery_worker_command(
    queues: Sequence[str], *, concurrency: int, pool: str, name: str, loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """The plain ``celery ... worker`` command line genfleet runs for a worker."""
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "-Q", ",".join(queues), "-P", pool, "-c", str(concurrency),
        "-n", f"{name}@%h", "--loglevel", loglevel, "--without-gossip", "--without-mingle",
        *extra,
    ]  # fmt: skip


def unique_node_name(prefix: str) -> str:
    """``PREFIX-PID``: two workers started on one host never share a node name (Celery
    would warn ``DuplicateNodenameWarning``, and inspect and stats would merge them)."""
    return f"{prefix}-{os.getpid()}"


class ChildProcess:
    """A subprocess stopped by PID when the context exits."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # stopped by PID from here, not by the terminal's Ctrl-C
            )
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_file(self, path: Path, timeout: float) -> None:
        """Wait until the child creates ``path`` (its sign that it is ready)."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc is None or self.proc.poll() is not None:
                raise GenfleetError(f"the child process exited early; see {self.log_path}")
            if time.monotonic() > deadline:
                raise GenfleetError(f"process not ready after {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.proc.wait()

    def __enter__(self) -> ChildProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_worker(
    queues: Sequence[str], *, concurrency: int, pool: str, name: str, env: dict[str, str],
    log_path: Path, ready_timeout: float = 60.0, loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> ChildProcess:  # fmt: skip
    """Start a Celery worker subprocess and wait until it says it is ready."""
    args = celery_worker_command(
        queues, concurrency=concurrency, pool=pool, name=name, loglevel=loglevel, extra=extra
    )
    ready = log_path.parent / f".{name}.{os.getpid()}.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    child = ChildProcess(args, env={**env, "GENFLEET_READY_FILE": str(ready)}, log_path=log_path)
    child.start()
    try:
        child.wait_for_file(ready, ready_timeout)
    except BaseException:
        child.stop()
        raise
    finally:
        ready.unlink(missing_ok=True)
    return child


def run_foreground(args: list[str]) -> int:
    """Run a child in the foreground, passing SIGTERM on; stop owned Redis after it.

    A terminal's Ctrl-C reaches the child too (same process group), which shuts down
    by itself; this process waits for it.
    """
    from genfleet.connection import stop_owned_redis

    proc = subprocess.Popen(args)
    signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue
    finally:
        stop_owned_redis()


def replace_process(args: list[str]) -> int:
    """Become ``args`` (``os.execvp``): no second interpreter waits on it, and signals
    (Ctrl-C, SIGTERM) reach it directly. When this process owns an embedded Redis,
    which must be stopped after the child, it runs the child in the foreground instead.
    """
    from genfleet.connection import owns_redis

    if owns_redis():
        return run_foreground(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(args[0], args)
