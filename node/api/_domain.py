"""What every POS route shares: calling the node's shop and turning refusals into responses.

A POS route calls ``handle.pos`` (``node.pos.Shop``); a domain refusal (``node.pos.PosError``)
becomes its status and body (``code``, ``detail``, the ``field`` to blame, ``errors`` for a
422), and everything else the node raises goes through the low-level API's mapping (403
``unauthorized``, 409 ``insufficient_rights``, 503 ``storage_error``). A node without a shop
(a relay) answers 501 ``not_supported``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from fastapi import Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from typing_extensions import Annotated

from ..pos import PosError
from . import _call, _error, _json

__all__ = ["pos_call", "POS_REFUSALS", "PosErrorBody", "PathId", "Result"]


class PosErrorBody(BaseModel):
    """A refusal: ``code`` to branch on, ``detail`` for people, ``field`` to blame (if one)."""

    model_config = ConfigDict(extra="allow")
    code: str
    detail: str
    field: str | None = None
    errors: list[dict[str, str]] | None = None
    needed: int | None = None
    available: int | None = None


class Result(BaseModel):
    """The operation's result (see the endpoint's description)."""

    model_config = ConfigDict(extra="allow")


POS_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": PosErrorBody, "description": "missing or wrong bearer token"},
    403: {"model": PosErrorBody, "description": "this device's roles may not do that (`unauthorized`)"},
    404: {"model": PosErrorBody, "description": "an unknown sale, order, line, approval or incident"},
    409: {"model": PosErrorBody, "description": "refused by the shop's rules; `code` says which"},
    422: {"model": PosErrorBody, "description": "invalid input; `errors` names each field"},
    501: {"model": PosErrorBody, "description": "this node holds no shop data (a relay)"},
    503: {"model": PosErrorBody, "description": "storage failed; nothing was written"},
}

PathId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[!-~]+$",
                             description="1..128 printable ASCII characters, no spaces")]


async def pos_call(handle: Any, make: Callable[[Any], Any]) -> Response:
    """``make(shop)`` (a value or an awaitable) as a response."""
    shop = getattr(handle, "pos", None)
    if shop is None:
        return _error(501, "not_supported", "this node holds no shop data (a relay, or a node without a shop)")

    async def run() -> Any:
        try:
            result = make(shop)
            if inspect.isawaitable(result):
                result = await result
            return result
        except PosError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    result = await _call(run)
    return result if isinstance(result, Response) else _json(result)
