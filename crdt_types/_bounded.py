"""Bounded counter: member balances in minor units, reservable stock.

This is the escrow counter of Balegas et al., "Putting Consistency Back into Eventual
Consistency" (EuroSys 2015), as AntidoteDB ships it. The value may never go below zero,
yet every replica must be able to spend offline. The trick is to split the value into
*rights* held by replicas:

    P[i]     total incremented by replica i (an increment creates rights at i)
    D[i]     total decremented by replica i (spends i's rights)
    T[i, j]  total rights transferred from i to j

    rights(i) = P[i] + sum_j T[j, i] - sum_j T[i, j] - D[i]
    value     = sum_i P[i] - sum_i D[i] = sum_i rights(i)

Only replica i writes P[i], D[i] and T[i, *], and it refuses a decrement or transfer beyond
its own rights. All entries only grow, so merge is a pointwise maximum.

Why no replica can ever show a negative value: every delta that spends rights (a
decrement or a transfer) carries, besides the slot it changes, every increment total P[*]
the spender knows and the transfers T[*, spender] it received. Each unit ever spent is
backed by a distinct unit of some increment, and the spender knew that increment when it
spent (it reached the spender inside the grant that moved the rights, which carried the
same information). So a replica that merges a spending delta also holds the increments that
back it, whatever else it has or has not received: sum(P) >= sum(D), the value is never
negative. This holds under any delivery order, which is stronger than the causal delivery
DESIGN.md asks the engine to provide for these keys (the engine still provides it, and
under causal delivery each replica's own rights are never negative either). The price is
a few more slots per spending delta: one per replica that ever incremented the key.
"""

from __future__ import annotations

from typing import Any

from ._check import (
    encode_replica,
    replica_order,
    require_amount,
    require_int,
    require_replica,
    wire_header,
    wire_int,
    wire_list,
    wire_replica,
)
from ._errors import InsufficientRights, InvalidInput, MalformedWire

__all__ = ["BoundedCounter"]

MAX_SLOTS = 4096


