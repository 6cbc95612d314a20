"""Making one picture with retries: the image side of the project's one retry policy.

Transient errors (timeouts, 429, 5xx, connection errors) are retried up to
``IMAGE_GENERATION_MAX_RETRIES`` times with ``workers.retry``'s backoff (Retry-After
honoured); a wait longer than ``INLINE_WAIT_MAX_S`` re-schedules the task instead
(``RetryLater``). A moderation rejection is retried once, at once, with the
simplified prompt (``workers.images.simplify``); both prompts are kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from genfleet import constants as C
from genfleet.errors import ImageGenerationError, LLMError, TransientLLMError
from workers.gateway_types import RetryLater
from workers.images.base import ContentPolicyError, ImageBackend, ImageRequest, Rendered
from workers.images.simplify import simplify_prompt
from workers.retry import retry_delay

logger = logging.getLogger(__name__)


@dataclass
class Generated:
    """A picture and how it was obtained."""

    rendered: Rendered
    prompt: str
    simplified_prompt: str | None
    attempts: int  # calls made, all deliveries of the task included
    seconds: float


def generate_image(
    backend: ImageBackend,
    request: ImageRequest,
    *,
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> Generated:
    """Make the picture of ``request``; raises ``LLMError`` (with ``attempts``) or
    ``RetryLater``."""
    started = time.monotonic()
    attempts, retries = request.attempts, 0
    simplified: str | None = None
    while True:
        prompt = simplified or request.prompt
        try:
            rendered = backend.generate(replace(request, prompt=prompt, attempts=attempts))
        except ContentPolicyError as e:
            attempts += 1
            simplified = _after_moderation(request, e, simplified, attempts)
            continue
        except TransientLLMError as e:
            attempts, retries = attempts + 1, retries + 1
            _wait_before_retry(request, e, retries, attempts, max_retries, sleep)
            continue
        except LLMError as e:
            raise ImageGenerationError.giving_up(e, attempts + 1) from e
        seconds = round(time.monotonic() - started, 3)
        return Generated(rendered, request.prompt, simplified, attempts + 1, seconds)


def _after_moderation(
    request: ImageRequest, error: ContentPolicyError, simplified: str | None, attempts: int
) -> str:
    """The prompt to try next after a moderation rejection, or raise when there is none."""
    error.attempts = attempts
    if simplified is not None:
        error.args = (f"{error} (also with the simplified prompt {simplified!r})",)
        raise error
    tamer = simplify_prompt(request.prompt)
    if tamer is None:
        error.args = (f"{error} (the prompt cannot be simplified further)",)
        raise error
    logger.warning(
        "job %s step %s: prompt refused by the content policy; retrying as %r",
        request.job_id,
        request.step,
        tamer,
    )
    return tamer


def _wait_before_retry(
    request: ImageRequest,
    error: TransientLLMError,
    retries: int,
    attempts: int,
    max_retries: int,
    sleep: Callable[[float], None],
) -> None:
    if retries > max_retries or attempts > max_retries + 2:  # +2: one moderation retry
        raise ImageGenerationError.giving_up(error, attempts) from error
    delay = retry_delay(error, retries)
    if delay > C.INLINE_WAIT_MAX_S:
        raise RetryLater(delay, attempts, f"image backoff after: {error}")
    logger.warning(
        "job %s step %s: image attempt %d failed (%s); retry in %.2fs",
        request.job_id,
        request.step,
        attempts,
        error,
        delay,
    )
    sleep(delay)
