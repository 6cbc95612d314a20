"""The API key pool: which keys exist, their limits, which are usable, and their clients.

Keys come from ``GENFLEET_PROVIDERS`` (a providers.toml: several base URLs, each with
its keys and limits) or from ``OPENAI_API_KEYS`` / ``OPENAI_API_KEY`` with the
``LLM_*`` limits. Only key *ids* ("openai.1") leave this module; the secrets stay in
the worker process. A key that answers 401/403 is taken out of the pool for the whole
cluster (a Redis hash) with a log line.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from pydantic import BaseModel, Field, ValidationError

from genfleet import constants as C
from genfleet.errors import SettingsError
from genfleet.settings import RpmLimit, Settings, TpmLimit
from workers.limiter import Limits
from workers.provider_call import SDK_PLATFORM_HEADERS, omitted
from workers.ratelimit_headers import limits_of

if TYPE_CHECKING:  # the SDK takes seconds to import: only workers that call load it
    import openai

logger = logging.getLogger(__name__)

DEFAULT_PROVIDER = "https://api.openai.com/v1"
USABLE_FRESH_S = 1.0  # how long a worker trusts its last read of the locked-out keys
LEASE_MARGIN_MAX_S = 30.0  # a lease outlives the call's timeout by up to this much


def lease_seconds(timeout_s: float) -> float:
    """How long an unrenewed lease must live for a call of ``timeout_s`` (image calls).

    LLM calls do not use this: the gateway renews their leases while they run, so
    theirs live only ``LEASE_S`` and a dead worker's slot comes back within seconds.
    """
    return timeout_s + min(LEASE_MARGIN_MAX_S, timeout_s)


@dataclass(frozen=True)
class ApiKey:
    """One key: its id (safe to show), provider, limits and the secret (never shown)."""

    key_id: str
    provider: str
    limits: Limits
    secret: str = field(repr=False)


class _ProviderEntry(BaseModel):
    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str = Field(min_length=1)
    keys: list[str] = Field(default_factory=list)
    keys_env: list[str] = Field(default_factory=list)
    max_concurrent: int = Field(default=20, ge=1, le=1024)
    rpm: RpmLimit = 0  # or "auto": learned from the provider's headers
    tpm: TpmLimit = 0


class _ProvidersFile(BaseModel):
    provider: list[_ProviderEntry] = Field(min_length=1)


def _env_key(name: str, path: Path) -> str:
    import os

    value = os.environ.get(name, "")
    if not value:
        raise SettingsError(f"{path}: keys_env names {name}, which is not set")
    return value


def keys_from_file(path: Path, lease_s: float = C.LEASE_S) -> list[ApiKey]:
    """Read a providers.toml; one clear line on any problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        parsed = _ProvidersFile.model_validate(data)
    except FileNotFoundError:
        raise SettingsError(f"GENFLEET_PROVIDERS={path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"GENFLEET_PROVIDERS={path}: cannot read it: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SettingsError(f"GENFLEET_PROVIDERS={path}: {where}: {first['msg']}") from None
    out: list[ApiKey] = []
    for entry in parsed.provider:
        secrets = [*entry.keys, *(_env_key(n, path) for n in entry.keys_env)]
        if not secrets:
            raise SettingsError(f"GENFLEET_PROVIDERS={path}: provider {entry.name} has no keys")
        limits = limits_of(entry.max_concurrent, entry.rpm, entry.tpm, lease_s)
        out += [
            ApiKey(f"{entry.name}.{n}", entry.base_url, limits, secret)
            for n, secret in enumerate(secrets, 1)
        ]
    return out


def keys_from_settings(settings: Settings) -> list[ApiKey]:
    """The pool as the settings describe it."""
    lease_s = C.LEASE_S  # renewed by the gateway while a call runs
    if settings.genfleet_providers:
        return keys_from_file(settings.genfleet_providers, lease_s)
    secrets = settings.api_keys()
    if not secrets:
        raise SettingsError(
            "OPENAI_API_KEY is not set: the LLM worker needs an API key "
            "(or OPENAI_API_KEYS, or GENFLEET_PROVIDERS)"
        )
    limits = limits_of(settings.llm_max_concurrent, settings.llm_rpm_limit,
                       settings.llm_tpm_limit, lease_s)  # fmt: skip
    provider = settings.openai_base_url or DEFAULT_PROVIDER
    return [ApiKey(f"key{n}", provider, limits, s) for n, s in enumerate(secrets, 1)]


def fingerprint(secret: str) -> str:
    """A short one-way name of a key's text: what a lock-out is about (not the key id,
    which stays the same when the operator replaces a refused key)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def disabled_key(secret: str) -> str:
    return C.KEY_DISABLED_KEY.format(fingerprint=fingerprint(secret))


class KeyPool:
    """The usable keys and one ``openai`` client per key (SDK retries off)."""

    def __init__(self, keys: list[ApiKey], client: redis.Redis, timeout_s: float) -> None:
        if not keys:
            raise SettingsError("the API key pool is empty")
        self.keys = keys
        self.redis = client
        self.timeout_s = timeout_s
        self._clients: dict[str, openai.OpenAI] = {}
        self._lock = threading.Lock()
        self._usable: tuple[float, list[ApiKey]] | None = None  # (read at, keys)

    def secrets(self) -> list[str]:
        """The key texts, for masking them out of provider errors (never to show)."""
        return [k.secret for k in self.keys]

    def usable(self) -> list[ApiKey]:
        """Keys not taken out of the pool (by fingerprint: a replaced key works at once).

        Read from Redis at most every ``USABLE_FRESH_S`` (not on every call): a key
        another worker took out is skipped here within that long."""
        seen = self._usable
        now = time.monotonic()
        if seen is not None and now - seen[0] < USABLE_FRESH_S:
            return seen[1]
        locked = self.redis.mget([disabled_key(k.secret) for k in self.keys])
        keys = [k for k, lock in zip(self.keys, locked, strict=True) if lock is None]
        self._usable = (now, keys)
        return keys

    def disable(self, key: ApiKey, reason: str) -> float:
        """Take a key out of the pool for every worker; returns for how long.

        The first refusal locks it out for ``DISABLED_KEY_FIRST_S``, each repeat within
        ``DISABLED_KEY_TTL_S`` twice as long, up to ``DISABLED_KEY_TTL_S``: one
        transient 401 does not stop a one-key cluster for an hour.
        """
        fp = fingerprint(key.secret)
        refusals = C.KEY_KEY_REFUSALS.format(fingerprint=fp)
        with self.redis.pipeline() as pipe:
            pipe.incr(refusals)
            pipe.expire(refusals, 2 * C.DISABLED_KEY_TTL_S)
            count = int(pipe.execute()[0])
        seconds = min(C.DISABLED_KEY_TTL_S, C.DISABLED_KEY_FIRST_S * 2 ** (count - 1))
        with self.redis.pipeline() as pipe:
            pipe.set(disabled_key(key.secret), f"{key.key_id}: {reason}", ex=seconds)
            pipe.hset(C.KEY_DISABLED_KEYS, key.key_id, fp)  # for genfleet stats (no secret)
            pipe.expire(C.KEY_DISABLED_KEYS, C.DISABLED_KEY_TTL_S)
            pipe.execute()
        self._usable = None  # read again: this key is out now
        logger.error("API key %s (%s) taken out of the pool for %ds: %s", key.key_id,
                     key.provider, seconds, reason)  # fmt: skip
        return float(seconds)

    def client_for(self, key: ApiKey) -> openai.OpenAI:
        """The process's one client for a key (connection reuse)."""
        import openai

        with self._lock:
            client = self._clients.get(key.key_id)
            if client is None:
                client = openai.OpenAI(
                    api_key=key.secret,
                    base_url=key.provider,
                    max_retries=0,
                    timeout=self.timeout_s,
                    default_headers=omitted(SDK_PLATFORM_HEADERS),
                )
                self._clients[key.key_id] = client
            return client
