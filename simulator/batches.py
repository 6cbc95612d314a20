"""The Batch API: ``/v1/files`` and ``/v1/batches``, as OpenAI-compatible providers offer it.

A batch's input file holds one chat request per line (``custom_id``, ``method``,
``url``, ``body``). The batch is ``in_progress`` for ``batch_seconds``; then every line
is answered at once (an output file of answers, an error file of failed lines) and
the batch is ``completed``. Per-line failures: a line whose messages contain one of
``fail_patterns`` gets that status in the error file. Expiry: the first
``batch_expire_first`` batches since the start (or reset) expire instead, with only
the first half of their lines answered. Answers are built like the chat endpoint's
and counted in ``/stats`` (``chat_by_prompt``, tokens, ``batch_lines``).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from simulator.chat import completion_body, plan_chat
from simulator.config import SimulatorConfig
from simulator.errors import ApiError
from simulator.stats import Stats
from simulator.textgen import message_text

MAX_FILE_BYTES = 200 * 1024**2
MAX_LINES = 50_000
ENDPOINT = "/v1/chat/completions"
FINAL = frozenset({"completed", "expired", "cancelled", "failed"})


@dataclass
class Batch:
    """One batch: its input lines and, once finished, its output and error files."""

    id: str
    input_file_id: str
    lines: list[dict[str, Any]]
    created: float
    window: str
    metadata: dict[str, Any]
    expires: bool
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    finished_at: float | None = None

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "batch", "endpoint": ENDPOINT, "errors": None,
            "input_file_id": self.input_file_id, "completion_window": self.window,
            "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": int(self.created),
            "in_progress_at": int(self.created), "expires_at": int(self.created) + 86400,
            "completed_at": int(self.finished_at) if self.status == "completed" and
            self.finished_at else None,
            "request_counts": {"total": len(self.lines), "completed": self.completed,
                               "failed": self.failed},
            "metadata": self.metadata,
        }  # fmt: skip


@dataclass
class BatchStore:
    """Files and batches of one server."""

    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (purpose, data)
    batches: dict[str, Batch] = field(default_factory=dict)
    created: int = 0  # batches created since the start or reset

    def add_file(self, purpose: str, data: bytes) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = (purpose, data)
        return file_id

    def reset(self) -> None:
        self.files.clear()
        self.batches.clear()
        self.created = 0


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The request lines of a batch input file; a bad one is a 400."""
    lines = []
    for n, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(400, f"Line {n} of the input file is not JSON.") from None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise ApiError(400, f"Line {n} of the input file has no custom_id.")
        if line.get("url") != ENDPOINT or not isinstance(line.get("body"), dict):
            raise ApiError(400, f"Line {n}: only POST {ENDPOINT} with a body is supported.")
        lines.append(line)
    if not lines or len(lines) > MAX_LINES:
        raise ApiError(400, f"The input file must have 1 to {MAX_LINES} requests.")
    if len({line["custom_id"] for line in lines}) != len(lines):
        raise ApiError(400, "custom_id values must be unique within a batch.")
    return lines


def answer_line(line: dict[str, Any], config: SimulatorConfig, stats: Stats) -> tuple[bool, str]:
    """(ok, JSONL line) for one request: an answer, or an error line."""
    custom_id = line["custom_id"]
    request_id = f"req_{uuid.uuid4().hex[:16]}"
    try:
        plan = plan_chat(line["body"], config)
        text = message_text(line["body"].get("messages") or [])
        forced = next((st for pat, st in config.fail_patterns.items() if pat in text), None)
        if forced is not None:
            raise ApiError(forced, f"Simulated error {forced} for this line.", "server_error")
    except ApiError as e:
        out = {"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
               "response": {"status_code": e.status, "request_id": request_id, "body": e.body},
               "error": None}  # fmt: skip
        return False, json.dumps(out)
    stats.record_chat(plan.prompt_hash, plan.prompt_tokens, plan.completion_tokens)
    body = completion_body(plan, f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()))
    out = {"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id,
           "response": {"status_code": 200, "request_id": request_id, "body": body},
           "error": None}  # fmt: skip
    return True, json.dumps(out, ensure_ascii=False)


