"""``POST /stock/receipts``, ``POST /stocktakes``, ``POST /transfers``, ``POST /prices``,
``GET /prices/{sku}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import Response
from typing_extensions import Annotated

from ..pos import PriceRequest, ReceiptRequest, StocktakeRequest, TransferRequest
from ._domain import POS_REFUSALS, PathId, Result, pos_call

BranchQuery = Annotated[str | None, Query(min_length=1, max_length=128, pattern=r"^[!-~]+$")]


def add_routes(app: FastAPI, handle: Any) -> None:
    @app.post("/stock/receipts", response_model=Result, summary="Receive stock", tags=["stock"],
              responses=POS_REFUSALS)
    async def post_receipt(body: ReceiptRequest) -> Response:
        """Add the pieces received to a branch's stock (default: this device's branch)."""
        return await pos_call(handle, lambda shop: shop.receive(body))

    @app.post("/stocktakes", response_model=Result, summary="Stocktake", tags=["stock"], responses=POS_REFUSALS)
    async def post_stocktake(body: StocktakeRequest) -> Response:
        """Each counted sku moves by counted − observed (observed: the stock shown when counting
        began, default the stock now), all in one entry."""
        return await pos_call(handle, lambda shop: shop.stocktake(body))

    @app.post("/transfers", response_model=Result, summary="Move stock between branches", tags=["stock"],
              responses=POS_REFUSALS)
    async def post_transfer(body: TransferRequest) -> Response:
        """Out of one branch and into the other in one entry (a manager's device; beyond the
        source's stock: 409 `insufficient_stock`)."""
        return await pos_call(handle, lambda shop: shop.transfer(body))

    @app.post("/prices", response_model=Result, summary="Set a price", tags=["prices"], responses=POS_REFUSALS)
    async def post_price(body: PriceRequest) -> Response:
        """A chain-wide price, or a branch override with `branch` (managers and HQ: else 403)."""
        return await pos_call(handle, lambda shop: shop.set_price(body))

    @app.get("/prices/{sku}", response_model=Result, summary="A sku's prices", tags=["prices"],
             responses=POS_REFUSALS)
    async def get_price(sku: PathId, branch: BranchQuery = None) -> Response:
        """Chain price, branch override and the effective price (override, else chain)."""
        return await pos_call(handle, lambda shop: shop.price(sku, branch))
