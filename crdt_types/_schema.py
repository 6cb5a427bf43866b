"""Which CRDT type a key holds: the schema is a table, the key's first element its kind.

Keys are tuples such as ``("stock", branch, sku)``. Every replica resolves a key to the
same type from this table, so a delta that claims another type for a key is malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._bounded import BoundedCounter
from ._check import MAX_KEY_PART_CHARS, MAX_KEY_PARTS, require_int, require_utf8, wire_list
from ._counter import PNCounter
from ._document import Document
from ._errors import InvalidInput, MalformedWire, UnknownKey, UnknownOps
from ._record import Record
from ._register import LWWRegister

__all__ = ["KeyRule", "Schema", "DEFAULT_SCHEMA", "CRDT_TYPES", "CRDT_CODES"]

CRDT_TYPES = {cls.TAG: cls for cls in (PNCounter, LWWRegister, BoundedCounter, Record, Document)}
CRDT_CODES = {cls.CODE: cls for cls in CRDT_TYPES.values()}
# Resolved keys are remembered: a shop has tens of thousands of keys, not millions.
MAX_CACHED_KEYS = 200_000


@dataclass(frozen=True, slots=True)
class KeyRule:
    """Keys of ``kind`` with ``arity`` elements hold ``crdt``; ``last`` pins the last element."""

    kind: str
    code: int  # the kind's one-byte code on the wire, in place of its name
    arity: int
    crdt: type
    last: str | None = None
    description: str = ""


class Schema:
    """A table of key rules; a rule with ``last`` set wins over one without."""

    def __init__(self, rules: list[KeyRule]) -> None:
        self.rules = tuple(rules)
        self._exact = {(r.kind, r.arity, r.last): r.crdt for r in rules if r.last is not None}
        self._general = {(r.kind, r.arity): r.crdt for r in rules if r.last is None}
        self._kinds = sorted({r.kind for r in rules})
        self._code_of = {r.kind: r.code for r in rules}
        self._kind_of = {r.code: r.kind for r in rules}
        if len(self._code_of) != len(self._kind_of):
            raise InvalidInput("schema: every key kind needs its own wire code")
        self._cache: dict[tuple, type] = {}
        self._wire_cache: dict[tuple, tuple[tuple, type]] = {}

    def type_of(self, key: Any) -> type:
        """The CRDT type ``key`` holds.

        Raises:
            InvalidInput: not a tuple of short strings / non-negative ints, or no rule matches.
        """
        try:
            return self._cache[key]
        except (KeyError, TypeError):
            pass
        crdt = self._resolve(key)
        # Only all-string keys are cached: (1,) == (True,) would let a bool in through the cache.
        if len(self._cache) < MAX_CACHED_KEYS and all(type(part) is str for part in key):
            self._cache[key] = crdt
        return crdt

    def key_to_wire(self, key: tuple) -> list:
        """``("stock", "b1", "sku")`` -> ``[1, "b1", "sku"]``: the kind becomes its code."""
        self.type_of(key)
        return [self._code_of[key[0]], *key[1:]]

    def key_from_wire(self, obj: Any) -> tuple:
        """The inverse of ``key_to_wire``; raises ``MalformedWire`` for anything else."""
        return self.resolve_wire_key(obj)[0]

    def resolve_wire_key(self, obj: Any) -> tuple[tuple, type]:
        """Decode a wire key and the type it holds; cached for the common all-string keys."""
        if type(obj) is list and obj and type(obj[0]) is int:
            try:
                # Only all-string keys are cached, and a non-string never equals a string,
                # so a hit proves the parts are strings.
                hit = self._wire_cache.get(tuple(obj))
            except TypeError:  # an unhashable part: malformed, decoded below for the error
                hit = None
            if hit is not None:
                return hit
        key = self._decode_wire_key(obj)
        hit = (key, self.type_of(key))
        if len(self._wire_cache) < MAX_CACHED_KEYS and all(type(p) is str for p in key):
            self._wire_cache[tuple(obj)] = hit
        return hit

    def _decode_wire_key(self, obj: Any) -> tuple:
        parts = wire_list(obj, "key", max_length=MAX_KEY_PARTS)
        if not parts or type(parts[0]) is not int or parts[0] < 0:
            raise MalformedWire(f"key: expected a kind code first, got {parts!r}")
        kind = self._kind_of.get(parts[0])
        if kind is None:
            raise UnknownOps(f"key: kind code {parts[0]} is not in this version's schema")
        key = (kind, *parts[1:])
        try:
            self.type_of(key)
        except UnknownKey as exc:
            raise UnknownOps(f"key: {exc}") from None
        except InvalidInput as exc:
            raise MalformedWire(f"key: {exc}") from None
        return key

    def _resolve(self, key: Any) -> type:
        if not isinstance(key, tuple) or not 1 < len(key) <= MAX_KEY_PARTS:
            raise InvalidInput(f"key must be a tuple of 2..{MAX_KEY_PARTS} parts, got {key!r}")
        for part in key:
            if isinstance(part, str):
                if not 0 < len(part) <= MAX_KEY_PART_CHARS:
                    raise InvalidInput(f"key part must be 1..{MAX_KEY_PART_CHARS} chars, got {part!r} in {key!r}")
                require_utf8("key part", part)
            else:
                require_int(f"key part in {key!r}", part, minimum=0)
        crdt = self._exact.get((key[0], len(key), key[-1])) or self._general.get((key[0], len(key)))
        if crdt is None:
            raise UnknownKey(f"unknown key {key!r}: expected one of the kinds {self._kinds} with its arity")
        return crdt


DEFAULT_SCHEMA = Schema([
    KeyRule("stock", 1, 3, PNCounter, description="(stock, branch, sku): pieces on hand"),
    KeyRule("price", 2, 2, LWWRegister, description="(price, sku): chain-wide price, minor units"),
    KeyRule("price", 2, 3, LWWRegister, description="(price, branch, sku): branch override"),
    KeyRule("member", 3, 3, BoundedCounter, last="balance", description="(member, id, balance): stored value"),
    KeyRule("member", 3, 3, LWWRegister, description="(member, id, field): profile field"),
    KeyRule("sale", 4, 2, Record, description="(sale, sale_id): the immutable sale record"),
    KeyRule("order", 5, 2, Document, description="(order, order_id): shared open order"),
    KeyRule("reserve", 6, 3, BoundedCounter, description="(reserve, branch, sku): reservable stock"),
    KeyRule("setting", 7, 2, LWWRegister, description="(setting, name): shop settings"),
    KeyRule("rights", 8, 3, LWWRegister,
            description="(rights, member_id, device): balance rights a device asks others to transfer to it"),
])
