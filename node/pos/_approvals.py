"""Large sales: a till asks, a manager's device grants, and only then is the sale written.

The request is a record at ``("approval", sale_id)`` (any till may write it); the grant a
record at ``("grant", sale_id)``, which the policy lets only managers and HQ write: every
replica skips a grant written by anyone else, so a grant on a replica is a manager's. A
manager's tablet follows requests on ``GET /events`` (key kind ``approval``), and the till
follows the grant the same way. A sale above ``[pos] approval_above`` is refused (409
``approval_required``) until the grant for its id, covering its total, is on the till.
"""

from __future__ import annotations

from typing import Any

from ._common import PosNode, ident, now_ms
from ._errors import NotFound, Refused
from ._requests import ApprovalRequest, parse
from ._shapes import approval_ok, require

__all__ = ["request_approval", "grant_approval", "list_approvals", "required_grant"]


def _view(node: PosNode, sale_id: str) -> dict[str, Any]:
    return {"sale_id": sale_id, "request": node.value(("approval", sale_id)), "grant": node.value(("grant", sale_id))}


async def request_approval(node: PosNode, body: Any) -> dict[str, Any]:
    request = parse(ApprovalRequest, body)
    key = ("approval", request.sale_id)
    existing = node.value(key)
    if existing is not None:
        require(approval_ok(existing), f"the approval request for sale {request.sale_id}", "sale_id")
        if (existing.get("total"), existing.get("note")) != (request.total, request.note):
            raise Refused(f"an approval for sale {request.sale_id} was asked with other figures",
                          code="approval_conflict", field="total")
        return _view(node, request.sale_id)
    record = {"sale_id": request.sale_id, "total": request.total, "note": request.note, "device": node.device,
              "device_name": node.device_name, "branch": node.branch, "at_ms": now_ms()}
    await node.commit([("record", key, record)])
    return _view(node, request.sale_id)


async def grant_approval(node: PosNode, sale_id: str) -> dict[str, Any]:
    """Grant from this device (a manager's or HQ's: anyone else's is 403)."""
    sale_id = ident("sale_id", sale_id)
    request = node.value(("approval", sale_id))
    if request is None:
        raise NotFound(f"no approval request for sale {sale_id} on this node", code="unknown_approval",
                       field="sale_id")
    require(approval_ok(request), f"the approval request for sale {sale_id}", "sale_id")
    if node.value(("grant", sale_id)) is None:
        grant = {"sale_id": sale_id, "total": request["total"], "by": node.device, "by_name": node.device_name,
                 "at_ms": now_ms()}
        await node.commit([("record", ("grant", sale_id), grant)])
    return _view(node, sale_id)


def list_approvals(node: PosNode, *, pending_only: bool = True) -> list[dict[str, Any]]:
    out = []
    for key in node.keys("approval"):
        view = _view(node, key[1])
        if pending_only and view["grant"] is not None:
            continue
        out.append(view)
    return out


def required_grant(node: PosNode, sale_id: str, total: int, threshold: int) -> dict[str, Any] | None:
    """The grant a sale of ``total`` needs, or None when it needs none.

    Raises:
        Refused: ``approval_required``, no grant covering the total is here yet.
    """
    if not threshold or total <= threshold:
        return None
    grant = node.value(("grant", sale_id))
    if not isinstance(grant, dict) or not isinstance(grant.get("total"), int) or grant["total"] < total:
        raise Refused(f"a sale of {total} is above {threshold} and needs a manager's approval: POST /approvals "
                      f"with sale_id {sale_id!r}, then retry once it is granted", code="approval_required",
                      field="sale_id", threshold=threshold)
    return grant
