"""The node's local HTTP API: how till software writes transactions and reads state.

``build_app(handle)`` makes the FastAPI app over a *handle*, the one object through which
the API touches the node (the runtime provides it; tests pass a fake), so the API holds no
state and can be tested without an engine. Every route is ``async`` and calls the handle on
the event loop's own thread: the engine is not thread-safe, and FastAPI would run a plain
``def`` route in a worker thread.

The handle provides::

    api_token: str                                   the bearer token (DATA/api.token)
    async commit(ops: list[tuple]) -> dict           {"origin","seq","hash","ack"} once durable
    value(key: tuple) -> JSON-able                   InvalidInput for an unknown key
    status() -> dict                                 JSON-able
    metrics() -> bytes                               Prometheus text exposition
    async import_authority(entries: list[bytes]) -> int   (optional) new authority entries taken

Errors map to statuses with a stable ``code``: 401 ``unauthorized`` (no or wrong token:
nothing else happens), 422 ``invalid_input`` (naming each bad field; the handle is not
called), 403 ``unauthorized`` (``gossip.Unauthorized``: this device may not write that),
409 ``insufficient_rights`` (with ``needed`` and ``available``), 503 ``storage_error``.

``serve_api`` runs the app under Hypercorn inside the caller's trio nursery.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol
from urllib.parse import unquote

import trio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from crdt_types import InsufficientRights, InvalidInput, StorageError, TillmeshError
from gossip import MAX_TOKEN_BYTES, Unauthorized

from ..admin import parse_authority_bundle
from ._guard import Guard
from ._models import (
    VERBS,
    AuthorityImport,
    AuthorityImported,
    ErrorBody,
    KeyValue,
    TransactionRequest,
    TransactionResult,
    check_key,
)

__all__ = ["NodeHandle", "build_app", "serve_api", "MAX_BODY_BYTES", "METRICS_CONTENT_TYPE", "MIN_TOKEN_CHARS"]

# Discriminator values pydantic puts into an error's location, which are no field a client wrote.
PAYMENT_METHODS = ("cash", "card", "member")
_TAGS = frozenset(VERBS) | frozenset(PAYMENT_METHODS)

MAX_BODY_BYTES = 64 * 1024
# An authority bundle carries the authority feed, which may be larger than a transaction.
MAX_AUTHORITY_BODY_BYTES = MAX_TOKEN_BYTES * 4 // 3 + 4096
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIN_TOKEN_CHARS = 16
API_VERSION = "1"


class NodeHandle(Protocol):
    """What the API needs of a running node (see the module docstring)."""

    api_token: str

    async def commit(self, ops: list[tuple]) -> dict[str, Any]: ...

    def value(self, key: tuple) -> Any: ...

    def status(self) -> dict[str, Any]: ...

    def metrics(self) -> bytes: ...


def _error(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "detail": detail, **extra}, status_code=status)


def _invalid(errors: list[dict[str, str]]) -> JSONResponse:
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return _error(422, "invalid_input", detail, errors=errors)


def _field_of(loc: tuple | list) -> str:
    """``("body", "ops", 0, "add", "amount")`` -> ``"ops.0.amount"``: the discriminated union
    puts the verb into the location, which is not a field the client wrote."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:]
    out: list[str] = []
    for i, part in enumerate(parts):
        if isinstance(part, str) and part in _TAGS and i > 0 and isinstance(parts[i - 1], int):
            continue
        out.append(str(part))
    return ".".join(out) or "body"


def _message_of(error: dict[str, Any]) -> tuple[str | None, str]:
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind in ("union_tag_invalid", "union_tag_not_found") and "method" in str((error.get("ctx") or {}).get(
            "discriminator", "")):
        return "method", f"a payment needs a \"method\", one of {list(PAYMENT_METHODS)}"
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag")
        return "op", f"unknown op verb {tag!r}; expected one of {list(VERBS)}"
    if kind == "union_tag_not_found":
        return "op", f"every op needs an \"op\" naming its verb, one of {list(VERBS)}"
    if kind == "int_type" and isinstance(error.get("input"), float):
        return None, "must be an integer (minor units or pieces); floats are refused"
    if kind in ("model_attributes_type", "dict_type") and tuple(error.get("loc", ())) == ("body",):
        return None, "the body must be a JSON object"
    if kind == "extra_forbidden":
        return None, "unknown field"
    if kind == "missing":
        return None, "required field missing"
    return None, message


