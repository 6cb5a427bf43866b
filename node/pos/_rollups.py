"""HQ roll-ups, computed from replicated state only (any node holding the data can answer):
sales, takings and offline card takings per branch, per day and per till; top products;
stock per branch.

Per bucket: ``sales`` (count), ``gross`` (sale totals), ``refunds`` (refund totals),
``takings`` (gross − refunds), the payments by method (``cash``, ``card``, ``member``) and
``card_offline``, the part of ``card`` taken while the till had no link.
"""

from __future__ import annotations

from typing import Any

from ._common import PosNode
from ._shapes import refund_ok, sale_ok

__all__ = ["rollups", "MAX_TOP"]

MAX_TOP = 100


def _bucket() -> dict[str, int]:
    return {"sales": 0, "gross": 0, "refunds": 0, "takings": 0, "cash": 0, "card": 0, "card_offline": 0,
            "member": 0}


def rollups(node: PosNode, *, day: str | None = None, branch: str | None = None, top: int = 10) -> dict[str, Any]:
    total = _bucket()
    by: dict[str, dict[str, dict[str, int]]] = {"branch": {}, "day": {}, "till": {}}
    products: dict[str, dict[str, int]] = {}

    def buckets(record: dict[str, Any]) -> list[dict[str, int]]:
        till = f"{record.get('device')}"
        return [total, by["branch"].setdefault(str(record.get("branch")), _bucket()),
                by["day"].setdefault(str(record.get("day")), _bucket()), by["till"].setdefault(till, _bucket())]

    def wanted(record: Any) -> bool:
        return (isinstance(record, dict) and (day is None or record.get("day") == day)
                and (branch is None or record.get("branch") == branch))

    for key in node.keys("sale"):
        record = node.value(key)
        if not sale_ok(record) or not wanted(record):  # a record of another shape is left out
            continue
        for bucket in buckets(record):
            bucket["sales"] += 1
            bucket["gross"] += record["total"]
            bucket["takings"] += record["total"]
            for payment in record["payments"]:
                bucket[payment["method"]] += payment["amount"]
                if payment.get("offline"):
                    bucket["card_offline"] += payment["amount"]
        for line in record["lines"]:
            product = products.setdefault(line["sku"], {"quantity": 0, "amount": 0})
            product["quantity"] += line["quantity"]
            product["amount"] += line["amount"]
    for key in node.keys("refund"):
        record = node.value(key)
        if not refund_ok(record) or not wanted(record):
            continue
        for bucket in buckets(record):
            bucket["refunds"] += record["total"]
            bucket["takings"] -= record["total"]
        for line in record["lines"]:
            product = products.setdefault(line["sku"], {"quantity": 0, "amount": 0})
            product["quantity"] -= line["quantity"]
            product["amount"] -= line["amount"]
    stock: dict[str, dict[str, int]] = {}
    for key in node.keys("stock"):
        if branch is None or key[1] == branch:
            stock.setdefault(key[1], {})[key[2]] = node.value(key)
    ranked = sorted(products.items(), key=lambda item: (-item[1]["quantity"], -item[1]["amount"], item[0]))
    return {"day": day, "branch": branch, "total": total, "by_branch": by["branch"], "by_day": by["day"],
            "by_till": by["till"],
            "top_products": [{"sku": sku, **figures} for sku, figures in ranked[:max(1, min(top, MAX_TOP))]],
            "stock": stock}
