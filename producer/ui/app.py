"""The web app of ``genfleet ui``: routes, rendering, live updates, actions.

Redis is read through the job store only; the store is synchronous, so each read
runs in a thread. Live updates are server-sent events carrying HTML rendered here
(escaped by Jinja's autoescape), which the page's script puts in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from genfleet import constants as C
from genfleet.errors import GenfleetError, JobNotFoundError
from genfleet.kinds import all_kinds
from genfleet.records import JobView
from genfleet.store import JobStore, Progress
from producer import views
from producer.ui import files, pages
from producer.ui.content import content_for
from producer.ui.security import Guard

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LIVE_POLL_S = 1.0  # how often a live page's data is read again
BIG_JOB_STEPS = 200  # a job with more steps is re-read only when its counts change
STATUSES = (C.STATUS_QUEUED, C.STATUS_RUNNING, *sorted(C.TERMINAL_STATUSES))
STORE = web.AppKey("store", JobStore)
GUARD = web.AppKey("guard", Guard)
HOME = web.AppKey("home", Path)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
Action = Callable[[str], str]  # job id -> a line saying what was done
ACTIONS = web.AppKey("actions", dict[str, Action])


def _when(ts: float) -> Markup:
    """A moment as UTC text; the page's script turns it into an age ("12s ago"), so
    the HTML of a finished job never changes and is not sent again."""
    text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    return Markup('<time class="ago" data-ts="{:.3f}">{}</time>').format(ts, text)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _secs(value: Any) -> str:
    return f"{value:.2f}s" if isinstance(value, int | float) else "-"


def _usd(value: float) -> str:
    return f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def template_env() -> jinja2.Environment:
    """Jinja2 with autoescape on for every template: model and input text is data."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,  # outputs may lack a field: show nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, secs=_secs, usd=_usd, pretty=_pretty, digest=digest)
    return env


def render(request: web.Request, name: str, **values: Any) -> str:
    guard = request.app[GUARD]
    template = request.app[TEMPLATES].get_template(name)
    return template.render(can_act=guard.can_act, form_token=guard.form_token, **values)


def html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def job_id_of(request: web.Request) -> str:
    try:
        return views.check_job_id(request.match_info["job_id"])
    except GenfleetError as e:
        raise web.HTTPNotFound(text=f"{e}\n") from None


async def load(request: web.Request) -> JobView:
    job_id = job_id_of(request)
    try:
        view: JobView = await in_thread(request.app[STORE].load, job_id)
    except JobNotFoundError as e:
        raise web.HTTPNotFound(text=f"{e}\n") from None
    return view


def _filters(request: web.Request) -> tuple[str, str]:
    kind = request.query.get("kind", "")
    status = request.query.get("status", "")
    return (kind if len(kind) <= 64 else "", status if status in STATUSES else "")


def _rows_html(request: web.Request) -> Callable[[], Awaitable[tuple[str, bool]]]:
    kind, status = _filters(request)

    async def rows() -> tuple[str, bool]:
        found = await in_thread(pages.job_rows, request.app[STORE])
        return render(request, "_job_rows.html", rows=pages.filtered(found, kind, status)), False

    return rows


async def jobs_page(request: web.Request) -> web.Response:
    kind, status = _filters(request)
    found = await in_thread(pages.job_rows, request.app[STORE])
    rows_html = render(request, "_job_rows.html", rows=pages.filtered(found, kind, status))
    kinds = sorted(
        {k.name for k in all_kinds()} | {r.kind for r in found} | ({kind} if kind else set())
    )
    return html(
        render(request, "jobs.html", rows_html=Markup(rows_html), kind=kind, status=status,
               kinds=kinds, statuses=STATUSES)
    )  # fmt: skip


def _live_html(request: web.Request, view: JobView) -> str:
    template, content = content_for(view, request.app[STORE])
    return render(
        request, "_job_live.html", page=pages.job_page(view), content_template=template, **content
    )


async def job_page(request: web.Request) -> web.Response:
    view = await load(request)
    live = await in_thread(_live_html, request, view)
    # The fragment was rendered by the same autoescaping templates: it is safe HTML.
    return html(render(request, "job.html", view=view, live_html=Markup(live)))


