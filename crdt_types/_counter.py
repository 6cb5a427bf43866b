"""PN-counter: stock per (branch, sku).

State: replica -> (p, n), the running totals of that replica's additions and removals.
Merge takes the pointwise maximum, so a delta (the writer's new totals) can be delivered
any number of times in any order. The value may go negative: an oversell is recorded,
never refused, because the goods are already in the customer's hand.
"""

from __future__ import annotations

from typing import Any

from ._check import (
    MAX_TOTAL,
    encode_replica,
    replica_order,
    require_int,
    require_replica,
    wire_header,
    wire_int,
    wire_list,
    wire_replica,
)
from ._errors import InvalidInput, MalformedWire

__all__ = ["PNCounter"]

# One slot per device that ever wrote the key; a chain has far fewer devices than this.
MAX_SLOTS = 4096


class PNCounter:
    TAG = "pn"
    CODE = 1  # one-byte type code inside delta groups
    VERSION = 1

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[Any, tuple[int, int]] = {}

    @property
    def value(self) -> int:
        return sum(p - n for p, n in self._slots.values())

    def rows(self) -> dict[Any, tuple[int, int]]:
        """replica -> (p, n), a copy."""
        return dict(self._slots)

    def add(self, replica: Any, amount: int) -> "PNCounter":
        """Add ``amount`` (non-zero, negative to remove) on behalf of ``replica``.

        Returns:
            The delta: a counter holding only this replica's new totals.
        Raises:
            InvalidInput: a zero, float or non-int amount, a bad replica id, or a total
                that would overflow 63 bits.
        """
        replica = require_replica(replica)
        amount = require_int("amount", amount, minimum=-MAX_TOTAL)
        if amount == 0:
            raise InvalidInput("amount must be non-zero, got 0")
        p, n = self._slots.get(replica, (0, 0))
        if amount > 0:
            p = require_int("counter total", p + amount)
        else:
            n = require_int("counter total", n - amount)
        self._slots[replica] = (p, n)
        delta = PNCounter()
        delta._slots[replica] = (p, n)
        return delta

    def merge(self, other: "PNCounter") -> None:
        if not isinstance(other, PNCounter):
            raise InvalidInput(f"cannot merge {type(other).__name__} into PNCounter")
        slots = self._slots
        for replica, (p, n) in other._slots.items():
            mine = slots.get(replica)
            if mine is None:
                slots[replica] = (p, n)
            elif p > mine[0] or n > mine[1]:
                slots[replica] = (max(p, mine[0]), max(n, mine[1]))

    def copy(self) -> "PNCounter":
        clone = PNCounter()
        clone._slots = dict(self._slots)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PNCounter):
            return NotImplemented
        return self._slots == other._slots

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PNCounter(value={self.value}, slots={len(self._slots)})"

    def to_wire(self, *, writer: Any = None) -> list:
        """``["pn", 1, [[replica, p, n], ...]]``; the writer's slot is ``null``.

        A delta holding only the writer's slot, the common case, is just ``[p, n]``.
        """
        if writer is not None and len(self._slots) == 1 and writer in self._slots:
            return [self.TAG, self.VERSION, list(self._slots[writer])]
        rows = sorted(self._slots.items(), key=lambda item: replica_order(item[0]))
        return [self.TAG, self.VERSION, [[encode_replica(r, writer), p, n] for r, (p, n) in rows]]

    @classmethod
    def from_wire(cls, obj: Any, *, writer: Any = None) -> "PNCounter":
        """Decode ``[tag, version, payload]``; raises ``MalformedWire`` for anything else."""
        return cls.from_payload(wire_header(obj, cls.TAG, cls.VERSION), writer=writer)

    @classmethod
    def from_payload(cls, payload: Any, *, writer: Any = None) -> "PNCounter":
        """Decode the payload alone (inside a delta group the tag and version are implied)."""
        counter = cls()
        if (type(payload) is list and len(payload) == 2 and type(payload[0]) is int and type(payload[1]) is int
                and writer is not None and 0 <= payload[0] <= MAX_TOTAL and 0 <= payload[1] <= MAX_TOTAL
                and payload != [0, 0]):
            counter._slots[writer] = (payload[0], payload[1])  # the common case: the writer's own slot
            return counter
        rows = wire_list(payload, "pn slots", max_length=MAX_SLOTS)
        if len(rows) == 2 and not isinstance(rows[0], (list, tuple)):
            slot = (wire_int(rows[0], "pn p"), wire_int(rows[1], "pn n"))
            if slot == (0, 0):
                raise MalformedWire("pn: a slot of (0, 0) is never written")
            counter._slots[wire_replica(None, "pn writer slot", writer)] = slot
            return counter
        for row in rows:
            r, p, n = wire_list(row, "pn slot", length=3)
            replica = wire_replica(r, "pn slot replica", writer)
            if replica in counter._slots:
                raise MalformedWire(f"pn: replica {replica!r} appears twice")
            counter._slots[replica] = (wire_int(p, "pn p"), wire_int(n, "pn n"))
            if counter._slots[replica] == (0, 0):
                raise MalformedWire("pn: a slot of (0, 0) is never written")
        return counter
