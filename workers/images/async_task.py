"""IMAGE_BACKEND=async-task: APIs that start a task, then are polled (seed 004).

``POST {base}/images/tasks`` with ``{"model", "prompt", "size"}`` answers a
``task_id``; ``GET {base}/images/tasks/{task_id}`` answers its ``status``
(pending, running, succeeded or failed) and, once it succeeded, the picture as
``b64_json`` or ``url``. The task is polled every ``IMAGE_GENERATION_POLL_INTERVAL``
seconds; one not done after ``IMAGE_GENERATION_MAX_WAIT_TIME`` is a transient
timeout. The API key goes as a Bearer token. The cluster-wide slot is held from
the task's creation until its answer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx2
import redis
from PIL import Image

from genfleet.errors import LLMError, PermanentLLMError, TransientLLMError
from genfleet.settings import Settings
from workers.images.base import ContentPolicyError, ImageRequest, Rendered
from workers.images.remote import (
    MODERATION_CODE,
    ImageSlots,
    decode_image,
    download,
    target_from_settings,
    transport_error,
)

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0  # one create or poll request
DONE_STATUSES = frozenset({"succeeded", "success", "completed", "done"})
FAILED_STATUSES = frozenset({"failed", "failure", "error", "cancelled", "canceled"})


class AsyncTaskBackend:
    """Create a task, poll it to the end, decode its picture."""

    name = "async-task"
    placeholder = False

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.target = target_from_settings(settings)
        self.model = self.target.model
        self.poll_s = settings.image_generation_poll_interval
        self.max_wait_s = settings.image_generation_max_wait_time
        self.http = httpx2.Client(
            headers={"Authorization": f"Bearer {self.target.key.secret}"},
            timeout=REQUEST_TIMEOUT_S,
        )
        self.slots = ImageSlots(client, self.target.scope, settings.image_generation_max_concurrent)

    def generate(self, request: ImageRequest) -> Rendered:
        with self.slots.held(request) as waited:
            task_id = self._create(request)
            answer = self._wait(task_id, request)
        return Rendered(self._picture(answer), self.model, self.target.key.key_id, round(waited, 4))

    def _create(self, request: ImageRequest) -> str:
        body = {
            "model": self.model,
            "prompt": request.prompt,
            "size": f"{request.width}x{request.height}",
        }
        answer = self._send("POST", "/images/tasks", body)
        task_id = answer.get("task_id") or answer.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise self._permanent("the image API started no task (no task_id in its answer)")
        logger.info("job %s step %s: image task %s started", request.job_id, request.step, task_id)
        return task_id

    def _wait(self, task_id: str, request: ImageRequest) -> dict[str, Any]:
        deadline = time.monotonic() + self.max_wait_s
        while True:
            answer = self._poll(task_id, request)
            status = str(answer.get("status", "")).lower()
            if status in DONE_STATUSES:
                return answer
            if status in FAILED_STATUSES:
                raise self._task_failed(task_id, answer)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransientLLMError(
                    f"image task {task_id} did not finish within {self.max_wait_s:g}s "
                    "(IMAGE_GENERATION_MAX_WAIT_TIME)",
                    provider=self.target.base_url,
                    model=self.model,
                )
            time.sleep(min(self.poll_s, left))

    def _poll(self, task_id: str, request: ImageRequest) -> dict[str, Any]:
        """One status read; a transient failure of a poll is only logged (polling goes on)."""
        try:
            return self._send("GET", f"/images/tasks/{task_id}")
        except TransientLLMError as e:
            logger.warning(
                "job %s step %s: polling image task %s failed (%s); polling on",
                request.job_id,
                request.step,
                task_id,
                e,
            )
            return {}

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.target.base_url + path
        try:
            response = self.http.request(method, url, json=body)
            response.raise_for_status()
            answer = response.json()
        except httpx2.HTTPError as e:
            raise transport_error(e, provider=self.target.base_url, model=self.model) from e
        except ValueError as e:
            raise self._permanent("the image API's answer is not JSON") from e
        if not isinstance(answer, dict):
            raise self._permanent("the image API's answer is not a JSON object")
        return answer

    def _task_failed(self, task_id: str, answer: dict[str, Any]) -> LLMError:
        error = answer.get("error")
        error = error if isinstance(error, dict) else {}
        message = f"image task {task_id} failed: {error.get('message') or 'no reason given'}"
        provider, model = self.target.base_url, self.model
        if error.get("code") == MODERATION_CODE:
            return ContentPolicyError(message, provider=provider, model=model)
        # A task that failed at the provider is worth another try (as a new task).
        return TransientLLMError(message, provider=provider, model=model)

    def _picture(self, answer: dict[str, Any]) -> Image.Image:
        provider = self.target.base_url
        if answer.get("b64_json"):
            return decode_image(str(answer["b64_json"]), provider=provider, model=self.model)
        if answer.get("url"):
            raw = download(
                str(answer["url"]), REQUEST_TIMEOUT_S, provider=provider, model=self.model
            )
            return decode_image(raw, provider=provider, model=self.model)
        raise self._permanent("the finished image task holds no picture")

    def _permanent(self, message: str) -> PermanentLLMError:
        return PermanentLLMError(message, provider=self.target.base_url, model=self.model)
