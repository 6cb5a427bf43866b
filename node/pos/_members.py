"""Member balances: top-ups, charges, and the escrow rights a charge spends.

A balance is a bounded counter: a device may charge only within the rights it holds (a
top-up's rights are the device's that took it). A charge beyond them asks the other devices
for rights (a rights request register, answered by whoever holds most, through gossip) and
waits up to ``[pos] rights_wait_ms`` for the transfer; then it is refused with nothing
written but the request and an incident. A charge beyond the balance itself is refused at
once, as an overdraft.
"""

from __future__ import annotations

from typing import Any

from crdt_types import InsufficientRights

from ._common import PosNode, balance_key, ident, now_ms
from ._errors import Refused, RightsShort
from ._incidents import incident_record, report
from ._operations import once
from ._requests import ChargeRequest, TopupRequest, parse

__all__ = ["ensure_rights", "topup", "charge", "member_info"]


def member_info(node: PosNode, member: str) -> dict[str, Any]:
    member = ident("member", member)
    key = balance_key(member)
    return {"member": member, "balance": node.value(key), "rights_here": node.rights(key)}


async def _refuse(node: PosNode, member: str, needed: int, available: int, balance: int, why: str) -> None:
    detail = (f"a charge of {needed} to member {member} refused: {why} (balance {balance}, "
              f"rights on this device {available})")
    record = incident_record(node, "overdraft_refused", detail,
                             evidence={"member": member, "needed": needed, "available": available, "balance": balance})
    await report(node, f"overdraft_refused:{node.device}:{member}:{now_ms()}", record)


async def ensure_rights(node: PosNode, charges: dict[str, int], wait_ms: int, *, field: str = "payments") -> None:
    """Make sure this device holds the rights for every ``member -> amount`` charge.

    Raises:
        Refused: ``insufficient_balance``, the balance is below the charge (an overdraft).
        RightsShort: the balance covers it, but the rights did not come within ``wait_ms``.
    """
    for member, amount in charges.items():
        key = balance_key(member)
        have = node.rights(key)
        if have >= amount:
            continue
        balance = node.value(key)
        if balance < amount:
            await _refuse(node, member, amount, have, balance, "the balance is too small")
            raise Refused(f"member {member}'s balance is {balance}, the charge is {amount}",
                          code="insufficient_balance", field=field, needed=amount, available=balance)
        online = node.links_live()
        if wait_ms > 0 and online:
            await node.request_rights(key, amount)
            if await node.wait_for(lambda: node.rights(key) >= amount, wait_ms / 1000):
                continue
        have = node.rights(key)
        why = ("no rights transfer arrived in time" if online and wait_ms > 0 else
               "this device has no live link, so it could not ask for rights" if not online else
               "waiting for rights is switched off ([pos] rights_wait_ms = 0)")
        await _refuse(node, member, amount, have, balance, why)
        raise RightsShort(f"member {member}: this device holds rights for {have} of the {amount} charged, and no "
                          f"transfer arrived within {wait_ms} ms (offline, or the rights are elsewhere)",
                          needed=amount, available=have, field=field)


async def commit_charging(node: PosNode, ops: list[tuple], charges: dict[str, int], wait_ms: int) -> dict[str, Any]:
    """Commit ``ops`` once the rights are here; a race that spent them first is the same 409."""
    await ensure_rights(node, charges, wait_ms)
    try:
        return await node.commit(ops)
    except InsufficientRights as exc:
        if isinstance(exc, RightsShort):
            raise
        raise RightsShort(str(exc), needed=exc.needed, available=exc.available, field="payments") from None


async def topup(node: PosNode, member: str, body: Any) -> dict[str, Any]:
    member = ident("member", member)
    request = parse(TopupRequest, body)
    return await once(node, "topup", request,
                      lambda: ([("increment", balance_key(member), request.amount)],
                               {"member": member, "amount": request.amount}),
                      lambda done: {**member_info(node, done["member"]), "amount": done["amount"]},
                      context=(member,))


async def charge(node: PosNode, body: Any, wait_ms: int) -> dict[str, Any]:
    request = parse(ChargeRequest, body)
    return await once(node, "charge", request,
                      lambda: ([("decrement", balance_key(request.member), request.amount)],
                               {"member": request.member, "amount": request.amount}),
                      lambda done: {**member_info(node, done["member"]), "amount": done["amount"]},
                      commit=lambda ops: commit_charging(node, ops, {request.member: request.amount}, wait_ms))