def finish(batch: Batch, store: BatchStore, config: SimulatorConfig, stats: Stats,
           now: float) -> None:  # fmt: skip
    """Answer a batch's lines (half of them when it expires) and write its files."""
    lines = batch.lines[: len(batch.lines) // 2] if batch.expires else batch.lines
    outputs: list[str] = []
    errors: list[str] = []
    for line in lines:
        ok, text = answer_line(line, config, stats)
        (outputs if ok else errors).append(text)
    stats.batch_lines += len(lines)
    batch.completed, batch.failed = len(outputs), len(errors)
    if outputs:
        batch.output_file_id = store.add_file("batch_output", "\n".join(outputs).encode() + b"\n")
    if errors:
        batch.error_file_id = store.add_file("batch_output", "\n".join(errors).encode() + b"\n")
    batch.status = "expired" if batch.expires else "completed"
    batch.finished_at = now


class BatchRoutes:
    """The handlers; ``state`` is the server's ``SimulatorState``."""

    def __init__(self, state_key: Any) -> None:
        self.key = state_key

    def _state(self, request: web.Request) -> Any:
        state = request.app[self.key]
        state.authorize(request)
        return state

    async def upload(self, request: web.Request) -> web.Response:
        """``POST /v1/files`` (multipart: ``purpose``, ``file``)."""
        state = self._state(request)
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch" or not isinstance(upload, web.FileField):
            raise ApiError(400, "Upload a 'file' with purpose 'batch'.")
        data = upload.file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ApiError(400, f"The file is larger than {MAX_FILE_BYTES} bytes.")
        file_id = state.batches.add_file("batch", data)
        return web.json_response({
            "id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
            "filename": upload.filename, "purpose": "batch", "status": "processed",
        })  # fmt: skip

    async def content(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{file_id}/content``."""
        state = self._state(request)
        found = state.batches.files.get(request.match_info["file_id"])
        if found is None:
            raise ApiError(404, "No such file.", code="not_found")
        return web.Response(body=found[1], content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/batches``."""
        state = self._state(request)
        body = await request.json()
        found = state.batches.files.get(str(body.get("input_file_id")))
        if found is None or found[0] != "batch":
            raise ApiError(400, "input_file_id does not name an uploaded batch file.")
        if body.get("endpoint") != ENDPOINT:
            raise ApiError(400, f"Only the endpoint {ENDPOINT} is supported.")
        store: BatchStore = state.batches
        store.created += 1
        batch = Batch(
            id=f"batch_{uuid.uuid4().hex[:24]}", input_file_id=body["input_file_id"],
            lines=parse_lines(found[1]), created=state.now(),
            window=str(body.get("completion_window") or "24h"),
            metadata=dict(body.get("metadata") or {}),
            expires=store.created <= state.config.batch_expire_first,
        )  # fmt: skip
        store.batches[batch.id] = batch
        return web.json_response(batch.body())

    async def get(self, request: web.Request) -> web.Response:
        """``GET /v1/batches/{batch_id}``: finished once ``batch_seconds`` have passed."""
        state = self._state(request)
        batch = self._batch(state, request)
        now = state.now()
        if batch.status == "in_progress" and now - batch.created >= state.config.batch_seconds:
            finish(batch, state.batches, state.config, state.stats, now)
        return web.json_response(batch.body())

    async def cancel(self, request: web.Request) -> web.Response:
        """``POST /v1/batches/{batch_id}/cancel``: nothing more of it is answered."""
        state = self._state(request)
        batch = self._batch(state, request)
        if batch.status not in FINAL:
            batch.status, batch.finished_at = "cancelled", state.now()
        return web.json_response(batch.body())

    def _batch(self, state: Any, request: web.Request) -> Batch:
        batch = state.batches.batches.get(request.match_info["batch_id"])
        if batch is None:
            raise ApiError(404, "No such batch.", code="not_found")
        return batch

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches/{batch_id}", self.get)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)
