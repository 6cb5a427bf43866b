"""``GET /``: the status page for the shop manager (``status.html``, plain HTML and a script).

The page is served *without* the bearer token, in front of the ``Guard``: a browser cannot put
a header on a URL it is sent to. That is safe because the page is the same static bytes on
every node, with no state in it: no name, no number, no token. Its script takes the token from
the URL fragment (``/#token=...``, which a browser never sends to a server) or a small form,
keeps it in ``sessionStorage`` and calls ``/status`` and ``/incidents`` with
``Authorization: Bearer``, which the Guard checks as for any client. Only ``GET`` and ``HEAD``
of exactly ``/`` are let through; every other request, ``/`` with another method included,
goes to the Guard.

The Content-Security-Policy allows the page's own inline ``<style>`` and ``<script>`` by their
sha256 (computed here from the file, so editing it needs no hash update), ``fetch`` to the node
itself, and nothing else: no external resource, no other script, no inline handler.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from ._guard import Guard, Receive, Scope, Send

__all__ = ["PAGE_PATH", "StatusPageGuard", "page_headers", "page_html"]

PAGE_PATH = "/"
_BLOCK = {"script": re.compile(r"<script>(.*?)</script>", re.S), "style": re.compile(r"<style>(.*?)</style>", re.S)}


def _hash_source(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode("utf-8")).digest()).decode("ascii") + "'"


def _load() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    text = resources.files(__package__).joinpath("status.html").read_text(encoding="utf-8")
    sources: dict[str, str] = {}
    for kind, pattern in _BLOCK.items():
        blocks = pattern.findall(text)
        if len(blocks) != 1 or text.count(f"<{kind}") != 1:
            raise RuntimeError(f"status.html must hold exactly one plain <{kind}> block and name no other")
        sources[kind] = _hash_source(blocks[0])
    csp = ("default-src 'none'; "
           f"script-src {sources['script']}; style-src {sources['style']}; "
           "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    body = text.encode("utf-8")
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"content-security-policy", csp.encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-cache"),
    ]
    return body, headers


_BODY, _HEADERS = _load()


def page_html() -> bytes:
    """The page as served."""
    return _BODY


def page_headers() -> dict[str, str]:
    """The page's response headers (the Content-Security-Policy among them)."""
    return {name.decode(): value.decode() for name, value in _HEADERS}


class StatusPageGuard(Guard):
    """The ``Guard``, except that ``GET``/``HEAD /`` is answered with the static status page."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == PAGE_PATH and scope.get("method") in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 200, "headers": list(_HEADERS)})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else _BODY})
            return
        await super().__call__(scope, receive, send)
