"""Open orders: ``POST /orders``, ``GET /orders/{order_id}``, lines added (``POST``), changed
(``PATCH``) and removed (``DELETE``) by their ``line_id``, and ``POST /orders/{order_id}/close``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from ..pos import OrderClose, OrderCreate, OrderLine, OrderLineChange
from ._domain import POS_REFUSALS, PathId, Result, pos_call
from ._sales import SaleResult


def add_routes(app: FastAPI, handle: Any) -> None:
    @app.post("/orders", response_model=Result, summary="Open an order", tags=["orders"], responses=POS_REFUSALS)
    async def post_order(body: OrderCreate) -> Response:
        """An order shared by every device (a table's tab, a kitchen ticket); opening it again
        returns it as it is."""
        return await pos_call(handle, lambda shop: shop.create_order(body))

    @app.get("/orders/{order_id}", response_model=Result, summary="An order", tags=["orders"],
             responses=POS_REFUSALS)
    async def get_order(order_id: PathId) -> Response:
        return await pos_call(handle, lambda shop: shop.order(order_id))

    @app.post("/orders/{order_id}/lines", response_model=Result, summary="Add a line", tags=["orders"],
              responses=POS_REFUSALS)
    async def post_line(order_id: PathId, body: OrderLine) -> Response:
        return await pos_call(handle, lambda shop: shop.add_order_line(order_id, body))

    @app.patch("/orders/{order_id}/lines/{line_id}", response_model=Result, summary="Change a line",
               tags=["orders"], responses=POS_REFUSALS)
    async def patch_line(order_id: PathId, line_id: PathId, body: OrderLineChange) -> Response:
        return await pos_call(handle, lambda shop: shop.change_order_line(order_id, line_id, body))

    @app.delete("/orders/{order_id}/lines/{line_id}", response_model=Result, summary="Remove a line",
                tags=["orders"], responses=POS_REFUSALS)
    async def delete_line(order_id: PathId, line_id: PathId) -> Response:
        return await pos_call(handle, lambda shop: shop.remove_order_line(order_id, line_id))

    @app.post("/orders/{order_id}/close", response_model=SaleResult, summary="Close an order into a sale",
              tags=["orders"], responses=POS_REFUSALS)
    async def post_close(order_id: PathId, body: OrderClose) -> Response:
        """The order's lines become a sale with these payments (as `POST /sales`), and the
        order is closed, in one entry. Retrying with the same `sale_id` returns the sale."""
        return await pos_call(handle, lambda shop: shop.close_order(order_id, body))
