"""Open orders: a shared ``Document`` per order, edited on several devices, closed into a sale.

The document's fields hold the order's status (``open``/``closed``), branch, table and note;
its lines are line items, each with a ``line_id`` the client chose, by which it is changed
or removed (an index shifts when another device edits the same order; an id does not). A
change is the line removed and the changed line added, in one entry. Closing writes the sale
(as ``POST /sales`` would, with the order's lines) and marks the order closed, in one entry.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ._common import PosNode, fingerprint, ident, now_ms
from ._errors import NotFound, Refused
from ._members import commit_charging
from ._requests import OrderClose, OrderCreate, OrderLine, OrderLineChange, SaleLine, parse
from ._shapes import order_lines_ok, require
from ._sales import build_sale, replay_or_conflict, sale_result

__all__ = ["create_order", "add_line", "change_line", "remove_line", "close_order", "order_info"]


def _key(order_id: str) -> tuple:
    return ("order", ident("order_id", order_id))


def order_info(node: PosNode, order_id: str) -> dict[str, Any]:
    value = node.value(_key(order_id))
    fields = value.get("fields", {})
    if "status" not in fields:
        raise NotFound(f"no order {order_id!r} on this node", code="unknown_order", field="order_id")
    return {"order_id": order_id, **fields, "lines": value.get("lines", [])}


def _open(node: PosNode, order_id: str) -> dict[str, Any]:
    order = order_info(node, order_id)
    if order["status"] != "open":
        raise Refused(f"order {order_id} is {order['status']}", code="order_closed", field="order_id")
    return order


def _index_of(order: dict[str, Any], line_id: str) -> int:
    for i, line in enumerate(order["lines"]):
        if isinstance(line, dict) and line.get("line_id") == line_id:
            return i
    raise NotFound(f"order {order['order_id']} has no line {line_id!r}", code="unknown_line", field="line_id")


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


async def create_order(node: PosNode, body: Any) -> dict[str, Any]:
    request = parse(OrderCreate, body)
    key = _key(request.order_id)
    if "status" in node.value(key).get("fields", {}):
        return order_info(node, request.order_id)  # a retry, or the same order opened elsewhere
    fields = _plain({"status": "open", "branch": node.branch, "opened_by": node.device, "opened_at_ms": now_ms(),
                     "table": request.table, "note": request.note})
    await node.commit([("set_field", key, name, value) for name, value in fields.items()])
    return order_info(node, request.order_id)


async def add_line(node: PosNode, order_id: str, body: Any) -> dict[str, Any]:
    request = parse(OrderLine, body)
    order = _open(node, order_id)
    line = _plain(request.model_dump())
    for existing in order["lines"]:
        if isinstance(existing, dict) and existing.get("line_id") == request.line_id:
            if existing == line:
                return order  # a retry
            raise Refused(f"order {order_id} has a line {request.line_id!r} already", code="line_exists",
                          field="line_id")
    await node.commit([("add_line", _key(order_id), line)])
    return order_info(node, order_id)


async def change_line(node: PosNode, order_id: str, line_id: str, body: Any) -> dict[str, Any]:
    request = parse(OrderLineChange, body)
    order = _open(node, order_id)
    index = _index_of(order, ident("line_id", line_id))
    changed = {**order["lines"][index], **_plain(request.model_dump())}
    if changed != order["lines"][index]:
        await node.commit([("remove_line", _key(order_id), index), ("add_line", _key(order_id), changed)])
    return order_info(node, order_id)


async def remove_line(node: PosNode, order_id: str, line_id: str) -> dict[str, Any]:
    order = _open(node, order_id)
    index = _index_of(order, ident("line_id", line_id))
    await node.commit([("remove_line", _key(order_id), index)])
    return order_info(node, order_id)


async def close_order(node: PosNode, order_id: str, body: Any, *, threshold: int, wait_ms: int) -> dict[str, Any]:
    """The order's lines become a sale with these payments; the order is closed with it.
    The caller serializes calls per sale id."""
    request = parse(OrderClose, body)
    order = order_info(node, order_id)
    require(order_lines_ok(order["lines"]) and isinstance(order["status"], str), f"order {order_id}", "order_id")
    try:
        lines = [SaleLine(sku=line["sku"], quantity=line["quantity"], unit_price=line.get("unit_price"))
                 for line in order["lines"]]
    except ValidationError:  # a line of the right types beyond a sale line's bounds
        require(False, f"order {order_id}", "order_id")
    print_ = fingerprint(request, order_id, [line.model_dump() for line in lines])
    if order["status"] != "open":
        if order.get("sale_id") == request.sale_id:
            sale = node.value(("sale", request.sale_id))
            if isinstance(sale, dict):
                return {**sale_result(node, sale, replayed=True), "order_id": order_id}
        raise Refused(f"order {order_id} is {order['status']}", code="order_closed", field="order_id")
    if not lines:
        raise Refused(f"order {order_id} has no lines to sell", code="order_empty", field="order_id")
    replay = await replay_or_conflict(node, request.sale_id, print_)
    if replay is not None:
        return {**replay, "order_id": order_id}
    ops, record, charges = build_sale(node, request.sale_id, lines, request.payments, print_, threshold,
                                      lines_field="order.lines", extra={"order_id": order_id})
    key = _key(order_id)
    ops += [("set_field", key, "status", "closed"), ("set_field", key, "sale_id", request.sale_id)]
    entry = await commit_charging(node, ops, charges, wait_ms)
    return {**sale_result(node, record, replayed=False, entry=entry), "order_id": order_id}
