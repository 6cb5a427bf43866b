"""``POST /approvals`` (a till asks), ``POST /approvals/{sale_id}/grant`` (a manager's
device grants), ``GET /approvals`` (pending requests)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel
from typing_extensions import Annotated

from ..pos import ApprovalRequest
from ._domain import POS_REFUSALS, PathId, Result, pos_call


class Approvals(BaseModel):
    approvals: list[dict[str, Any]]


def add_routes(app: FastAPI, handle: Any) -> None:
    @app.post("/approvals", response_model=Result, summary="Ask for a sale's approval", tags=["approvals"],
              responses=POS_REFUSALS)
    async def post_approval(body: ApprovalRequest) -> Response:
        """A sale above the approval threshold is written only once a manager's device has
        granted its `sale_id`; follow `GET /events?kinds=grant` for the answer."""
        return await pos_call(handle, lambda shop: shop.request_approval(body))

    @app.post("/approvals/{sale_id}/grant", response_model=Result, summary="Grant an approval", tags=["approvals"],
              responses=POS_REFUSALS)
    async def post_grant(sale_id: PathId) -> Response:
        """From a manager's or HQ device only (else 403 `unauthorized`)."""
        return await pos_call(handle, lambda shop: shop.grant_approval(sale_id))

    @app.get("/approvals", response_model=Approvals, summary="Approval requests", tags=["approvals"],
             responses=POS_REFUSALS)
    async def get_approvals(pending: Annotated[bool, Query(description="only those not granted yet")] = True
                            ) -> Response:
        return await pos_call(handle, lambda shop: {"approvals": shop.approvals(pending_only=pending)})
