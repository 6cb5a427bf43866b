"""Prices: a chain-wide price per sku, and branch overrides; the override wins."""

from __future__ import annotations

from typing import Any

from ._common import PosNode, ident, now_ms
from ._requests import PriceRequest, parse

__all__ = ["set_price", "effective_price", "price_info"]


def effective_price(node: PosNode, sku: str, branch: str) -> int | None:
    """override > chain price; None when neither is set."""
    override = node.value(("price", branch, sku))
    if isinstance(override, int) and not isinstance(override, bool):
        return override
    chain = node.value(("price", sku))
    if isinstance(chain, int) and not isinstance(chain, bool):
        return chain
    return None


def price_info(node: PosNode, sku: str, branch: str | None = None) -> dict[str, Any]:
    sku = ident("sku", sku)
    branch = ident("branch", branch) if branch is not None else node.branch
    return {"sku": sku, "branch": branch, "chain": node.value(("price", sku)),
            "override": node.value(("price", branch, sku)), "effective": effective_price(node, sku, branch)}


async def set_price(node: PosNode, body: Any) -> dict[str, Any]:
    """Set a chain-wide price or a branch override (a manager's or HQ's device: else 403)."""
    request = parse(PriceRequest, body)
    key = ("price", request.sku) if request.branch is None else ("price", request.branch, request.sku)
    entry = await node.commit([("set", key, request.price)])
    return {**price_info(node, request.sku, request.branch), "seq": entry["seq"], "ack": entry["ack"],
            "at_ms": now_ms()}
