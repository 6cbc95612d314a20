"""The one settings object, read from the environment; explicit arguments win.

Every value is range-checked when the object is built. A bad value raises
``SettingsError`` whose message is one line naming the variable, the value and the
allowed range, e.g. ``LLM_MAX_RETRIES=9 is invalid: allowed 0-5``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from genfleet.errors import SettingsError

_SECRET_FIELDS = frozenset({"openai_api_key", "openai_api_keys"})
AUTO = "auto"  # LLM_RPM_LIMIT / LLM_TPM_LIMIT: learn the limit from the provider's headers
RpmLimit = Annotated[int, Field(ge=0, le=10_000_000)] | Literal["auto"]
TpmLimit = Annotated[int, Field(ge=0, le=1_000_000_000)] | Literal["auto"]
_RANGES = {  # fields whose type is a union: their allowed values, for the error line
    "llm_rpm_limit": "allowed 0-10000000 or auto",
    "llm_tpm_limit": "allowed 0-1000000000 or auto",
}


class Settings(BaseSettings):
    """genfleet's settings. Field ``x_y`` is read from the variable ``X_Y``."""

    model_config = SettingsConfigDict(
        frozen=True, populate_by_name=True, extra="ignore", case_sensitive=False
    )

    redis_url: str | None = Field(default=None, description="Redis for broker and results")
    # CA bundle that signs the server's certificate for rediss:// URLs (default: the
    # system's CAs). Certificates are always verified.
    redis_ca_certs: Path | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_api_keys: SecretStr | None = None  # comma-separated pool of keys
    genfleet_providers: Path | None = None  # a providers.toml: base URLs, keys, limits
    llm_model: str = Field(default="gpt-4o-mini", min_length=1, max_length=200)
    llm_draft_model: str | None = Field(default=None, min_length=1, max_length=200)
    llm_review_model: str | None = Field(default=None, min_length=1, max_length=200)
    llm_max_concurrent: int = Field(
        default=20,
        ge=1,
        le=1024,
        validation_alias=AliasChoices("llm_max_concurrent", "LLM_MAX_CONCURRENT", "MAX_CONCURRENT"),
    )
    llm_max_retries: int = Field(default=3, ge=0, le=5)
    llm_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    llm_max_tokens: int = Field(default=1024, ge=1, le=200_000)
    llm_rpm_limit: RpmLimit = 0
    llm_tpm_limit: TpmLimit = 0
    genfleet_prices: Path | None = None  # a prices.toml overriding the built-in prices
    llm_budget_usd_per_day: float = Field(default=0.0, ge=0, le=1_000_000_000)
    llm_batch_poll_s: float = Field(default=30.0, ge=0.05, le=3600)
    llm_batch_completion_window: str = Field(default="24h", pattern=r"^[1-9][0-9]{0,3}h$")
    llm_batch_max_requests: int = Field(default=50_000, ge=1, le=50_000)
    llm_batch_max_bytes: int = Field(default=200 * 1024**2, ge=1024, le=200 * 1024**2)
    llm_cache_ttl_s: int = Field(default=24 * 3600, ge=0, le=365 * 24 * 3600)
    writer_chapter_version_count: int = Field(default=2, ge=1, le=10)
    writer_parallel_generation: bool = True
    writer_max_parallel_requests: int = Field(default=3, ge=1, le=10)
    image_backend: Literal["placeholder", "openai", "async-task", "diffusers"] = "placeholder"
    image_model: str | None = None  # diffusers: a model folder; openai: a model name
    image_base_url: str | None = None  # image API (default OPENAI_BASE_URL)
    image_size: str = Field(default="512x512", pattern=r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$")
    image_generation_max_concurrent: int = Field(default=3, ge=1, le=256)
    image_generation_poll_interval: float = Field(default=5.0, ge=0.01, le=300)
    image_generation_max_wait_time: float = Field(default=180.0, ge=1, le=24 * 3600)
    image_generation_max_retries: int = Field(default=3, ge=0, le=10)
    genfleet_home: Path = Field(default_factory=lambda: Path.home() / ".genfleet")
    result_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=365 * 24 * 3600)
    broker_visibility_timeout_s: int = Field(default=3600, ge=5, le=7 * 24 * 3600)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    # Celery task events cost a Redis publish per task state; on only where a monitor
    # reads them (``genfleet flower`` turns them on in running workers by itself).
    genfleet_task_events: bool = False

    def api_key(self) -> str | None:
        """The plain API key, for the worker's client only."""
        return self.openai_api_key.get_secret_value() if self.openai_api_key else None

    def api_keys(self) -> list[str]:
        """The key pool: ``OPENAI_API_KEYS`` if set, else ``OPENAI_API_KEY`` alone."""
        if self.openai_api_keys:
            keys = [k.strip() for k in self.openai_api_keys.get_secret_value().split(",")]
            return [k for k in keys if k]
        key = self.api_key()
        return [key] if key else []

    @property
    def draft_model(self) -> str:
        return self.llm_draft_model or self.llm_model

    @property
    def review_model(self) -> str:
        return self.llm_review_model or self.llm_model


_SHOWN_MAX_CHARS = 60


def _allowed(field_name: str) -> str:
    info = Settings.model_fields.get(field_name)
    if info is None:
        return ""
    if field_name in _RANGES:
        return _RANGES[field_name]
    low: object = None
    high: object = None
    low_open = False
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        if isinstance(item, annotated_types.Gt):
            low, low_open = item.gt, True
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = getattr(item, "le", getattr(item, "lt", None))
    if low is not None and high is not None:
        return f"allowed above {low} up to {high}" if low_open else f"allowed {low}-{high}"
    if info.annotation is bool:
        return "allowed true or false"
    if field_name == "log_level":
        return "allowed DEBUG, INFO, WARNING, ERROR"
    if field_name == "image_backend":
        return "allowed placeholder, openai, async-task, diffusers"
    if field_name == "image_size":
        return "allowed WIDTHxHEIGHT, e.g. 512x512"
    if field_name == "llm_batch_completion_window":
        return "allowed hours such as 24h"
    return ""


def _variable(field: str, value: object) -> str:
    """The environment variable the bad value came from (an alias such as
    ``MAX_CONCURRENT`` included), else the field's own name in capitals."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    names = [field.upper()]
    if isinstance(alias, AliasChoices):
        names += [str(choice).upper() for choice in alias.choices]
    environ = {k.upper(): v for k, v in os.environ.items()}
    for name in dict.fromkeys(names):
        if name in environ and environ[name] == value:
            return name
    return field.upper()


def _shown(value: object) -> str:
    """A value as one short line: control characters escaped, long values cut."""
    text = str(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > _SHOWN_MAX_CHARS:
        text = text[:_SHOWN_MAX_CHARS] + f"... ({len(str(value))} characters)"
    return text


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    info_name = field if field in Settings.model_fields else _field_of_alias(field)
    value = first.get("input")
    variable = _variable(info_name, value) if info_name else field.upper()
    shown = "(hidden)" if info_name in _SECRET_FIELDS else _shown(value)
    reason = _allowed(info_name) or _shown(first["msg"])
    return f"{variable}={shown} is invalid: {reason}"


def _field_of_alias(name: str) -> str:
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and name.lower() in (
            str(c).lower() for c in alias.choices
        ):
            return field
    return name.lower() if name.lower() in Settings.model_fields else ""


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; ``overrides`` (by field name) beat the environment."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise SettingsError(_one_line(e)) from None