async def _validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        extra, message = _message_of(error)
        field = _field_of(error.get("loc", ()))
        if extra is not None:
            field = f"{field}.{extra}" if field != "body" else extra
        errors.append({"field": field, "message": message})
    return _invalid(errors)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _call(make: Callable[[], Awaitable[Any]], *, field: str | None = None) -> Any:
    """Run a handle call; a refusal becomes its typed response."""
    try:
        return await make()
    except Unauthorized as exc:  # before InvalidInput: it is one
        return _error(403, "unauthorized", str(exc))
    except InsufficientRights as exc:
        return _error(409, "insufficient_rights", str(exc), needed=exc.needed, available=exc.available)
    except InvalidInput as exc:
        if field is not None:
            return _invalid([{"field": field, "message": str(exc)}])
        return _error(422, "invalid_input", str(exc))
    except StorageError as exc:
        return _error(503, "storage_error", f"not durable: {exc}")
    except TillmeshError as exc:
        return _error(500, "internal", f"{type(exc).__name__}: {exc}")


def _json(content: Any) -> Response:
    try:
        return JSONResponse(content)
    except (TypeError, ValueError):
        return _error(500, "internal", "the node returned a value that is not JSON")


def _key_from_path(raw_path: bytes) -> list:
    """``/keys/stock/central/sku%2F1`` -> ``["stock", "central", "sku/1"]``.

    Segments are percent-decoded one by one (so an escaped ``/`` stays inside its part).
    A segment ``int:N`` is the integer N (device numbers in rights keys); ``str:...`` is the
    rest taken literally, for a part that itself starts with ``int:`` or ``str:``.

    Raises:
        ValueError: an empty or undecodable segment, or ``int:`` without a number.
    """
    text = raw_path.decode("ascii", "strict")
    segments = text.split("/")[2:]  # "", "keys", kind, parts...
    parts: list[Any] = []
    for i, segment in enumerate(segments):
        part = unquote(segment, errors="strict")
        if not part:
            raise ValueError(f"key part {i} is empty")
        if part.startswith("int:"):
            digits = part[4:]
            if not (digits.isascii() and digits.isdigit()):
                raise ValueError(f"key part {i}: int: takes a number >= 0, got {part!r}")
            parts.append(int(digits))
        elif part.startswith("str:"):
            parts.append(part[4:])
        else:
            parts.append(part)
    return parts


