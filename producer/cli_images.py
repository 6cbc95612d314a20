"""``genfleet worker images`` and ``genfleet submit images``.

``worker images`` runs one Celery worker process per GPU, in the foreground: worker
N sees only GPU N (``CUDA_VISIBLE_DEVICES=N``, ``GENFLEET_GPU=N``), runs one picture
at a time (pool ``solo``: the model loads once, in the process that uses it), is
named ``gpuN-PID@host`` and reads the queues ``images``, ``images.gpuN`` and ``control``.
Their output is shown line by line, prefixed with ``gpuN |``. Ctrl-C or SIGTERM
stops them all (a warm shutdown: the picture being drawn is finished); a second
Ctrl-C stops them at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import click

from genfleet.errors import InputError
from producer.cli_common import OK_STATUSES, report_submitted, spend_options

# The worker side (GPU detection, backends) is imported when a command runs, so
# 'genfleet --help' stays light.

LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])
_POLL_S = 0.2
_out_lock = threading.Lock()


def image_worker_command(gpu: int, loglevel: str = "INFO") -> list[str]:
    """The Celery command line of GPU ``gpu``'s worker."""
    from producer.processes import celery_worker_command, unique_node_name
    from workers.images.gpus import worker_queues

    return celery_worker_command(
        worker_queues(gpu),
        concurrency=1,
        pool="solo",
        name=unique_node_name(f"gpu{gpu}"),
        loglevel=loglevel,
    )


def image_worker_env(gpu: int, base: dict[str, str]) -> dict[str, str]:
    """``base`` with the variables that bind a worker to GPU ``gpu``."""
    from workers.images.constants import ENV_CUDA_DEVICES, ENV_GPU

    return {**base, ENV_CUDA_DEVICES: str(gpu), ENV_GPU: str(gpu)}


def resolve_gpus(text: str) -> list[int]:
    """``--gpus``: ``auto`` (every GPU nvidia-smi or torch sees) or ``0,1,...``."""
    from workers.images.gpus import detect_gpus, parse_gpu_list

    if text.strip().lower() != "auto":
        return parse_gpu_list(text)
    found = detect_gpus()
    if not found:
        raise InputError(
            "--gpus auto: no GPU found (neither nvidia-smi nor torch sees one); "
            "name GPUs with --gpus 0,1 or use an API image backend"
        )
    return found


def _pump(prefix: str, stream: IO[bytes]) -> None:
    """Copy a child's output to ours, each line prefixed."""
    for line in iter(stream.readline, b""):
        with _out_lock:
            sys.stdout.buffer.write(prefix.encode() + line)
            sys.stdout.flush()
    stream.close()


def _start(gpu: int, loglevel: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        image_worker_command(gpu, loglevel),
        env=image_worker_env(gpu, dict(os.environ)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # signals come from here, by PID, not from the terminal
    )
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(f"gpu{gpu} | ", proc.stdout), daemon=True).start()
    return proc


class _Stopper:
    """Signals every child: SIGTERM (warm shutdown) first, SIGQUIT (cold) after that."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.procs = procs
        self.asked = 0

    def __call__(self, _signum: int = 0, _frame: Any = None) -> None:
        self.asked += 1
        sig = signal.SIGTERM if self.asked == 1 else signal.SIGQUIT
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, sig)


def run_gpu_workers(gpus: Sequence[int], loglevel: str) -> int:
    """Run one worker per GPU until one exits or we are told to stop; stop them all."""
    from genfleet.connection import stop_owned_redis

    procs: list[subprocess.Popen[bytes]] = []
    stop = _Stopper(procs)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        procs.extend(_start(gpu, loglevel) for gpu in gpus)
        while stop.asked == 0 and all(p.poll() is None for p in procs):
            time.sleep(_POLL_S)
    finally:
        if stop.asked == 0:
            stop()  # one worker ended on its own (or starting one failed): stop the rest
        codes = [p.wait() for p in procs]
        stop_owned_redis()
    return next((c for c in codes if c), 0)


@click.command("images")
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    help="GPU indices (e.g. 0,1,3), or 'auto' for every GPU found.",
)
@click.option("--loglevel", type=LOG_LEVELS, default="INFO", show_default=True)
def worker_images(gpus: str, loglevel: str) -> None:
    """Run one image worker per GPU (queues images, images.gpuN, control)."""
    from genfleet.connection import use_redis
    from genfleet.settings import load_settings
    from workers.images.backends import check_backend_settings

    indices = resolve_gpus(gpus)
    settings = load_settings()
    check_backend_settings(settings)
    use_redis(settings)
    click.echo(
        f"starting {len(indices)} image worker(s) on GPU {', '.join(map(str, indices))} "
        f"with backend {settings.image_backend}; Ctrl-C stops them",
        err=True,
    )
    sys.exit(run_gpu_workers(indices, loglevel))


@click.command("images")
@click.option(
    "--prompts-file",
    type=Path,
    required=True,
    help="One prompt per line (blank lines ignored), or a JSON list of texts.",
)
@click.option("--gpu", type=int, default=None, help="Pin every image to this GPU's worker.")
@click.option(
    "--out",
    type=Path,
    default=None,
    help="Folder for the pictures [default: GENFLEET_HOME/outputs/JOB].",
)
@spend_options
@click.option("--wait", is_flag=True, help="Wait for the job, with a progress bar.")
def submit_images_cmd(
    prompts_file: Path, gpu: int | None, out: Path | None, mode: str, max_cost: float | None,
    wait: bool,
) -> None:  # fmt: skip
    """Generate one image per prompt (online only, no budget: see --mode, --max-cost)."""
    from producer import views
    from producer.images import read_prompts_file, submit_images

    handle = submit_images(
        read_prompts_file(prompts_file), gpu, out_dir=out, mode=mode, max_cost_usd=max_cost
    )
    report_submitted(handle, wait=False)
    if not wait:
        return
    view = handle.wait()
    click.echo(views.status_text(view))
    for result in view.step_results():
        if result.ok and isinstance(result.output, dict):
            click.echo(f"  {result.step_id}: {result.output.get('path')}")
    sys.exit(0 if view.status in OK_STATUSES else 1)


def register(worker: click.Group, submit: click.Group) -> None:
    """Add the image commands to the ``worker`` and ``submit`` groups."""
    worker.add_command(worker_images)
    submit.add_command(submit_images_cmd)