def _job_live(request: web.Request) -> Callable[[], Awaitable[tuple[str, bool]]]:
    """The live part of a job's page. A big job is read whole only when its counts
    moved (a cheap read), so a 10,000-step job's open page costs little."""
    job_id = job_id_of(request)
    store = request.app[STORE]
    seen: list[tuple[Progress, str]] = []

    async def live() -> tuple[str, bool]:
        try:
            progress: Progress = await in_thread(store.progress, job_id)
        except JobNotFoundError as e:
            raise web.HTTPNotFound(text=f"{e}\n") from None
        # A cancelled job's running steps still finish: follow them to the end.
        done = progress.status in C.TERMINAL_STATUSES and not progress.running
        if seen and seen[-1][0] == progress and progress.total > BIG_JOB_STEPS:
            return seen[-1][1], done
        view = await load(request)
        text = await in_thread(_live_html, request, view)
        seen[:] = [(progress, text)]
        return text, done

    return live


def _event(name: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n".encode()


def streamer(
    make: Callable[[web.Request], Callable[[], Awaitable[tuple[str, bool]]]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A server-sent-events handler: sends ``update`` with fresh HTML whenever it
    changed, and ``end`` once there will be no more changes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        produce = make(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        last = request.query.get("since")  # the digest of what the page shows already
        try:
            while True:
                text, done = await produce()
                if digest(text) != last:
                    await response.write(_event("update", text))
                    last = digest(text)
                if done:
                    await response.write(_event("end", ""))
                    break
                await asyncio.sleep(LIVE_POLL_S)
        except (ConnectionResetError, web.HTTPNotFound):
            pass  # the browser left, or the job expired
        return response

    return handler


async def download(request: web.Request) -> web.Response:
    fmt = request.match_info["fmt"]
    view = await load(request)
    store = request.app[STORE]

    def read_inputs(names: list[str]) -> dict[str, str | None]:
        return dict(zip(names, store.inputs(view.id, names), strict=True))

    text = await in_thread(views.results_text, view, fmt, read_inputs)
    return web.Response(
        text=text + "\n",
        content_type="application/x-ndjson" if fmt == "jsonl" else "application/json",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{view.id}.{fmt}"'},
    )


async def picture(request: web.Request) -> web.FileResponse:
    view = await load(request)
    path = files.picture_file(view, request.match_info["step_id"], request.app[HOME])
    return files.picture_response(path)


async def input_image(request: web.Request) -> web.Response:
    job_id = job_id_of(request)
    key = request.match_info["key"]
    data_url = await in_thread(request.app[STORE].input, job_id, f"image:{key}")
    return files.input_image(data_url)


async def act(request: web.Request) -> web.Response:
    """Cancel or resume a job (only with a credential, from a form of this UI)."""
    job_id = job_id_of(request)
    form = await request.post()
    token = form.get("token")
    request.app[GUARD].check_action(token if isinstance(token, str) else None)
    action = request.app[ACTIONS][request.match_info["action"]]
    try:
        message = await in_thread(action, job_id)
    except GenfleetError as e:
        raise web.HTTPConflict(text=f"{e}\n") from None
    logger.info("ui: job %s: %s", job_id, message)
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/jobs")


def create_app(
    store: JobStore, guard: Guard, genfleet_home: Path, actions: dict[str, Action]
) -> web.Application:
    """The UI's aiohttp application. ``actions`` maps ``cancel`` and ``resume`` to the
    producer's functions (see ``producer.cli_ui``)."""
    app = web.Application(middlewares=[guard.middleware], client_max_size=64 * 1024)
    app[STORE] = store
    app[GUARD] = guard
    app[HOME] = genfleet_home
    app[TEMPLATES] = template_env()
    app[ACTIONS] = actions
    job = "/jobs/{job_id}"
    app.router.add_get("/", root)
    app.router.add_get("/jobs", jobs_page)
    app.router.add_get("/events/jobs", streamer(_rows_html))
    app.router.add_get(job, job_page)
    app.router.add_get("/events" + job, streamer(_job_live))
    app.router.add_get(job + "/results.{fmt:jsonl|json}", download)
    app.router.add_get(job + "/pictures/{step_id}", picture)
    app.router.add_get(job + "/inputs/{key}/image", input_image)
    app.router.add_post(job + "/{action:cancel|resume}", act)
    app.router.add_static("/static", HERE / "static")
    return app
