"""Faults of a hostile provider, for the reliability tests (``tests/test_faults*.py``).

``malformed_patterns`` maps a text found in a request's messages to a malformed
HTTP 200 body, optionally for the first N matching requests only (``"html*2"``):

``html``         an HTML error page with ``Content-Type: text/html``
``empty``        an empty body
``not_json``     a body that is not JSON
``{}``           an empty JSON object
``no_choices``   a completion with ``choices: []``
``null_content`` a completion whose message content is ``null``

``drip_s`` > 0 sends every chat answer one byte at a time, ``drip_s`` apart.
``retry_after_text`` replaces the ``Retry-After`` of injected 429s (``"soon"``).
``echo_auth`` makes every error answer repeat the request's ``Authorization`` header,
as some proxies do.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from simulator.garbage import PatternRules, parse_rule

MALFORMED_KINDS = frozenset({"html", "empty", "not_json", "{}", "no_choices", "null_content"})


def parse_malformed_rule(rule: str) -> tuple[str, int | None]:
    """``"html*2"`` -> (``"html"``, 2); ``"empty"`` -> (``"empty"``, None)."""
    return parse_rule(rule, MALFORMED_KINDS, "malformed")


class Malformed(PatternRules):
    """Which requests get a malformed body."""

    kinds = MALFORMED_KINDS
    what = "malformed"


def malformed_response(kind: str, good: dict[str, Any]) -> web.Response:
    """The HTTP 200 answer of one malformed kind (``good`` is the real completion)."""
    if kind == "html":
        page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(text=page, content_type="text/html")
    if kind == "empty":
        return web.Response(body=b"", content_type="application/json")
    if kind == "not_json":
        return web.Response(text="upstream said: ok", content_type="application/json")
    if kind == "{}":
        return web.json_response({})
    doc = json.loads(json.dumps(good))
    if kind == "no_choices":
        doc["choices"] = []
    else:  # null_content
        for choice in doc["choices"]:
            choice["message"]["content"] = None
    return web.json_response(doc)


async def dripped_response(request: web.Request, doc: dict[str, Any], gap_s: float) -> Any:
    """Send ``doc`` as JSON one byte at a time, ``gap_s`` apart (until the client leaves)."""
    body = json.dumps(doc).encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    for offset in range(len(body)):
        await response.write(body[offset : offset + 1])
        await asyncio.sleep(gap_s)
    await response.write_eof()
    return response


def echoing_auth(body: dict[str, Any], authorization: str) -> dict[str, Any]:
    """An error body whose message repeats the request's Authorization header."""
    error = dict(body.get("error") or {})
    said = error.get("message", "error")
    error["message"] = f"{said} (request had Authorization: {authorization})"
    return {**body, "error": error}
