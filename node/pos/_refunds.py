"""Refunds of known sales: at most what was sold, counted across every refund of the sale.

A refund is a record at ``("refund", refund_id)`` (the idempotency key, as a sale id is),
written with the stock it puts back into this device's branch and, when refunded to a
member, the credit to the balance, in one entry.

Each device checks the refunds it holds, so two devices without a link between them can
together refund more than was sold. When another device's refund arrives, ``check_refunds``
looks again; if the sale is over-refunded, the writer of the latest of its refunds (latest by
time, then device, then id: every replica picks the same) records an ``over_refund`` incident,
once for that set of refunds.
"""

from __future__ import annotations

from typing import Any

from ._common import PosNode, balance_key, day_of, fingerprint, now_ms, stock_key
from ._errors import InvalidRequest, NotFound, Refused
from ._incidents import incident_id_of, incident_record, report
from ._requests import RefundRequest, parse
from ._shapes import require, sale_ok

__all__ = ["refund", "refunded_of", "check_refunds"]


def _pieces(record: Any) -> dict[str, int]:
    """sku -> pieces of a sale or refund record's lines. Records are any writer's plain data:
    what is not a line (a sku string and a whole, non-negative quantity) is left out."""
    out: dict[str, int] = {}
    lines = record.get("lines") if isinstance(record, dict) else None
    for line in lines if isinstance(lines, list) else ():
        if isinstance(line, dict):
            sku, quantity = line.get("sku"), line.get("quantity")
            if isinstance(sku, str) and type(quantity) is int and quantity >= 0:
                out[sku] = out.get(sku, 0) + quantity
    return out


def refunded_of(node: PosNode, sale_id: str) -> dict[str, int]:
    """sku -> pieces refunded so far of ``sale_id``, over every refund on this node."""
    return _summed(_refunds_of(node, sale_id))


def _summed(records: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in records:
        for sku, quantity in _pieces(record).items():
            out[sku] = out.get(sku, 0) + quantity
    return out


def _refunds_of(node: PosNode, sale_id: str) -> list[dict[str, Any]]:
    records = (node.value(key) for key in node.keys("refund"))
    return [r for r in records if isinstance(r, dict) and r.get("sale_id") == sale_id]


def _latest_writer(refunds: list[dict[str, Any]]) -> Any:
    """The device of the latest refund, by time, then device, then id (fields that are not of
    their type count as the lowest), so that every replica names the same one."""
    def rank(record: dict[str, Any]) -> tuple:
        at, device, refund_id = record.get("at_ms"), record.get("device"), record.get("refund_id")
        return (at if type(at) is int else -1, device if type(device) is int else -1,
                refund_id if isinstance(refund_id, str) else "")
    return max(refunds, key=rank).get("device")


async def check_refunds(node: PosNode, sale_id: str) -> bool:
    """Record an ``over_refund`` incident if the refunds of ``sale_id`` held here exceed what
    was sold and this device wrote the latest of them; True if one was written."""
    sale = node.value(("sale", sale_id))
    refunds = _refunds_of(node, sale_id)
    if not isinstance(sale, dict) or not refunds:
        return False
    sold, refunded = _pieces(sale), _summed(refunds)  # one pass over the refunds, not two
    over = [{"sku": sku, "sold": sold.get(sku, 0), "refunded": n} for sku, n in sorted(refunded.items())
            if n > sold.get(sku, 0)]
    if not over or _latest_writer(refunds) != node.device:
        return False
    ids = sorted(str(r.get("refund_id")) for r in refunds)
    detail = f"sale {sale_id} refunded beyond what was sold, by refunds on devices without a link: " + ", ".join(
        f"{o['sku']} {o['refunded']} of {o['sold']}" for o in over)
    evidence = {"sale_id": sale_id, "lines": over, "refunds": ids,
                "devices": sorted({r.get("device") for r in refunds if isinstance(r.get("device"), int)})}
    return await report(node, incident_id_of("over_refund", sale_id, *ids),
                        incident_record(node, "over_refund", detail, evidence=evidence))


async def refund(node: PosNode, body: Any) -> dict[str, Any]:
    """Refund lines of a sale. The caller serializes refunds of one sale."""
    request = parse(RefundRequest, body)
    print_ = fingerprint(request)
    key = ("refund", request.refund_id)
    existing = node.value(key)
    if existing is not None:
        if isinstance(existing, dict) and existing.get("fingerprint") == print_:
            return {**existing, "replayed": True, "ack": node.ack_of(key) or "local"}
        raise Refused(f"refund id {request.refund_id} already holds another refund", code="refund_conflict",
                      field="refund_id")
    if request.method == "member" and request.member is None:
        raise InvalidRequest.of("member", "a refund to a member balance names the member")
    if request.method != "member" and request.member is not None:
        raise InvalidRequest.of("member", "only a refund with method member names a member")
    sale = node.value(("sale", request.sale_id))
    if not isinstance(sale, dict):
        raise NotFound(f"no sale {request.sale_id!r} on this node", code="unknown_sale", field="sale_id")
    require(sale_ok(sale), f"sale {request.sale_id}", "sale_id")
    sold = _pieces(sale)
    price: dict[str, int] = {}
    for line in sale.get("lines") if isinstance(sale.get("lines"), list) else ():
        unit = line.get("unit_price") if isinstance(line, dict) else None
        if isinstance(line, dict) and line.get("sku") in sold and type(unit) is int and unit >= 0:
            price[line["sku"]] = min(price.get(line["sku"], unit), unit)
    sold = {sku: n for sku, n in sold.items() if sku in price}  # a line without a price cannot be refunded
    already = refunded_of(node, request.sale_id)
    asked: dict[str, int] = {}
    lines = []
    for i, line in enumerate(request.lines):
        if line.sku not in sold:
            raise InvalidRequest.of(f"lines.{i}.sku", f"{line.sku!r} is not in sale {request.sale_id}")
        asked[line.sku] = asked.get(line.sku, 0) + line.quantity
        if already.get(line.sku, 0) + asked[line.sku] > sold[line.sku]:
            raise Refused(f"{line.sku}: {sold[line.sku]} sold, {already.get(line.sku, 0)} refunded already; "
                          f"{asked[line.sku]} more is too many", code="refund_exceeds_sale",
                          field=f"lines.{i}.quantity", sold=sold[line.sku], refunded=already.get(line.sku, 0))
        lines.append({"sku": line.sku, "quantity": line.quantity, "unit_price": price[line.sku],
                      "amount": line.quantity * price[line.sku]})
    total = sum(line["amount"] for line in lines)
    at = now_ms()
    record = {"refund_id": request.refund_id, "sale_id": request.sale_id, "branch": node.branch,
              "device": node.device, "device_name": node.device_name, "at_ms": at, "day": day_of(at),
              "lines": lines, "total": total, "method": request.method, "member": request.member,
              "fingerprint": print_}
    ops: list[tuple] = [("record", key, record)]
    for sku, quantity in asked.items():
        ops.append(("add", stock_key(node.branch, sku), quantity))
    if request.method == "member" and total > 0:
        ops.append(("increment", balance_key(request.member), total))
    entry = await node.commit(ops)
    return {**record, "replayed": False, "seq": entry["seq"], "ack": entry["ack"]}
