"""All of genfleet's exceptions, named for what went wrong.

``GenfleetError`` is what the command line turns into one line and a non-zero exit.
LLM errors say whether a retry can help (``TransientLLMError``) or not
(``PermanentLLMError``) and carry what a person needs to act: status, provider,
model, job id, step; never an API key.
"""

from __future__ import annotations


class GenfleetError(Exception):
    """Base of every error the user should see as one line."""


class SettingsError(GenfleetError):
    """A setting from the environment or an argument is missing or out of range."""


class InputError(GenfleetError):
    """A job spec, file or command-line value is unusable; nothing was enqueued."""


class RedisUnavailableError(GenfleetError):
    """The Redis server cannot be reached or the embedded one cannot start."""


class JobNotFoundError(GenfleetError):
    """No job with that id exists (or its records have expired)."""


class JobBusyError(InputError):
    """The job cannot be changed now (e.g. resumed while a step of it is still running)."""


class StepSkipped(GenfleetError):
    """A step could not run because a step it depends on did not succeed."""


class LLMError(GenfleetError):
    """A call to an LLM provider failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider: str = "",
        model: str = "",
        job_id: str = "",
        step: str = "",
    ) -> None:
        self.status = status
        self.provider = provider
        self.model = model
        self.job_id = job_id
        self.step = step
        self.attempts = 0  # set by the gateway when it gives up
        where = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("status", status),
                ("provider", provider),
                ("model", model),
                ("job", job_id),
                ("step", step),
            )
            if value not in (None, "")
        )
        super().__init__(f"{message} ({where})" if where else message)


class TransientLLMError(LLMError):
    """Worth retrying: 408, 409, 429, 5xx, timeouts, connection errors."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)  # type: ignore[arg-type]


class ImageGenerationError(LLMError):
    """An image step gave up: its backend failed, after its retries when the error was
    transient (then a ``genfleet resume`` later may succeed). Not an LLM's failure,
    so not typed as one."""

    @classmethod
    def giving_up(cls, error: LLMError, attempts: int) -> ImageGenerationError:
        """``error``, the last one, as the step's final error."""
        final = cls(f"image generation failed after {attempts} attempt(s): {error}")
        final.status, final.provider, final.model = error.status, error.provider, error.model
        final.job_id, final.step, final.attempts = error.job_id, error.step, attempts
        return final


class RateLimitedError(TransientLLMError):
    """The provider answered 429."""


class MalformedAnswerError(TransientLLMError):
    """The provider answered 2xx with something that is not a chat answer (HTML, an
    empty body, ``{}``, no choices, null content): retried like a 5xx."""


class CallDeadlineError(TransientLLMError):
    """No complete answer within ``LLM_TIMEOUT_S`` (a wall-clock deadline); abandoned."""


class PermanentLLMError(LLMError):
    """Retrying cannot help: 400, 401, 403, 404, 422, content policy."""


class InvalidOutputError(LLMError):
    """The model answered, but not with what was asked (bad JSON, wrong shape)."""

    def __init__(self, message: str, *, raw: str = "", **kw: object) -> None:
        self.raw = raw
        super().__init__(message, **kw)  # type: ignore[arg-type]


class BudgetExceededError(PermanentLLMError):
    """A call was not made: its job's budget (or the day's) would be passed."""


MASK = "[secret]"
_MIN_SECRET_CHARS = 6  # shorter "keys" would mask ordinary words


def mask_text(text: str, secrets: list[str]) -> str:
    """``text`` with every configured secret in it replaced by ``[secret]``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_secrets(error: LLMError, secrets: list[str]) -> LLMError:
    """The same error with any secret masked in its message (a provider that echoes
    the ``Authorization`` header must not put the key in results or logs)."""
    if error.args and isinstance(error.args[0], str):
        masked = mask_text(error.args[0], secrets)
        if masked != error.args[0]:
            error.args = (masked, *error.args[1:])
    return error
