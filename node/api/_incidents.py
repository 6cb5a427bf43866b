"""``GET /incidents``, ``POST /incidents/{incident_id}/ack``, and ``GET /rollups``."""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel
from typing_extensions import Annotated

from ..pos import IncidentAck
from ._domain import POS_REFUSALS, PathId, Result, pos_call


class Incidents(BaseModel):
    incidents: list[dict[str, Any]]


Short = Annotated[str | None, Query(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
Day = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="UTC day, YYYY-MM-DD")]


def add_routes(app: FastAPI, handle: Any) -> None:
    @app.get("/incidents", response_model=Incidents, summary="The incident ledger", tags=["incidents"],
             responses=POS_REFUSALS)
    async def get_incidents(open: Annotated[bool, Query(description="only those not resolved")] = False,
                            kind: Short = None, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
        """Newest first: oversells, refused overdrafts, conflicting sales, clock skew, forks,
        unauthorized ops, revoked devices; each with its time, device, reporter and evidence."""
        return await pos_call(handle, lambda shop: {"incidents": shop.incidents(open_only=open, kind=kind,
                                                                                limit=limit)})

    @app.post("/incidents/{incident_id}/ack", response_model=Result, summary="Acknowledge an incident",
              tags=["incidents"], responses=POS_REFUSALS)
    async def post_ack(incident_id: PathId, body: Annotated[IncidentAck | None, Body()] = None) -> Response:
        """From a manager's or HQ device only (else 403 `unauthorized`)."""
        return await pos_call(handle, lambda shop: shop.acknowledge(incident_id, body))

    @app.get("/rollups", response_model=Result, summary="Sales, takings and stock roll-ups", tags=["rollups"],
             responses=POS_REFUSALS)
    async def get_rollups(day: Day = None, branch: Short = None,
                          top: Annotated[int, Query(ge=1, le=100)] = 10) -> Response:
        """From replicated state only: totals, per branch, per day and per till (sales, gross,
        refunds, takings, payments by method, offline card takings), top products, stock."""
        return await pos_call(handle, lambda shop: shop.rollups(day=day, branch=branch, top=top))
