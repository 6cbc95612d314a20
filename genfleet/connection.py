"""Where Redis is, and clients for it.

``REDIS_URL`` wins. Without it, an embedded server under ``GENFLEET_HOME`` is used:
one that is already running, or a new one, which outlives this process (see
``genfleet.embedded``).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

import redis

from genfleet.embedded import EmbeddedRedis
from genfleet.errors import RedisUnavailableError, SettingsError
from genfleet.settings import Settings, load_settings

_owned: list[EmbeddedRedis] = []


def sanitize_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and messages.

    Robust to passwords that were not percent-encoded (``/``, ``#``, ``?`` or ``@``
    in them): everything between ``://`` and the last ``@`` after the user name is
    masked, even where a URL parser would read the password as a path.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url  # a user name alone, no password
    if "/" in user or "?" in user or "#" in user:
        user = ""  # the "user" was part of an unencoded password
    return f"{scheme}://{user}:***@{host}"


def redis_ssl_options(url: str, settings: Settings) -> dict[str, Any] | None:
    """TLS options for a ``rediss://`` URL (``None`` for plain ``redis://``).

    The server's certificate is always verified (``CERT_REQUIRED``), against
    ``REDIS_CA_CERTS`` when set, else the system's CAs. The same dict serves Celery's
    ``broker_use_ssl`` and ``redis_backend_use_ssl`` and genfleet's own clients.
    """
    if urlsplit(url).scheme != "rediss":
        return None
    ca = settings.redis_ca_certs
    if ca is not None and not ca.is_file():
        raise SettingsError(f"REDIS_CA_CERTS={ca} is invalid: no such file")
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca) if ca else None}


def resolve_redis_url(settings: Settings, *, start: bool = True) -> str:
    """The Redis URL to use, starting the embedded server when needed and allowed."""
    if settings.redis_url:
        return settings.redis_url
    embedded = EmbeddedRedis(settings.genfleet_home)
    running = embedded.running_url()
    if running:
        return running
    if not start:
        raise RedisUnavailableError(
            "REDIS_URL is unset and no embedded Redis is running; "
            "set REDIS_URL or run 'genfleet redis'"
        )
    url = embedded.start()
    if embedded.owned:
        _owned.append(embedded)
    return url


def use_redis(settings: Settings) -> str:
    """Resolve the URL and export it as ``REDIS_URL`` for this process and its children."""
    url = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = url
    return url


def owns_redis() -> bool:
    """Whether this process started a Redis it must stop at exit."""
    return bool(_owned)


def stop_owned_redis() -> None:
    """Stop an embedded server this process started, unless other genfleet processes
    (workers, other commands) still use it: then it stays up for them."""
    while _owned:
        _owned.pop().stop(if_idle=True)


def stop_embedded_redis(settings: Settings) -> bool:
    """``genfleet redis stop``: stop the embedded server of ``GENFLEET_HOME``."""
    return EmbeddedRedis(settings.genfleet_home).stop()


def redis_client(url: str, settings: Settings | None = None) -> redis.Redis:
    """A decoded-strings client; raises ``RedisUnavailableError`` if it cannot connect.

    A ``rediss://`` URL gets ``redis_ssl_options`` of ``settings`` (default: read
    from the environment).
    """
    tls = redis_ssl_options(url, settings or load_settings()) if url.startswith("rediss:") else None
    try:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30,
            **(tls or {}),
        )  # fmt: skip
    except ValueError:  # its message may quote a piece of the password: not shown
        raise SettingsError(
            f"REDIS_URL={sanitize_url(url)} is invalid: give redis://[:PASSWORD@]HOST:PORT/DB "
            "(or rediss://, unix://), special characters in the password percent-encoded"
        ) from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        with contextlib.suppress(Exception):
            client.close()
        raise RedisUnavailableError(_unreachable(url, e)) from None
    return client


def _unreachable(url: str, error: Exception) -> str:
    where = sanitize_url(url)
    if isinstance(error, redis.AuthenticationError):
        return f"Redis at {where} refused the credentials: check the password in REDIS_URL"
    if "CERTIFICATE_VERIFY_FAILED" in str(error):
        return (
            f"cannot reach Redis at {where}: its TLS certificate is not trusted; "
            "set REDIS_CA_CERTS to the CA file that signed it"
        )
    return f"cannot reach Redis at {where}: {error.__class__.__name__}"
