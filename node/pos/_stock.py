"""Stock movements: receipts (stock in), stocktakes (one adjustment per counted sku), and
transfers between branches (out of one and into the other, in one entry)."""

from __future__ import annotations

from typing import Any

from ._common import PosNode, stock_key
from ._errors import InvalidRequest, Refused
from ._operations import once
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

    def plan() -> tuple[list[tuple], dict[str, Any]]:
        per_sku = _per_sku(request.lines)
        return [("add", stock_key(branch, sku), q) for sku, q in per_sku.items()], {"branch": branch,
                                                                                    "received": per_sku}

    return await once(node, "receipt", request, plan,
                      lambda done: {**done, "stock": stock_of(node, done["branch"], list(done["received"]))})


async def stocktake(node: PosNode, body: Any) -> dict[str, Any]:
    """Each counted sku moves by counted − observed; nothing is written when nothing moves
    (but the operation id, when one is given: a retry must not count again)."""
    request = parse(StocktakeRequest, body)
    branch = request.branch or node.branch

    def plan() -> tuple[list[tuple], dict[str, Any]]:
        adjustments: dict[str, int] = {}
        for i, line in enumerate(request.counts):
            if line.sku in adjustments:
                raise InvalidRequest.of(f"counts.{i}.sku", f"{line.sku!r} is counted twice in one stocktake")
            observed = line.observed if line.observed is not None else node.value(stock_key(branch, line.sku))
            adjustments[line.sku] = line.counted - observed
        ops = [("add", stock_key(branch, sku), delta) for sku, delta in adjustments.items() if delta]
        return ops, {"branch": branch, "adjustments": adjustments}

    return await once(node, "stocktake", request, plan,
                      lambda done: {**done, "stock": stock_of(node, done["branch"], list(done["adjustments"]))})


async def transfer(node: PosNode, body: Any) -> dict[str, Any]:
    """Move stock; refused (409 ``insufficient_stock``) beyond what the source holds."""
    request = parse(TransferRequest, body)
    source = request.from_branch or node.branch
    if source == request.to_branch:
        raise InvalidRequest.of("to_branch", f"a transfer goes to another branch than {source}")

    def plan() -> tuple[list[tuple], dict[str, Any]]:
        per_sku = _per_sku(request.lines)
        for i, line in enumerate(request.lines):
            held = node.value(stock_key(source, line.sku))
            if per_sku[line.sku] > held:
                raise Refused(f"{source} holds {held} of {line.sku}, {per_sku[line.sku]} cannot leave",
                              code="insufficient_stock", field=f"lines.{i}.quantity", available=held)
        ops = []
        for sku, quantity in per_sku.items():
            ops += [("add", stock_key(source, sku), -quantity), ("add", stock_key(request.to_branch, sku), quantity)]
        return ops, {"from_branch": source, "to_branch": request.to_branch, "moved": per_sku}

    def present(done: dict[str, Any]) -> dict[str, Any]:
        skus = list(done["moved"])
        return {**done, "stock": {done["from_branch"]: stock_of(node, done["from_branch"], skus),
                                  done["to_branch"]: stock_of(node, done["to_branch"], skus)}}

    return await once(node, "transfer", request, plan, present)
