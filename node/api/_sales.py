"""``POST /sales``, ``GET /sales/{sale_id}``, ``POST /refunds``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel

from ..pos import RefundRequest, SaleRequest
from ._domain import POS_REFUSALS, PathId, Result, pos_call


class SaleResult(BaseModel):
    sale_id: str
    total: int
    device: int | None
    seq: int | None
    ack: Literal["local", "lan", "anchor"]
    replayed: bool
    offline_card: int
    oversold: list[str]
    approved_by: int | None
    order_id: str | None = None


class SaleInfo(SaleResult):
    record: dict[str, Any]
    refunded: dict[str, int]


def add_routes(app: FastAPI, handle: Any) -> None:
    @app.post("/sales", response_model=SaleResult, summary="Sell", tags=["sales"], responses=POS_REFUSALS)
    async def post_sale(body: SaleRequest) -> Response:
        """Write a sale: its record, stock decrements and member charges in one entry, once durable.

        The `sale_id` is the idempotency key: the same id and body again returns the first
        result (`replayed: true`) and writes nothing, so a retry is always safe; another body
        under that id is 409 `sale_conflict`. A `unit_price` left out is the effective price
        here (branch override, else chain price). A member charge beyond this device's rights
        waits for a transfer, then is 409 `insufficient_rights` with nothing written; above
        the approval threshold a sale needs a manager's grant (409 `approval_required`).
        `ack` says where the sale is held: `local` (this disk), `lan`, `anchor`."""
        return await pos_call(handle, lambda shop: shop.sale(body))

    @app.get("/sales/{sale_id}", response_model=SaleInfo, summary="A sale and its safety level", tags=["sales"],
             responses=POS_REFUSALS)
    async def get_sale(sale_id: PathId) -> Response:
        return await pos_call(handle, lambda shop: shop.sale_info(sale_id))

    @app.post("/refunds", response_model=Result, summary="Refund (part of) a sale", tags=["sales"],
              responses=POS_REFUSALS)
    async def post_refund(body: RefundRequest) -> Response:
        """Refund lines of a known sale (404 `unknown_sale`), at most what was sold over all its
        refunds (409 `refund_exceeds_sale`); the stock goes back into this branch. `refund_id`
        is the idempotency key."""
        return await pos_call(handle, lambda shop: shop.refund(body))
