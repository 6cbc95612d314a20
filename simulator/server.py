"""The OpenAI-compatible HTTP server: routes, the gate every call passes, and counters.

Every ``/v1`` call that passes authentication goes through :meth:`SimulatorState.gate`:
the per-key caps first, then an injected error drawn from ``error_rates``, then the
simulated latency. ``/stats``, ``/stats/reset`` and ``/admin/config`` let tests watch
and steer the server while it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from simulator.batches import BatchRoutes, BatchStore
from simulator.caps import KeyCaps
from simulator.chat import completion_body, int_field, plan_chat
from simulator.config import TIMEOUT_ERROR, SimulatorConfig
from simulator.errors import ApiError, cap_error, injected_error, moderation_error
from simulator.faults import Malformed, dripped_response, echoing_auth, malformed_response
from simulator.garbage import Garbage
from simulator.images import DEFAULT_SIZE, parse_size, render_b64, render_png
from simulator.stats import Stats, key_id
from simulator.textgen import message_text
from simulator.tokens import count_text

logger = logging.getLogger(__name__)

MODELS = ("gpt-4o-mini", "gpt-4o", "sim-chat", "sim-image")
MAX_TASKS = 10_000
_LARGE_IMAGE = 512 * 512  # bigger pictures are drawn off the event loop


def _bearer(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class ImageTask:
    """An asynchronous image job; its status follows from its age."""

    prompt: str
    width: int
    height: int
    created: float
    fails: bool


class SimulatorState:
    """The mutable heart of one server: config holder, caps, counters, RNGs, tasks."""

    def __init__(self, config: SimulatorConfig, now: Callable[[], float] = time.monotonic):
        self.config = config
        self.now = now
        self.caps = KeyCaps(now)
        self.stats = Stats()
        self.tasks: dict[str, ImageTask] = {}
        self.garbage = Garbage()
        self.malformed = Malformed()
        self.batches = BatchStore()
        self.reseed()

    def reseed(self) -> None:
        """Restart the error and jitter RNGs from the configured seed."""
        self._error_rng = random.Random(self.config.seed)
        self._jitter_rng = random.Random(self.config.seed + 1)

    def reset(self) -> None:
        """Zero counters and cap windows, and restart the RNGs."""
        self.stats.reset()
        self.caps.reset()
        self.garbage = Garbage()
        self.malformed = Malformed()
        self.batches.reset()
        self.reseed()

    def authorize(self, request: web.Request) -> str:
        """Return the caller's API key, or raise the 401/403 it deserves."""
        key = _bearer(request)
        if key is None:
            raise ApiError(401, "You didn't provide an API key.", code="missing_api_key")
        if key in self.config.forbidden_keys:
            raise ApiError(403, "This API key may not use this resource.", code="forbidden")
        if self.config.valid_keys and key not in self.config.valid_keys:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return key

    async def gate(self, key: str, tokens: int, output_tokens: int = 0) -> None:
        """Caps, then an injected error, then the latency of a call."""
        cfg = self.config
        rejection = self.caps.admit(key, tokens, cfg.rpm, cfg.tpm)
        if rejection is not None:
            raise cap_error(rejection)
        kind = self._draw_error()
        if kind == TIMEOUT_ERROR:
            await asyncio.sleep(cfg.timeout_s)
            raise ApiError(504, "The request timed out (simulated).", "timeout")
        if kind is not None:
            raise injected_error(kind, cfg.retry_after_s)
        delay_ms = cfg.latency_ms + cfg.per_token_ms * output_tokens
        if cfg.jitter_ms:
            delay_ms += self._jitter_rng.uniform(-cfg.jitter_ms, cfg.jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)

    def rate_headers(self, key: str) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers of an answer to ``key`` (of its capped kinds)."""
        return self.caps.headers(key, self.config.rpm, self.config.tpm)

    def _draw_error(self) -> str | None:
        rates = self.config.error_rates
        if not rates:
            return None
        draw, total = self._error_rng.random(), 0.0
        for kind, rate in rates.items():
            total += rate
            if draw < total:
                return kind
        return None

    def check_prompt(self, prompt: str) -> None:
        """Raise the content-policy 400 when an image prompt has a moderation word."""
        lowered = prompt.lower()
        if any(word.lower() in lowered for word in self.config.moderation_words):
            raise moderation_error()

    def add_task(self, prompt: str, width: int, height: int) -> str:
        """Start an asynchronous image task and return its id."""
        while len(self.tasks) >= MAX_TASKS:
            self.tasks.pop(next(iter(self.tasks)))
        lowered = prompt.lower()
        fails = any(w.lower() in lowered for w in self.config.task_failure_words)
        task_id = f"task_{uuid.uuid4().hex}"
        self.tasks[task_id] = ImageTask(prompt, width, height, self.now(), fails)
        return task_id


STATE = web.AppKey("state", SimulatorState)


# --- request parsing ---------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _prompt_field(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "'prompt' must be a non-empty string.")
    return prompt


def _size_field(body: Mapping[str, Any]) -> tuple[int, int]:
    try:
        return parse_size(str(body.get("size") or DEFAULT_SIZE))
    except ValueError as e:
        raise ApiError(400, str(e)) from None


# --- chat and images ---------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    state = request.app[STATE]
    key = state.authorize(request)
    body = await _json_body(request)
    plan = plan_chat(body, state.config)
    text = message_text(body.get("messages") or [])
    spoiled = state.garbage.kind_for(state.config.garbage_patterns, text)
    if spoiled is not None:
        state.garbage.apply(plan.choices, spoiled, text)
    state.stats.record_chat_call(plan.prompt_hash)
    with state.stats.tracking():
        if plan.forced_status is not None:
            raise injected_error(str(plan.forced_status), state.config.retry_after_s)
        try:
            await state.gate(key, plan.admission_tokens, plan.completion_tokens)
        except ApiError as e:
            e.headers.update(state.rate_headers(key))
            raise
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        doc = completion_body(plan, completion_id, int(time.time()))
        malformed = state.malformed.kind_for(state.config.malformed_patterns, text)
        if malformed is not None:
            return malformed_response(malformed, doc)
        if state.config.drip_s > 0:
            return await dripped_response(request, doc, state.config.drip_s)
    state.stats.record_chat(plan.prompt_hash, plan.prompt_tokens, plan.completion_tokens)
    return web.json_response(doc, headers=state.rate_headers(key))


async def _draw_b64(prompt: str, width: int, height: int, variant: int) -> str:
    if width * height > _LARGE_IMAGE:
        return await asyncio.to_thread(render_b64, prompt, width, height, variant)
    return render_b64(prompt, width, height, variant)


async def images_generations(request: web.Request) -> web.Response:
    """``POST /v1/images/generations``: PNGs as ``b64_json`` or as a ``url``."""
    state = request.app[STATE]
    key = state.authorize(request)
    body = await _json_body(request)
    prompt, (width, height) = _prompt_field(body), _size_field(body)
    n = int_field(body, "n", 1, 1, 10) or 1
    fmt = body.get("response_format") or "b64_json"
    if fmt not in ("b64_json", "url"):
        raise ApiError(400, "'response_format' must be 'b64_json' or 'url'.")
    state.check_prompt(prompt)
    with state.stats.tracking():
        await state.gate(key, count_text(prompt))
        if fmt == "url":
            data = [{"url": _render_url(request, prompt, width, height, i)} for i in range(n)]
        else:
            data = [{"b64_json": await _draw_b64(prompt, width, height, i)} for i in range(n)]
    return web.json_response({"created": int(time.time()), "data": data})


def _render_url(request: web.Request, prompt: str, width: int, height: int, variant: int) -> str:
    query = {"prompt": prompt, "size": f"{width}x{height}", "variant": str(variant)}
    return str(request.url.with_path("/v1/images/render").with_query(query))


async def image_render(request: web.Request) -> web.Response:
    """``GET /v1/images/render``: the picture behind a ``url`` answer."""
    width, height = _size_field(request.query)
    prompt = request.query.get("prompt", "")
    raw_variant = request.query.get("variant", "0")
    variant = min(int(raw_variant), 9) if raw_variant.isdigit() else 0
    png = render_png(prompt, width, height, variant)
    return web.Response(body=png, content_type="image/png")


async def create_image_task(request: web.Request) -> web.Response:
    """``POST /v1/images/tasks``: start an asynchronous image job."""
    state = request.app[STATE]
    key = state.authorize(request)
    body = await _json_body(request)
    prompt, (width, height) = _prompt_field(body), _size_field(body)
    state.check_prompt(prompt)
    with state.stats.tracking():
        await state.gate(key, count_text(prompt))
    task_id = state.add_task(prompt, width, height)
    return web.json_response({"task_id": task_id, "status": "pending"})


async def get_image_task(request: web.Request) -> web.Response:
    """``GET /v1/images/tasks/{task_id}``: poll a job; not capped, no errors injected."""
    state = request.app[STATE]
    state.authorize(request)
    task_id = request.match_info["task_id"]
    task = state.tasks.get(task_id)
    if task is None:
        raise ApiError(404, f"No image task {task_id!r}.", code="not_found")
    age, duration = state.now() - task.created, state.config.image_task_seconds
    answer: dict[str, Any] = {"task_id": task_id}
    if age < duration:
        answer["status"] = "pending" if age < duration / 5 else "running"
    elif task.fails:
        answer["status"] = "failed"
        answer["error"] = {"message": "The image task failed (simulated).", "code": "task_failed"}
    else:
        answer["status"] = "succeeded"
        answer["b64_json"] = await _draw_b64(task.prompt, task.width, task.height, 0)
    return web.json_response(answer)


# --- models, stats and admin ------------------------------------------------------------


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "simulator"} for m in MODELS]
    return web.json_response({"object": "list", "data": data})


async def get_stats(request: web.Request) -> web.Response:
    """``GET /stats``."""
    return web.json_response(request.app[STATE].stats.snapshot())


async def reset_stats(request: web.Request) -> web.Response:
    """``POST /stats/reset``: zero counters and cap windows, restart the RNGs."""
    request.app[STATE].reset()
    return web.json_response({"ok": True})


async def admin_config(request: web.Request) -> web.Response:
    """``GET``/``POST /admin/config``: read or change the run-time settings."""
    state = request.app[STATE]
    if request.method == "POST":
        changes = await _json_body(request)
        try:
            state.config = state.config.updated(changes)
            state.garbage = Garbage()
        except (AttributeError, TypeError, ValueError) as e:
            raise ApiError(400, f"Bad config change: {e}") from None
        logger.info("config changed: %s", sorted(changes))
    return web.json_response({"config": state.config.runtime_view()})


# --- the application ------------------------------------------------------------------


@web.middleware
async def _errors_and_counts(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn :class:`ApiError` into JSON answers and count every ``/v1`` call."""
    status = "500"
    arrived = time.time()
    try:
        try:
            response = await handler(request)
        except ApiError as e:
            response = _error_response(request, e)
        except web.HTTPException as e:
            status = str(e.status)
            raise
        status = str(response.status)
        return response
    except asyncio.CancelledError:
        status = "499"  # the client went away before the answer
        raise
    finally:
        if request.path.startswith("/v1/"):
            route = request.match_info.route.resource
            path = route.canonical if route is not None else request.path
            request.app[STATE].stats.record(path, key_id(_bearer(request)), status, arrived)


