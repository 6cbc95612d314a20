"""``genfleet metrics``, ``genfleet flower`` and ``genfleet stats``: watching the cluster."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from genfleet.errors import InputError, RedisUnavailableError, SettingsError

if TYPE_CHECKING:
    from genfleet.settings import Settings
    from producer.clusterstats import ClusterStats

FLOWER_AUTH_ENV = "FLOWER_BASIC_AUTH"  # read by Flower itself: kept off the command line


def port_in_use_error(host: str, port: int, what: str) -> InputError:
    return InputError(
        f"port {port} is in use on {host or '0.0.0.0'} ({what} already running, or another "
        "program): stop it or choose another --port"
    )


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail with one line if nothing could listen on ``host:port`` now."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise InputError(f"cannot resolve the address {host!r}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    try:
        with socket.create_server(address, family=family):
            pass
    except OSError as e:
        raise _listen_error(e, host, port, what) from None


def _listen_error(error: OSError, host: str, port: int, what: str) -> InputError:
    if error.errno == errno.EADDRINUSE:
        return port_in_use_error(host, port, what)
    return InputError(f"cannot listen on {host}:{port}: {error.strerror or error}")


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass


@click.command("metrics")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def metrics_cmd(port: int, host: str) -> None:
    """Serve Prometheus metrics at http://HOST:PORT/metrics until Ctrl-C."""
    from genfleet.connection import stop_owned_redis
    from genfleet.settings import load_settings
    from producer.client import connect, connect_unchecked
    from producer.metrics import registry_for, serve

    try:
        client = connect()
    except RedisUnavailableError as e:  # it may come back: serve genfleet_redis_up 0 meanwhile
        click.echo(f"genfleet: warning: {e}; genfleet_redis_up is 0 until it answers", err=True)
        client = connect_unchecked(load_settings())
    registry = registry_for(client.settings, client.store.r, client.app)
    try:
        server = serve(registry, host, port)
    except OSError as e:
        raise _listen_error(e, host, port, "an exporter") from None
    click.echo(f"serving metrics on http://{host}:{port}/metrics; Ctrl-C stops it")
    try:
        wait_for_stop()
    finally:
        server.shutdown()
        stop_owned_redis()


def _check_flower_auth() -> None:
    value = os.environ.get(FLOWER_AUTH_ENV)
    if value is None:
        return
    pairs = value.split(",")
    if not all(":" in p and p.split(":", 1)[0] and p.split(":", 1)[1] for p in pairs):
        raise SettingsError(
            f"{FLOWER_AUTH_ENV}=(hidden) is invalid: allowed user:password[,user2:password2]"
        )


def flower_command(port: int, address: str, extra: tuple[str, ...]) -> list[str]:
    """The plain ``celery -A workers flower`` command genfleet runs."""
    return [
        sys.executable, "-m", "celery", "-A", "workers", "flower",
        f"--port={port}", f"--address={address}", *extra,
    ]  # fmt: skip


@click.command("flower", context_settings={"ignore_unknown_options": True})
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower_cmd(port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Run Flower, Celery's web monitor ('celery -A workers flower'), in the foreground.

    Basic auth comes from FLOWER_BASIC_AUTH=user:password (read by Flower from the
    environment, so it does not show in 'ps'). Other arguments go to Flower as they are.
    """
    from genfleet.connection import use_redis
    from genfleet.settings import load_settings
    from producer.processes import run_foreground

    _check_flower_auth()
    if any(a.startswith("--basic-auth") or a.startswith("--basic_auth") for a in flower_args):
        click.echo(
            f"genfleet: warning: --basic-auth shows in 'ps'; use {FLOWER_AUTH_ENV}", err=True
        )
    check_port_free(address, port, "Flower")
    settings = load_settings()
    use_redis(settings)
    _enable_task_events(settings)
    sys.exit(run_foreground(flower_command(port, address, flower_args)))


def _enable_task_events(settings: Settings) -> None:
    """Turn task events on in the running workers now (Flower does it too, but only
    every few seconds), so the first tasks after Flower starts show in it."""
    from producer.client import connect

    connect(settings).app.control.enable_events()


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def stats_cmd(as_json: bool) -> None:
    """Show workers, queues, keys (limits, 429s, cache) and jobs of the cluster."""
    from rich.console import Console

    from producer.client import connect
    from producer.clusterstats import gather

    client = connect()
    stats = gather(client.settings, client.store.r, client.app)
    if as_json:
        click.echo(json.dumps(stats.to_dict(), indent=2, sort_keys=True))
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=200, no_color=True, highlight=False)
    for renderable in stats_tables(stats, plain=not console.is_terminal):
        console.print(renderable)


def stats_tables(stats: ClusterStats, *, plain: bool) -> list[Any]:
    """Rich tables of the stats: queues and workers, keys and models, jobs and cache."""
    from rich import box
    from rich.table import Table

    style = box.ASCII2 if plain else box.SIMPLE_HEAVY
    queues = Table("queue", "waiting", "workers", title="Queues", box=style, title_justify="left")
    for queue, depth in stats.queues.items():
        queues.add_row(queue, str(depth), ", ".join(stats.workers.get(queue, [])) or "-")
    keys = Table(
        "key", "model", "calls", "ok", "429 rate", "5xx", "in flight", "eff. conc.",
        "req/min", "tok/min", "cooldown s", "cost", title="Keys", box=style,
        title_justify="left",
    )  # fmt: skip
    for key in stats.keys:
        c = key.counters
        name = key.key_id + (" (disabled)" if key.disabled else "")
        # The call counters are the key's, over all its models: shown once, on its
        # first row (repeated on every model row they would read as double).
        counters = [
            str(c.get("calls", 0)), str(c.get("ok", 0)), f"{key.rate_limited_ratio:.1%}",
            str(c.get("server_errors", 0)),
        ]  # fmt: skip
        for n, scope in enumerate(key.models):
            keys.add_row(
                name if n == 0 else "", scope.model, *(counters if n == 0 else ["", "", "", ""]),
                str(scope.in_flight), f"{scope.effective_concurrency}/{scope.max_concurrent}",
                str(scope.requests_in_window), str(scope.tokens_in_window),
                f"{scope.cooldown_left_s:.1f}", _cost(key.costs, scope.model),
            )  # fmt: skip
    jobs = ", ".join(f"{n} {s}" for s, n in stats.jobs.items()) or "none"
    cache = stats.cache
    lines = (
        f"jobs: {jobs}\n"
        f"cache: {cache.hits} hits of {cache.requests} requests ({cache.hit_ratio:.1%})\n"
        f"unacknowledged messages: {stats.unacked}; Redis {stats.redis}"
    )
    return [queues, keys, lines]


def _cost(costs: dict[str, float | None], model: str) -> str:
    """A (key, model)'s spending: ``-`` when unused, ``unknown`` without a price."""
    if model not in costs:
        return "-"
    from genfleet.prices import format_usd

    return format_usd(costs[model])


def register(cli: click.Group) -> None:
    """Add ``metrics``, ``flower`` and ``stats`` to the ``genfleet`` command."""
    for command in (metrics_cmd, flower_cmd, stats_cmd):
        cli.add_command(command)
