"""Stock movements: receipts (stock in), stocktakes (one adjustment per counted sku), and
transfers between branches (out of one and into the other, in one entry)."""

from __future__ import annotations

from typing import Any

from ._common import PosNode, stock_key
from ._errors import InvalidRequest, Refused
from ._requests import ReceiptRequest, StockLine, StocktakeRequest, TransferRequest, parse

__all__ = ["receive", "stocktake", "transfer", "stock_of"]


def stock_of(node: PosNode, branch: str, skus: list[str]) -> dict[str, int]:
    return {sku: node.value(stock_key(branch, sku)) for sku in skus}


def _per_sku(lines: list[StockLine]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines:
        out[line.sku] = out.get(line.sku, 0) + line.quantity
    return out


async def receive(node: PosNode, body: Any) -> dict[str, Any]:
    request = parse(ReceiptRequest, body)
    branch = request.branch or node.branch
    per_sku = _per_sku(request.lines)
    entry = await node.commit([("add", stock_key(branch, sku), q) for sku, q in per_sku.items()])
    return {"branch": branch, "received": per_sku, "stock": stock_of(node, branch, list(per_sku)),
            "seq": entry["seq"], "ack": entry["ack"]}


async def stocktake(node: PosNode, body: Any) -> dict[str, Any]:
    """Each counted sku moves by counted − observed; nothing is written when nothing moves."""
    request = parse(StocktakeRequest, body)
    branch = request.branch or node.branch
    adjustments: dict[str, int] = {}
    for i, line in enumerate(request.counts):
        if line.sku in adjustments:
            raise InvalidRequest.of(f"counts.{i}.sku", f"{line.sku!r} is counted twice in one stocktake")
        observed = line.observed if line.observed is not None else node.value(stock_key(branch, line.sku))
        adjustments[line.sku] = line.counted - observed
    ops = [("add", stock_key(branch, sku), delta) for sku, delta in adjustments.items() if delta]
    entry = await node.commit(ops) if ops else None
    return {"branch": branch, "adjustments": adjustments, "stock": stock_of(node, branch, list(adjustments)),
            "seq": entry["seq"] if entry else None, "ack": entry["ack"] if entry else None}


async def transfer(node: PosNode, body: Any) -> dict[str, Any]:
    """Move stock; refused (409 ``insufficient_stock``) beyond what the source holds."""
    request = parse(TransferRequest, body)
    source = request.from_branch or node.branch
    if source == request.to_branch:
        raise InvalidRequest.of("to_branch", f"a transfer goes to another branch than {source}")
    per_sku = _per_sku(request.lines)
    for i, line in enumerate(request.lines):
        held = node.value(stock_key(source, line.sku))
        if per_sku[line.sku] > held:
            raise Refused(f"{source} holds {held} of {line.sku}, {per_sku[line.sku]} cannot leave",
                          code="insufficient_stock", field=f"lines.{i}.quantity", available=held)
    ops = []
    for sku, quantity in per_sku.items():
        ops += [("add", stock_key(source, sku), -quantity), ("add", stock_key(request.to_branch, sku), quantity)]
    entry = await node.commit(ops)
    return {"from_branch": source, "to_branch": request.to_branch, "moved": per_sku,
            "stock": {source: stock_of(node, source, list(per_sku)),
                      request.to_branch: stock_of(node, request.to_branch, list(per_sku))},
            "seq": entry["seq"], "ack": entry["ack"]}
