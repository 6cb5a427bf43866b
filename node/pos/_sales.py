"""Sales: one entry holds the sale record, its stock decrements and its member charges.

The sale id is the idempotency key. Before anything is written the request is checked
whole: every line priced (the client's unit price, else the effective price here), the
payments adding up to the total, a manager's grant when the total is above the approval
threshold, and the rights for every member charge (asked for and waited on when missing).
Then one ``commit`` writes it all. A retry with the same id and body finds the record and
returns the first result without writing; another body under that id is a 409
``sale_conflict`` and an incident. An oversell (stock below zero after the sale) is not
refused, a shop sells what is on the counter, but the same entry records an incident.

Card payments taken while this node has no live link to any peer are marked
``offline: true``: the shop carries their risk, and the roll-ups total them apart.
"""

from __future__ import annotations

from typing import Any, Sequence

from ._approvals import required_grant
from ._common import PosNode, checked_total, day_of, fingerprint, ident, now_ms, stock_key
from ._errors import InvalidRequest, NotFound, Refused
from ._incidents import incident_record, readable_incident_id, report
from ._members import commit_charging
from ._prices import effective_price
from ._requests import SaleLine, SaleRequest, parse
from ._shapes import require, sale_ok

__all__ = ["sell", "sale_info", "build_sale", "replay_or_conflict", "sale_result"]


def build_sale(node: PosNode, sale_id: str, lines: Sequence[SaleLine], payments: Sequence[Any], print_: str,
               threshold: int, *, lines_field: str = "lines", extra: dict[str, Any] | None = None
               ) -> tuple[list[tuple], dict[str, Any], dict[str, int]]:
    """The ops of a sale, its record, and the member charges it makes.

    Raises:
        InvalidRequest: a line without a known price, payments that do not add up.
        Refused: ``approval_required``.
    """
    branch = node.branch
    at = now_ms()
    out_lines, per_sku = [], {}
    for i, line in enumerate(lines):
        price = line.unit_price if line.unit_price is not None else effective_price(node, line.sku, branch)
        if price is None:
            raise InvalidRequest.of(f"{lines_field}.{i}.unit_price",
                                    f"no price is known for {line.sku!r} in branch {branch}; send unit_price")
        amount = checked_total(f"{lines_field}.{i}", line.quantity * price)
        out_lines.append({"sku": line.sku, "quantity": line.quantity, "unit_price": price, "amount": amount})
        per_sku[line.sku] = per_sku.get(line.sku, 0) + line.quantity
    total = checked_total(lines_field, sum(line["amount"] for line in out_lines))
    paid = sum(p.amount for p in payments)
    if paid != total:
        raise InvalidRequest.of("payments", f"the payments add up to {paid}, the sale's total is {total}")
    grant = required_grant(node, sale_id, total, threshold)
    offline = node.links_live() == 0
    out_payments, charges = [], {}
    for p in payments:
        if p.method == "card":
            out_payments.append({"method": "card", "amount": p.amount, "reference": p.reference, "offline": offline})
        elif p.method == "member":
            out_payments.append({"method": "member", "amount": p.amount, "member": p.member})
            charges[p.member] = charges.get(p.member, 0) + p.amount
        else:
            out_payments.append({"method": "cash", "amount": p.amount})
    record = {"sale_id": sale_id, "branch": branch, "device": node.device, "device_name": node.device_name,
              "at_ms": at, "day": day_of(at), "lines": out_lines, "total": total, "payments": out_payments,
              "offline_card": sum(p["amount"] for p in out_payments if p.get("offline")),
              "approved_by": grant["by"] if grant else None, "fingerprint": print_, **(extra or {})}
    ops: list[tuple] = [("record", ("sale", sale_id), record)]
    oversold = []
    for sku, quantity in per_sku.items():
        ops.append(("add", stock_key(branch, sku), -quantity))
        after = node.value(stock_key(branch, sku)) - quantity
        if after < 0:
            oversold.append({"sku": sku, "stock_after": after})
    for member, amount in charges.items():
        ops.append(("decrement", ("member", member, "balance"), amount))
    if oversold:
        detail = f"sale {sale_id} took stock below zero in {branch}: " + ", ".join(
            f"{o['sku']} at {o['stock_after']}" for o in oversold)
        ops.append(("record", ("incident", readable_incident_id("oversell", sale_id)),
                    incident_record(node, "oversell", detail, evidence={"sale_id": sale_id, "branch": branch,
                                                                          "lines": oversold}, at_ms=at)))
    record["oversold"] = [o["sku"] for o in oversold]
    return ops, record, charges


def sale_result(node: PosNode, record: dict[str, Any], *, replayed: bool, entry: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    key = ("sale", record["sale_id"])
    where = node.entry_of(key)
    seq = entry["seq"] if entry else (where[1] if where else None)
    device = entry["origin"] if entry else (where[0] if where else record.get("device"))
    return {"sale_id": record["sale_id"], "total": record["total"], "device": device, "seq": seq,
            "ack": (entry["ack"] if entry else node.ack_of(key)) or "local", "replayed": replayed,
            "offline_card": record.get("offline_card", 0), "oversold": record.get("oversold", []),
            "approved_by": record.get("approved_by")}


async def replay_or_conflict(node: PosNode, sale_id: str, print_: str) -> dict[str, Any] | None:
    """The first result when this sale id is written already with the same request, None when
    it is new.

    Raises:
        Refused: ``sale_conflict``, the id holds another sale (an incident is written).
    """
    existing = node.value(("sale", sale_id))
    if existing is None:
        return None
    if sale_ok(existing) and existing.get("fingerprint") == print_:
        return sale_result(node, existing, replayed=True)
    record = incident_record(node, "sale_conflict", f"sale id {sale_id} was sent again with another body",
                             evidence={"sale_id": sale_id, "first": existing.get("fingerprint") if isinstance(
                                 existing, dict) else None, "second": print_})
    await report(node, readable_incident_id("sale_conflict", sale_id, print_[:12]), record)
    raise Refused(f"sale id {sale_id} already holds a different sale; use a new id", code="sale_conflict",
                  field="sale_id")


async def sell(node: PosNode, body: Any, *, threshold: int, wait_ms: int) -> dict[str, Any]:
    """Write a sale (see the module docstring). The caller serializes calls per sale id."""
    request = parse(SaleRequest, body)
    print_ = fingerprint(request)
    replay = await replay_or_conflict(node, request.sale_id, print_)
    if replay is not None:
        return replay
    ops, record, charges = build_sale(node, request.sale_id, request.lines, request.payments, print_, threshold)
    entry = await commit_charging(node, ops, charges, wait_ms)
    return sale_result(node, record, replayed=False, entry=entry)


def sale_info(node: PosNode, sale_id: str) -> dict[str, Any]:
    """A sale as this node holds it, with its safety level and what was refunded of it."""
    sale_id = ident("sale_id", sale_id)
    record = node.value(("sale", sale_id))
    if not isinstance(record, dict):
        raise NotFound(f"no sale {sale_id!r} on this node", code="unknown_sale", field="sale_id")
    require(sale_ok(record), f"sale {sale_id}", "sale_id")
    from ._refunds import refunded_of

    result = sale_result(node, record, replayed=False)
    return {**result, "record": record, "refunded": refunded_of(node, sale_id)}