class _AnyPath(Convertor):
    """Starlette's ``path`` convertor is ``.*``, which stops at a newline: a key part holding
    ``%0A`` fell through to an undocumented 404. This one takes every character, so that
    ``check_key`` judges the key (and answers 422 for a bad one)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("anypath", _AnyPath())

_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
    422: {"model": ErrorBody, "description": "invalid input; `errors` names each field"},
}


def _document_bearer_auth(app: FastAPI) -> None:
    """Name the bearer scheme on every operation of ``/openapi.json``; the Guard enforces it.

    Written into the schema rather than declared as an app-wide ``Depends(HTTPBearer)``, which
    would have FastAPI resolve a dependency on every request for the documentation's sake.
    """
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"HTTPBearer": {"type": "http", "scheme": "bearer"}}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation["security"] = [{"HTTPBearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_app(handle: Any) -> Guard:
    """The API app over ``handle``.

    Args:
        handle: the node's handle (``NodeHandle``); its ``api_token`` is read once, here.
    Returns:
        The ASGI app to serve: the FastAPI app (its ``.app``) behind the token and body-size
        guard, so that no route, not even ``/openapi.json``, answers without the token.
    Raises:
        InvalidInput: the handle's API token is missing or shorter than ``MIN_TOKEN_CHARS``
            (an API anyone on the LAN could write to is never served).
    """
    token = getattr(handle, "api_token", None)
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise InvalidInput(f"the API token must be printable ASCII of at least {MIN_TOKEN_CHARS} characters")

    app = FastAPI(
        title="tillmesh node", version=API_VERSION, docs_url=None, redoc_url=None, openapi_url="/openapi.json",
        description="The local API of one tillmesh node. Every request needs `Authorization: Bearer <token>` "
                    "(the node's api.token). Money and quantities are integers (minor units, pieces).",
    )
    _document_bearer_auth(app)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.post("/transactions", response_model=TransactionResult, summary="Commit one transaction",
              responses={**_REFUSALS,
                         403: {"model": ErrorBody, "description": "this device may not write that"},
                         409: {"model": ErrorBody, "description": "insufficient rights (needed/available)"},
                         503: {"model": ErrorBody, "description": "storage failed; nothing was committed"}})
    async def post_transaction(body: TransactionRequest) -> Response:
        """Apply the ops together and answer once the entry holding them is durable."""
        ops = body.as_tuples()
        result = await _call(lambda: handle.commit(ops), field="ops")
        return result if isinstance(result, Response) else _json(result)

    @app.get("/keys/{kind}/{parts:anypath}", response_model=KeyValue, summary="Read one key",
             responses=_REFUSALS)
    async def get_key(kind: str, parts: str, request: Request) -> Response:
        """The value at a key, e.g. ``/keys/stock/central/sku1``. A part ``int:N`` is the
        integer N; percent-encode a ``/`` inside a part."""
        try:
            key = check_key(_key_from_path(request.scope.get("raw_path") or request.url.path.encode()))
        except (ValueError, UnicodeError) as exc:
            return _invalid([{"field": "key", "message": str(exc)}])

        async def read() -> Any:
            return handle.value(tuple(key))

        result = await _call(read, field="key")
        return result if isinstance(result, Response) else _json({"key": key, "value": result})

    @app.get("/status", summary="Engine, links and storage status", responses=_REFUSALS)
    async def get_status() -> Response:
        async def read() -> Any:
            return handle.status()

        result = await _call(read)
        return result if isinstance(result, Response) else _json(result)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}, 401: _REFUSALS[401]})
    async def get_metrics() -> Response:
        async def read() -> Any:
            return handle.metrics()

        result = await _call(read)
        if isinstance(result, Response):
            return result
        return Response(content=result, media_type=METRICS_CONTENT_TYPE)

    @app.post("/authority", response_model=AuthorityImported, summary="Import an authority bundle",
              responses={**_REFUSALS, 501: {"model": ErrorBody, "description": "this node cannot import"}})
    async def post_authority(body: AuthorityImport) -> Response:
        """Take in the authority feed from ``tillmesh revoke`` (revocations, new devices)."""
        try:
            entries = parse_authority_bundle(body.bundle)
        except InvalidInput as exc:
            return _invalid([{"field": "bundle", "message": str(exc)}])
        except TillmeshError as exc:
            return _invalid([{"field": "bundle", "message": str(exc)}])
        importer = getattr(handle, "import_authority", None)
        if importer is None:
            return _error(501, "not_supported", "this node does not import authority bundles over the API")
        result = await _call(lambda: importer(entries), field="bundle")
        return result if isinstance(result, Response) else _json({"imported": result})

    # The POS domain (node/pos), one module per concern; they use the helpers above.
    from . import _approvals, _events, _incidents, _members, _orders, _sales, _stock

    for module in (_sales, _stock, _members, _orders, _approvals, _incidents, _events):
        module.add_routes(app, handle)

    # GET / is the status page, served ahead of the token check: it is static and holds no state.
    from ._page import StatusPageGuard

    return StatusPageGuard(app, token, MAX_BODY_BYTES, {"/authority": MAX_AUTHORITY_BODY_BYTES})


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


async def serve_api(app: Any, host: str, port: int, shutdown_trigger: Callable[[], Awaitable[Any]], *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` with Hypercorn on ``host:port`` until ``shutdown_trigger`` returns.

    Start it with ``port = await nursery.start(serve_api, app, host, port, stop.wait)``
    (``nursery.start`` takes no keywords: pass the trigger positionally or through
    ``functools.partial``); it returns once the server has shut down gracefully.

    Args:
        app: the ASGI app (``build_app``).
        host: the address to bind (``127.0.0.1`` unless the tills are elsewhere on the LAN).
        port: the port, 0 for any free one.
        task_status: trio's; ``started`` with the bound port.
        shutdown_trigger: an async callable; when it returns, the server stops.
    Raises:
        OSError: the address cannot be bound.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # request lines are not logged: nothing there is worth the risk
    config.errorlog = logging.getLogger("tillmesh.api")  # the node's logging, not a handler of its own
    config.graceful_timeout = 5.0
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown_trigger))
        task_status.started(_port_of(binds[0]))