def _error_response(request: web.Request, error: ApiError) -> web.Response:
    config = request.app[STATE].config
    body, headers = error.body, dict(error.headers)
    if config.echo_auth:
        body = echoing_auth(body, request.headers.get("Authorization", ""))
    if error.status == 429 and config.retry_after_text:
        headers.pop("retry-after-ms", None)
        headers["Retry-After"] = config.retry_after_text
    return web.json_response(body, status=error.status, headers=headers)


def create_app(
    config: SimulatorConfig, now: Callable[[], float] = time.monotonic
) -> web.Application:
    """Build the aiohttp application for ``config``."""
    app = web.Application(middlewares=[_errors_and_counts], client_max_size=32 * 1024**2)
    app[STATE] = SimulatorState(config, now)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/images/generations", images_generations)
    app.router.add_get("/v1/images/render", image_render)
    app.router.add_post("/v1/images/tasks", create_image_task)
    app.router.add_get("/v1/images/tasks/{task_id}", get_image_task)
    BatchRoutes(STATE).register(app)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/stats/reset", reset_stats)
    app.router.add_route("*", "/admin/config", admin_config)
    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    config: SimulatorConfig, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve until ``stop`` is set; ``on_ready`` gets the base URL once listening."""
    runner = web.AppRunner(
        create_app(config), access_log=None, shutdown_timeout=1.0, handler_cancellation=True
    )
    await runner.setup()
    try:
        sock = _bind(config.host, config.port)
        await web.SockSite(runner, sock, backlog=1024).start()
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        base_url = f"http://{shown}:{port}/v1"
        logger.info("simulator listening on %s", base_url)
        if on_ready is not None:
            on_ready(base_url)
        await stop.wait()
    finally:
        await runner.cleanup()
