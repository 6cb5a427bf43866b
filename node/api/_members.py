"""``POST /members/{member_id}/topups``, ``POST /charges``, ``GET /members/{member_id}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from ..pos import ChargeRequest, TopupRequest
from ._domain import POS_REFUSALS, PathId, Result, pos_call


def add_routes(app: FastAPI, handle: Any) -> None:
    @app.post("/members/{member_id}/topups", response_model=Result, summary="Top up a member's balance",
              tags=["members"], responses=POS_REFUSALS)
    async def post_topup(member_id: PathId, body: TopupRequest) -> Response:
        """The rights to spend the top-up are this device's (others ask for them when they charge)."""
        return await pos_call(handle, lambda shop: shop.topup(member_id, body))

    @app.post("/charges", response_model=Result, summary="Charge a member's balance", tags=["members"],
              responses=POS_REFUSALS)
    async def post_charge(body: ChargeRequest) -> Response:
        """Beyond the balance: 409 `insufficient_balance`; beyond this device's rights: it asks
        for a transfer and waits (`[pos] rights_wait_ms`), then 409 `insufficient_rights`."""
        return await pos_call(handle, lambda shop: shop.charge(body))

    @app.get("/members/{member_id}", response_model=Result, summary="A member's balance", tags=["members"],
             responses=POS_REFUSALS)
    async def get_member(member_id: PathId) -> Response:
        return await pos_call(handle, lambda shop: shop.member(member_id))