class BoundedCounter:
    TAG = "bc"
    CODE = 3  # one-byte type code inside delta groups
    VERSION = 1

    __slots__ = ("_p", "_d", "_t")

    def __init__(self) -> None:
        self._p: dict[Any, int] = {}
        self._d: dict[Any, int] = {}
        self._t: dict[tuple[Any, Any], int] = {}

    @property
    def value(self) -> int:
        return sum(self._p.values()) - sum(self._d.values())

    def rights(self, replica: Any) -> int:
        """How much ``replica`` may decrement or transfer away, as this copy sees it."""
        income = self._p.get(replica, 0)
        outgo = self._d.get(replica, 0)
        for (src, dst), amount in self._t.items():
            if dst == replica:
                income += amount
            if src == replica:
                outgo += amount
        return income - outgo

    def rows(self) -> tuple[dict[Any, int], dict[Any, int], dict[tuple[Any, Any], int]]:
        """Copies of (P, D, T): increments and decrements per replica, transfers per pair."""
        return dict(self._p), dict(self._d), dict(self._t)

    def holders(self) -> dict[Any, int]:
        """Every replica with non-zero rights, and its rights."""
        replicas = set(self._p) | set(self._d) | {r for pair in self._t for r in pair}
        return {r: self.rights(r) for r in sorted(replicas, key=replica_order) if self.rights(r)}

    def increment(self, replica: Any, amount: int) -> "BoundedCounter":
        """Add ``amount`` to the value, creating that many rights at ``replica``."""
        replica = require_replica(replica)
        amount = require_amount("amount", amount)
        total = require_int("increment total", self._p.get(replica, 0) + amount)
        self._p[replica] = total
        delta = BoundedCounter()
        delta._p[replica] = total
        return delta

    def decrement(self, replica: Any, amount: int) -> "BoundedCounter":
        """Spend ``amount`` of ``replica``'s rights.

        Raises:
            InsufficientRights: ``replica`` holds fewer rights than ``amount``; nothing changes.
        """
        replica = require_replica(replica)
        amount = require_amount("amount", amount)
        self._require_rights(replica, amount, "decrement")
        self._d[replica] = require_int("decrement total", self._d.get(replica, 0) + amount)
        delta = self._positive_side(replica)
        delta._d[replica] = self._d[replica]
        return delta

    def transfer(self, from_replica: Any, to_replica: Any, amount: int) -> "BoundedCounter":
        """Move ``amount`` rights from ``from_replica`` to ``to_replica``; the value is unchanged.

        Raises:
            InsufficientRights: ``from_replica`` holds fewer rights than ``amount``.
        """
        src, dst = require_replica(from_replica), require_replica(to_replica)
        if src == dst:
            raise InvalidInput(f"cannot transfer rights from {src!r} to itself")
        amount = require_amount("amount", amount)
        self._require_rights(src, amount, "transfer")
        self._t[(src, dst)] = require_int("transfer total", self._t.get((src, dst), 0) + amount)
        delta = self._positive_side(src)
        delta._t[(src, dst)] = self._t[(src, dst)]
        return delta

    def _require_rights(self, replica: Any, amount: int, verb: str) -> None:
        available = self.rights(replica)
        if amount > available:
            raise InsufficientRights(
                f"cannot {verb} {amount}: replica {replica!r} holds {available} rights "
                f"(value {self.value})",
                needed=amount,
                available=available,
            )

    def _positive_side(self, replica: Any) -> "BoundedCounter":
        delta = BoundedCounter()
        delta._p = dict(self._p)
        for pair, amount in self._t.items():
            if pair[1] == replica:
                delta._t[pair] = amount
        return delta

    def merge(self, other: "BoundedCounter") -> None:
        if not isinstance(other, BoundedCounter):
            raise InvalidInput(f"cannot merge {type(other).__name__} into BoundedCounter")
        for mine, theirs in ((self._p, other._p), (self._d, other._d), (self._t, other._t)):
            for slot, amount in theirs.items():
                if amount > mine.get(slot, 0):
                    mine[slot] = amount

    def copy(self) -> "BoundedCounter":
        clone = BoundedCounter()
        clone._p, clone._d, clone._t = dict(self._p), dict(self._d), dict(self._t)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BoundedCounter):
            return NotImplemented
        return (self._p, self._d, self._t) == (other._p, other._d, other._t)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BoundedCounter(value={self.value}, holders={self.holders()})"

    def to_wire(self, *, writer: Any = None) -> list:
        """``["bc", 1, [[[r, P]...], [[r, D]...], [[from, to, T]...]]]``; the writer is ``null``."""
        def rows(slots: dict) -> list:
            ordered = sorted(slots.items(), key=lambda item: replica_order(item[0]))
            return [[encode_replica(r, writer), v] for r, v in ordered]

        transfers = sorted(self._t.items(), key=lambda item: (replica_order(item[0][0]), replica_order(item[0][1])))
        t_rows = [[encode_replica(s, writer), encode_replica(d, writer), v] for (s, d), v in transfers]
        return [self.TAG, self.VERSION, [rows(self._p), rows(self._d), t_rows]]

    @classmethod
    def from_wire(cls, obj: Any, *, writer: Any = None) -> "BoundedCounter":
        """Decode ``[tag, version, payload]``; raises ``MalformedWire`` for anything else."""
        return cls.from_payload(wire_header(obj, cls.TAG, cls.VERSION), writer=writer)

    @classmethod
    def from_payload(cls, payload: Any, *, writer: Any = None) -> "BoundedCounter":
        """Decode the payload alone (inside a delta group the tag and version are implied)."""
        p_rows, d_rows, t_rows = wire_list(payload, "bc state", length=3)
        counter = cls()
        for rows, slots, name in ((p_rows, counter._p, "P"), (d_rows, counter._d, "D")):
            for row in wire_list(rows, f"bc {name}", max_length=MAX_SLOTS):
                r, v = wire_list(row, f"bc {name} slot", length=2)
                replica = wire_replica(r, f"bc {name} replica", writer)
                if replica in slots:
                    raise MalformedWire(f"bc: replica {replica!r} appears twice in {name}")
                slots[replica] = wire_int(v, f"bc {name} total", minimum=1)  # a zero slot is never written
        for row in wire_list(t_rows, "bc T", max_length=MAX_SLOTS):
            s, d, v = wire_list(row, "bc T slot", length=3)
            pair = (wire_replica(s, "bc T source", writer), wire_replica(d, "bc T target", writer))
            if pair[0] == pair[1] or pair in counter._t:
                raise MalformedWire(f"bc: bad or repeated transfer slot {pair!r}")
            counter._t[pair] = wire_int(v, "bc T total", minimum=1)
        return counter
