"""Who may do what in ``genfleet ui``: the credential, the listening address, the
headers every page is sent with.

Without ``GENFLEET_UI_AUTH`` the UI is read-only and listens on loopback only. With
it, every request needs HTTP basic auth, and the actions (cancel, resume) are allowed
from the UI's own pages: a form carries a per-process token, so another site cannot
post one through the browser's saved credential.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from genfleet.errors import SettingsError

AUTH_ENV = "GENFLEET_UI_AUTH"
REALM = "genfleet"
# Scripts only from the UI's own static files (no inline script can run, whatever a
# page holds); pictures from the UI or data: URLs; no framing by other sites.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Credential:
    """``user:password`` from ``GENFLEET_UI_AUTH`` (the form Flower's basic auth uses)."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, value: str) -> Credential:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise SettingsError(f"{AUTH_ENV}=(hidden) is invalid: allowed user:password")
        return cls(user, password)

    def accepts(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries this credential."""
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self.user}:{self.password}"
        return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def credential_from_env(environ: dict[str, str] | None = None) -> Credential | None:
    value = (os.environ if environ is None else environ).get(AUTH_ENV)
    return Credential.parse(value) if value else None


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SettingsError(f"cannot resolve the address {host!r}: {e.strerror}") from None
    addresses = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_listen(host: str, credential: Credential | None) -> None:
    """Refuse to serve on a non-loopback address without a credential."""
    if credential is None and not is_loopback(host):
        raise SettingsError(
            f"--host {host} is not a loopback address: set {AUTH_ENV}=user:password "
            "to serve the UI on the network"
        )


class Guard:
    """The credential (or none) and the token that forms of this process carry."""

    def __init__(self, credential: Credential | None) -> None:
        self.credential = credential
        self.form_token = secrets.token_urlsafe(24)

    @property
    def can_act(self) -> bool:
        return self.credential is not None

    def check_action(self, form_token: str | None) -> None:
        """Raise 403 unless actions are allowed and the form came from this UI."""
        if not self.can_act:
            raise web.HTTPForbidden(
                text=f"read-only: actions need {AUTH_ENV}=user:password when the UI starts\n"
            )
        if not hmac.compare_digest((form_token or "").encode(), self.form_token.encode()):
            raise web.HTTPForbidden(text="the form's token is missing or stale: reload the page\n")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.credential is not None and not self.credential.accepts(
            request.headers.get("Authorization")
        ):
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                text="credential required\n",
            )
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response
