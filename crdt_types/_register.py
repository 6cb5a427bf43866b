"""Last-writer-wins register: prices, member profile fields, settings.

State: (hlc, replica, value) or empty. The highest (hlc, replica) wins; should two writes
ever share both (a replica reusing a stamp after losing its clock), the canonical encoding
of the value breaks the tie, so merge stays deterministic and commutative everywhere.
"""

from __future__ import annotations

from typing import Any

import cbor2

from ._check import (
    canonical,
    encode_replica,
    replica_order,
    require_replica,
    require_value,
    wire_header,
    wire_list,
    wire_replica,
)
from ._errors import InvalidInput, MalformedWire
from ._hlc import Timestamp

__all__ = ["LWWRegister"]


class LWWRegister:
    TAG = "lww"
    CODE = 2  # one-byte type code inside delta groups
    VERSION = 1

    __slots__ = ("_hlc", "_replica", "_value", "_rank")

    def __init__(self) -> None:
        self._hlc: Timestamp | None = None
        self._replica: Any = None
        self._value: Any = None
        self._rank: tuple | None = None

    @property
    def value(self) -> Any:
        """The winning value; lists and maps come back as copies the caller may change."""
        if isinstance(self._value, (list, dict)):
            return cbor2.loads(self._rank[2])
        return self._value

    @property
    def stamp(self) -> tuple[Timestamp, Any] | None:
        """(hlc, replica) of the winning write, or None when never written."""
        return None if self._hlc is None else (self._hlc, self._replica)

    def set(self, value: Any, hlc: Timestamp, replica: Any) -> "LWWRegister":
        """Write ``value`` stamped ``hlc`` by ``replica``; returns the delta.

        A write older than the current one is still returned as a delta (it is a valid
        state) but does not change the value.
        """
        if not isinstance(hlc, Timestamp):
            raise InvalidInput(f"hlc must be a Timestamp, got {type(hlc).__name__}")
        delta = LWWRegister._make(hlc, require_replica(replica), require_value("register value", value))
        self.merge(delta)
        return delta

    @classmethod
    def _make(cls, hlc: Timestamp, replica: Any, value: Any) -> "LWWRegister":
        reg = cls()
        reg._hlc, reg._replica, reg._value = hlc, replica, value
        reg._rank = (hlc, replica_order(replica), canonical(value))
        return reg

    def merge(self, other: "LWWRegister") -> None:
        if not isinstance(other, LWWRegister):
            raise InvalidInput(f"cannot merge {type(other).__name__} into LWWRegister")
        if other._rank is not None and (self._rank is None or other._rank > self._rank):
            self._hlc, self._replica, self._value, self._rank = other._hlc, other._replica, other._value, other._rank

    def copy(self) -> "LWWRegister":
        clone = LWWRegister()
        clone._hlc, clone._replica, clone._value, clone._rank = self._hlc, self._replica, self._value, self._rank
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LWWRegister):
            return NotImplemented
        return self._rank == other._rank

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LWWRegister(value={self._value!r}, hlc={self._hlc}, replica={self._replica!r})"

    def to_wire(self, *, writer: Any = None) -> list:
        """``["lww", 1, [hlc, replica, value]]`` or ``["lww", 1, null]`` when empty."""
        if self._hlc is None:
            return [self.TAG, self.VERSION, None]
        return [self.TAG, self.VERSION, [self._hlc.pack(), encode_replica(self._replica, writer), self._value]]

    @classmethod
    def from_wire(cls, obj: Any, *, writer: Any = None) -> "LWWRegister":
        """Decode ``[tag, version, payload]``; raises ``MalformedWire`` for anything else."""
        return cls.from_payload(wire_header(obj, cls.TAG, cls.VERSION), writer=writer)

    @classmethod
    def from_payload(cls, payload: Any, *, writer: Any = None) -> "LWWRegister":
        """Decode the payload alone (inside a delta group the tag and version are implied)."""
        body = payload
        if body is None:
            return cls()
        packed, replica, value = wire_list(body, "lww state", length=3)
        try:
            return cls._make(Timestamp.unpack(packed), wire_replica(replica, "lww replica", writer),
                             require_value("register value", value))
        except MalformedWire:
            raise
        except InvalidInput as exc:
            raise MalformedWire(f"lww: {exc}") from None
