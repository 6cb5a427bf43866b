"""Record: one immutable record per id (the sales log).

State: the set of distinct records ever written under this id. Writing the same record
twice is a no-op, which makes a till's retry of a sale idempotent. Two *different* records
under one id (two tills that reused a sale id, or a bug) are both kept, ``conflict`` is
raised as a flag for the incident ledger, and the value is chosen deterministically: the
record with the smallest canonical encoding, identical on every replica.
"""

from __future__ import annotations

from typing import Any

import cbor2

from ._check import encoded_value, wire_header, wire_list
from ._errors import InvalidInput, MalformedWire

__all__ = ["Record"]

# Conflicts are anomalies; more candidates than this under one id is an attack or a loop,
# so only the MAX_CANDIDATES smallest encodings are kept.
MAX_CANDIDATES = 16


class Record:
    TAG = "rec"
    CODE = 4  # one-byte type code inside delta groups
    VERSION = 1

    __slots__ = ("_candidates",)

    def __init__(self) -> None:
        self._candidates: dict[bytes, Any] = {}

    @property
    def value(self) -> Any:
        """The chosen record, or None when nothing was written."""
        if not self._candidates:
            return None
        return cbor2.loads(min(self._candidates))

    @property
    def conflict(self) -> bool:
        """True when different records were written under this id."""
        return len(self._candidates) > 1

    @property
    def candidates(self) -> list[Any]:
        """Every distinct record under this id, in the deterministic order (winner first)."""
        return [cbor2.loads(enc) for enc in sorted(self._candidates)]

    def write(self, record: Any) -> "Record":
        """Write ``record`` (plain data, no floats); returns the delta.

        Writing a record equal to one already present changes nothing (idempotent retry).
        """
        encoded = encoded_value("record", record)[1]
        self._add((encoded,))
        delta = Record()
        delta._candidates[encoded] = None
        return delta

    def merge(self, other: "Record") -> None:
        if not isinstance(other, Record):
            raise InvalidInput(f"cannot merge {type(other).__name__} into Record")
        self._add(other._candidates)

    def _add(self, encodings) -> None:
        for encoded in encodings:
            self._candidates[encoded] = None
        if len(self._candidates) > MAX_CANDIDATES:
            # Keep the smallest encodings: "smallest K of the union" is itself a join, so
            # replicas converge on the same capped set and the winner never changes.
            self._candidates = dict.fromkeys(sorted(self._candidates)[:MAX_CANDIDATES])

    def copy(self) -> "Record":
        clone = Record()
        clone._candidates = dict(self._candidates)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self._candidates.keys() == other._candidates.keys()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Record(value={self.value!r}, conflict={self.conflict})"

    def to_wire(self, *, writer: Any = None) -> list:
        """``["rec", 1, [record, ...]]`` in canonical order."""
        return [self.TAG, self.VERSION, self.candidates]

    @classmethod
    def from_wire(cls, obj: Any, *, writer: Any = None) -> "Record":
        """Decode ``[tag, version, payload]``; raises ``MalformedWire`` for anything else."""
        return cls.from_payload(wire_header(obj, cls.TAG, cls.VERSION), writer=writer)

    @classmethod
    def from_payload(cls, payload: Any, *, writer: Any = None) -> "Record":
        """Decode the payload alone (inside a delta group the tag and version are implied)."""
        items = wire_list(payload, "rec candidates", max_length=MAX_CANDIDATES)
        record = cls()
        for item in items:
            try:
                record._candidates[encoded_value("record", item)[1]] = None
            except InvalidInput as exc:
                raise MalformedWire(f"rec: {exc}") from None
        return record
