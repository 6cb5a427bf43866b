"""``Shop``: the POS operations of one node, bound to it, with per-id serialization.

Two requests for the same sale id (a till's retry racing its first try) must not both find
the id free and both take the stock: every operation keyed by an idempotency id runs under
that id's lock, so the second waits and then finds the first's record (sale ids, refunds
of one sale, order ids, and the ``operation_id`` of stock and balance operations). Locks
exist only while someone holds or waits for them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from . import _approvals, _incidents, _members, _orders, _prices, _refunds, _rollups, _sales, _stock
from ._common import PosNode
from ._requests import (ChargeRequest, OrderClose, ReceiptRequest, RefundRequest, SaleRequest, StocktakeRequest,
                        TopupRequest, TransferRequest, parse)

__all__ = ["Shop"]


class Shop:
    """The POS domain over ``node``.

    Args:
        node: the node (``PosNode``; the runtime's ``Node``).
        rights_wait_ms: how long a member charge waits for a rights transfer.
        approval_above: a sale above this total needs a manager's grant (0: never).
    """

    def __init__(self, node: PosNode, *, rights_wait_ms: int, approval_above: int) -> None:
        self.node = node
        self.rights_wait_ms = rights_wait_ms
        self.approval_above = approval_above
        self._locks: dict[tuple, list] = {}

    @asynccontextmanager
    async def _lock(self, key: tuple) -> AsyncIterator[None]:
        slot = self._locks.setdefault(key, [trio.Lock(), 0])
        slot[1] += 1
        try:
            async with slot[0]:
                yield
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                del self._locks[key]

    # -- sales, refunds, orders ---------------------------------------------------------------

    async def sale(self, body: Any) -> dict[str, Any]:
        request = parse(SaleRequest, body)
        async with self._lock(("sale", request.sale_id)):
            return await _sales.sell(self.node, request, threshold=self.approval_above, wait_ms=self.rights_wait_ms)

    def sale_info(self, sale_id: str) -> dict[str, Any]:
        return _sales.sale_info(self.node, sale_id)

    async def refund(self, body: Any) -> dict[str, Any]:
        request = parse(RefundRequest, body)
        async with self._lock(("refunds-of", request.sale_id)):
            return await _refunds.refund(self.node, request)

    async def create_order(self, body: Any) -> dict[str, Any]:
        return await _orders.create_order(self.node, body)

    def order(self, order_id: str) -> dict[str, Any]:
        return _orders.order_info(self.node, order_id)

    async def add_order_line(self, order_id: str, body: Any) -> dict[str, Any]:
        async with self._lock(("order", order_id)):
            return await _orders.add_line(self.node, order_id, body)

    async def change_order_line(self, order_id: str, line_id: str, body: Any) -> dict[str, Any]:
        async with self._lock(("order", order_id)):
            return await _orders.change_line(self.node, order_id, line_id, body)

    async def remove_order_line(self, order_id: str, line_id: str) -> dict[str, Any]:
        async with self._lock(("order", order_id)):
            return await _orders.remove_line(self.node, order_id, line_id)

    async def close_order(self, order_id: str, body: Any) -> dict[str, Any]:
        request = parse(OrderClose, body)
        async with self._lock(("order", order_id)), self._lock(("sale", request.sale_id)):
            return await _orders.close_order(self.node, order_id, request, threshold=self.approval_above,
                                             wait_ms=self.rights_wait_ms)

    # -- stock, prices, members ---------------------------------------------------------------

    @asynccontextmanager
    async def _operation(self, request: Any) -> AsyncIterator[None]:
        """Under the lock of the request's operation id, if it has one."""
        if request.operation_id is None:
            yield
        else:
            async with self._lock(("operation", request.operation_id)):
                yield

    async def receive(self, body: Any) -> dict[str, Any]:
        request = parse(ReceiptRequest, body)
        async with self._operation(request):
            return await _stock.receive(self.node, request)

    async def stocktake(self, body: Any) -> dict[str, Any]:
        request = parse(StocktakeRequest, body)
        async with self._operation(request):
            return await _stock.stocktake(self.node, request)

    async def transfer(self, body: Any) -> dict[str, Any]:
        request = parse(TransferRequest, body)
        async with self._operation(request):
            return await _stock.transfer(self.node, request)

    async def set_price(self, body: Any) -> dict[str, Any]:
        return await _prices.set_price(self.node, body)

    def price(self, sku: str, branch: str | None = None) -> dict[str, Any]:
        return _prices.price_info(self.node, sku, branch)

    async def topup(self, member: str, body: Any) -> dict[str, Any]:
        request = parse(TopupRequest, body)
        async with self._operation(request):
            return await _members.topup(self.node, member, request)

    async def charge(self, body: Any) -> dict[str, Any]:
        request = parse(ChargeRequest, body)
        async with self._operation(request):
            return await _members.charge(self.node, request, self.rights_wait_ms)

    def member(self, member: str) -> dict[str, Any]:
        return _members.member_info(self.node, member)

    # -- approvals, incidents, roll-ups -------------------------------------------------------

    async def request_approval(self, body: Any) -> dict[str, Any]:
        return await _approvals.request_approval(self.node, body)

    async def grant_approval(self, sale_id: str) -> dict[str, Any]:
        async with self._lock(("grant", sale_id)):
            return await _approvals.grant_approval(self.node, sale_id)

    def approvals(self, *, pending_only: bool = True) -> list[dict[str, Any]]:
        return _approvals.list_approvals(self.node, pending_only=pending_only)

    def incidents(self, *, open_only: bool = False, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return _incidents.list_incidents(self.node, open_only=open_only, kind=kind, limit=limit)

    async def acknowledge(self, incident_id: str, body: Any = None) -> dict[str, Any]:
        return await _incidents.acknowledge(self.node, incident_id, body)

    async def report_alert(self, alert: Any) -> bool:
        return await _incidents.report_alert(self.node, alert)

    async def refund_arrived(self, key: tuple) -> bool:
        """Another device's refund at ``key`` was applied: check its sale's refunds."""
        record = self.node.value(key)
        if not isinstance(record, dict) or not isinstance(record.get("sale_id"), str):
            return False
        async with self._lock(("refunds-of", record["sale_id"])):
            return await _refunds.check_refunds(self.node, record["sale_id"])

    def rollups(self, *, day: str | None = None, branch: str | None = None, top: int = 10) -> dict[str, Any]:
        return _rollups.rollups(self.node, day=day, branch=branch, top=top)
