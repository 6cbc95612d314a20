"""What the two API backends share: the key and base URL, the cluster-wide cap on
image calls in flight, HTTP error mapping and decoding the picture.

The cap is ``IMAGE_GENERATION_MAX_CONCURRENT`` calls per (base URL, key id,
``images:`` + model) for the whole cluster, held in the gateway's ``ClusterLimiter``
(keys ``genfleet:lim:{scope}:*``). A call that cannot get a slot within
``SLOT_WAIT_S`` re-schedules its task (``RetryLater``) instead of holding on.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import redis
from PIL import Image, UnidentifiedImageError

from genfleet import constants as C
from genfleet.errors import (
    LLMError,
    PermanentLLMError,
    RateLimitedError,
    SettingsError,
    TransientLLMError,
)
from genfleet.settings import Settings
from workers.gateway_types import RetryLater
from workers.heartbeat import renewing
from workers.images.base import ContentPolicyError, ImageRequest
from workers.images.constants import DEFAULT_API_IMAGE_MODEL
from workers.keypool import ApiKey, keys_from_settings
from workers.limiter import ClusterLimiter, Denied, Grant, Limits, Scope
from workers.retry import error_for_status, parse_retry_after

logger = logging.getLogger(__name__)

MODERATION_CODE = "content_policy_violation"
SLOT_WAIT_S = 30.0  # an image call takes seconds to minutes: wait this long inline ...
SLOT_RESCHEDULE_S = 2.0  # ... then re-schedule the task this far out


@dataclass(frozen=True)
class ApiTarget:
    """Where image calls go: base URL, the key (id and secret) and the model."""

    base_url: str
    key: ApiKey
    model: str

    @property
    def scope(self) -> Scope:
        return Scope(self.base_url, self.key.key_id, "images:" + self.model)


def target_from_settings(settings: Settings) -> ApiTarget:
    """``IMAGE_BASE_URL`` (else the key's base URL), the pool's first key, ``IMAGE_MODEL``."""
    keys = keys_from_settings(settings)
    key = keys[0]
    base_url = (settings.image_base_url or key.provider).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError(f"IMAGE_BASE_URL={base_url} is invalid: allowed http(s) URLs")
    return ApiTarget(base_url, key, settings.image_model or DEFAULT_API_IMAGE_MODEL)


class ImageSlots:
    """At most ``max_concurrent`` image calls of one scope in flight, cluster-wide."""

    def __init__(self, client: redis.Redis, scope: Scope, max_concurrent: int) -> None:
        self.limiter = ClusterLimiter(client)
        self.scope = scope
        # A slot lives LEASE_S and is renewed while its picture is made, so a dead
        # worker's slot comes back within seconds, as an LLM call's does.
        self.limits = Limits(max_concurrent=max_concurrent, lease_s=C.LEASE_S)

    @contextmanager
    def held(self, request: ImageRequest) -> Iterator[float]:
        """Hold a slot for the block; yields the seconds waited for it."""
        started = time.monotonic()
        grant = self.limiter.acquire(
            self.scope, self.limits, 0, max_wait_s=SLOT_WAIT_S, job_id=request.job_id
        )
        if isinstance(grant, Denied):
            raise RetryLater(
                max(grant.wait_s, SLOT_RESCHEDULE_S),
                request.attempts,
                f"image limiter: {grant.reason}",
            )
        ok = False
        try:
            with renewing(f"image slot {grant.lease_id}", lambda: self._renew(grant)):
                yield time.monotonic() - started
            ok = True
        except RateLimitedError as e:
            cooldown = self.limiter.report_rate_limited(self.scope, self.limits, e.retry_after_s)
            logger.warning(
                "job %s step %s: image API answered 429; every worker pauses %.2fs",
                request.job_id,
                request.step,
                cooldown,
            )
            raise
        finally:
            self.limiter.release(grant, ok=ok)

    def _renew(self, grant: Grant) -> None:
        if not self.limiter.renew(grant, C.LEASE_S):
            logger.warning("image slot %s had expired while its call ran", grant.lease_id)


def status_error(
    status: int, body: Any, headers: Mapping[str, str] | None, *, provider: str, model: str
) -> LLMError:
    """The genfleet error for an HTTP error answer of an image API."""
    error = body.get("error") if isinstance(body, dict) else None
    detail = error if isinstance(error, dict) else (body if isinstance(body, dict) else {})
    message = str(detail.get("message") or f"the image API answered HTTP {status}")[:200]
    if status == 400 and detail.get("code") == MODERATION_CODE:
        return ContentPolicyError(message, status=status, provider=provider, model=model)
    retry_after = parse_retry_after(headers)
    return error_for_status(status, message, retry_after, provider=provider, model=model)


def decode_image(data: bytes | str, *, provider: str, model: str) -> Image.Image:
    """The picture in an answer (raw bytes or base64 text); a clear error if it is none."""
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else data
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise PermanentLLMError(
            f"the image API's answer is not a picture ({e.__class__.__name__})",
            provider=provider,
            model=model,
        ) from e
    return image


def transport_error(exc: httpx2.HTTPError, *, provider: str, model: str) -> LLMError:
    """The genfleet error for a failed HTTP exchange (no answer, or an error status)."""
    if isinstance(exc, httpx2.HTTPStatusError):
        response = exc.response
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        return status_error(
            response.status_code, body, response.headers, provider=provider, model=model
        )
    if isinstance(exc, httpx2.TimeoutException):
        return TransientLLMError("the image API timed out", provider=provider, model=model)
    return TransientLLMError(
        f"cannot reach the image API ({exc.__class__.__name__})", provider=provider, model=model
    )


def download(url: str, timeout_s: float, *, provider: str, model: str) -> bytes:
    """The bytes behind a picture's ``url``."""
    try:
        response = httpx2.get(url, timeout=timeout_s, follow_redirects=True)
        response.raise_for_status()
    except httpx2.HTTPError as e:
        raise transport_error(e, provider=provider, model=model) from e
    return response.content
