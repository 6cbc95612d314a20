"""``genfleet ui``: a web view of jobs and what they made (see ``producer.ui``)."""

from __future__ import annotations

import click

from producer.cli_ops import check_port_free

SHUTDOWN_TIMEOUT_S = 2.0  # open live streams are closed after this on Ctrl-C


def _cancel(job_id: str) -> str:
    from producer.control import cancel

    return f"cancelled; {cancel(job_id)} step(s) not started were revoked"


def _resume(job_id: str) -> str:
    from producer.pipelines import resume

    _, steps = resume(job_id)
    return f"resumed {len(steps)} step(s)" if steps else "every step has a result"


@click.command("ui")
@click.option("--port", type=click.IntRange(1, 65535), default=8100, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def ui_cmd(port: int, host: str) -> None:
    """Serve a web view of jobs and their content until Ctrl-C.

    Read-only and on loopback only, unless GENFLEET_UI_AUTH=user:password is set:
    then every page asks for that credential and jobs can be cancelled and resumed.
    """
    from aiohttp import web

    from genfleet.connection import stop_owned_redis
    from producer.client import connect
    from producer.ui.app import create_app
    from producer.ui.security import Guard, check_listen, credential_from_env

    credential = credential_from_env()
    check_listen(host, credential)
    check_port_free(host, port, "genfleet ui")
    client = connect()
    app = create_app(
        client.store, Guard(credential), client.settings.genfleet_home,
        {"cancel": _cancel, "resume": _resume},
    )  # fmt: skip
    mode = "actions need the credential" if credential else "read-only"
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/jobs"
    try:
        web.run_app(
            app, host=host, port=port, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            print=lambda _: click.echo(f"genfleet ui on {url} ({mode}); Ctrl-C stops it"),
        )  # fmt: skip
    finally:
        stop_owned_redis()
