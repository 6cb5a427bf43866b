"""Input validation shared by every CRDT type.

Every check runs before any state changes, and every refusal names the bad value and what
was expected. Money and quantities are integers (minor units, pieces); a float is refused
outright rather than rounded, because a rounded price is a silently wrong price.
"""

from __future__ import annotations

from typing import Any

import cbor2

from ._errors import InvalidInput, MalformedWire

# Totals are stored as SQLite INTEGER and CBOR unsigned ints; 2**63 - 1 fits both.
MAX_TOTAL = 2**63 - 1
# A single amount larger than this is certainly a typo (it is 92 trillion in minor units).
MAX_AMOUNT = 2**53 - 1
# Branch ids, SKUs, member ids, sale ids: short identifiers, not free text.
MAX_KEY_PART_CHARS = 128
MAX_KEY_PARTS = 4
# Replica ids: device numbers on the wire, public keys (32 bytes) or names in tests.
MAX_REPLICA_BYTES = 64
# Register values and records: a profile field or a sale with its lines, never a blob.
MAX_STRING_CHARS = 4096
MAX_VALUE_BYTES = 16 * 1024
MAX_VALUE_DEPTH = 8


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def require_int(name: str, value: Any, *, minimum: int | None = None, maximum: int = MAX_TOTAL) -> int:
    """Return ``value`` if it is a plain int within bounds, else raise ``InvalidInput``."""
    if isinstance(value, float):
        raise InvalidInput(
            f"{name} must be an integer (minor units / pieces), got float {_describe(value)}; "
            "floats are rejected"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an int, got {type(value).__name__} {_describe(value)}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise InvalidInput(f"{name} must be <= {maximum}, got {value}")
    return value


def require_amount(name: str, value: Any) -> int:
    """A strictly positive amount (minor units or pieces)."""
    return require_int(name, value, minimum=1, maximum=MAX_AMOUNT)


def require_replica(value: Any) -> int | str | bytes:
    """Replica ids are opaque but must be small, hashable and encodable: int, str or bytes."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidInput(f"replica id must be an int, str or bytes, got {_describe(value)}")
    if isinstance(value, int):
        return require_int("replica id", value, minimum=0)
    if isinstance(value, (str, bytes)):
        size = len(require_utf8("replica id", value)) if isinstance(value, str) else len(value)
        if not 0 < size <= MAX_REPLICA_BYTES:
            raise InvalidInput(f"replica id must be 1..{MAX_REPLICA_BYTES} bytes long, got {size}")
        return value
    raise InvalidInput(f"replica id must be an int, str or bytes, got {type(value).__name__}")


def require_utf8(name: str, value: str) -> bytes:
    """The UTF-8 encoding of ``value``; a lone surrogate cannot be stored or sent."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} is not encodable as UTF-8: {_describe(value)}") from None


def replica_order(replica: int | str | bytes) -> tuple[int, Any]:
    """A total order over replica ids of mixed types, identical on every machine."""
    if isinstance(replica, int):
        return (0, replica)
    if isinstance(replica, str):
        return (1, replica.encode("utf-8"))
    return (2, replica)


def require_value(name: str, value: Any) -> Any:
    """Plain data for registers and records: None, bool, int, str, bytes, lists and str-keyed maps.

    Returns a normalised copy (tuples become lists) so stored values cannot be mutated
    through the caller's reference.
    """
    return encoded_value(name, value)[0]


def encoded_value(name: str, value: Any) -> tuple[Any, bytes]:
    """``require_value`` and the canonical encoding it was size-checked by, computed once
    (a record is kept as that encoding)."""
    normalised = _normalise(name, value, 0)
    encoded = canonical(normalised)
    if len(encoded) > MAX_VALUE_BYTES:
        raise InvalidInput(f"{name} encodes to {len(encoded)} bytes, the limit is {MAX_VALUE_BYTES}")
    return normalised, encoded


def _normalise(name: str, value: Any, depth: int) -> Any:
    if depth > MAX_VALUE_DEPTH:
        raise InvalidInput(f"{name} nests deeper than {MAX_VALUE_DEPTH} levels")
    # The exact plain types first (the hot path of every record and register write); their
    # subclasses, and every refusal, take the general checks below.
    kind = type(value)
    if kind is str:
        if len(value) <= MAX_STRING_CHARS and value.isascii():
            return value
    elif kind is int:
        if -MAX_TOTAL <= value <= MAX_TOTAL:
            return value
    elif kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise InvalidInput(f"{name} has a non-string map key {_describe(k)}")
                k = _normalise(name, k, depth + 1)
            elif depth + 1 > MAX_VALUE_DEPTH or len(k) > MAX_STRING_CHARS or not k.isascii():
                k = _normalise(name, k, depth + 1)
            out[k] = _normalise(name, v, depth + 1)
        return out
    elif kind is list:
        return [_normalise(name, item, depth + 1) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        raise InvalidInput(f"{name} contains float {_describe(value)}; use integers (minor units)")
    if isinstance(value, int):
        return require_int(name, value, minimum=-MAX_TOTAL)
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise InvalidInput(f"{name} has a string of {len(value)} chars, limit {MAX_STRING_CHARS}")
        require_utf8(name, value)
        return value
    if isinstance(value, bytes):
        if len(value) > MAX_VALUE_BYTES:
            raise InvalidInput(f"{name} has {len(value)} bytes, limit {MAX_VALUE_BYTES}")
        return value
    if isinstance(value, (list, tuple)):
        return [_normalise(name, item, depth + 1) for item in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{name} has a non-string map key {_describe(k)}")
            out[_normalise(name, k, depth + 1)] = _normalise(name, v, depth + 1)
        return out
    raise InvalidInput(f"{name} has unsupported type {type(value).__name__}")


def canonical(obj: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 core deterministic encoding) of plain data."""
    return cbor2.dumps(obj, canonical=True)


# --- wire helpers: shapes of decoded CBOR ------------------------------------------------

def wire_list(obj: Any, what: str, *, length: int | None = None, max_length: int | None = None) -> list:
    if not isinstance(obj, (list, tuple)):
        raise MalformedWire(f"{what}: expected an array, got {type(obj).__name__}")
    if length is not None and len(obj) != length:
        raise MalformedWire(f"{what}: expected {length} elements, got {len(obj)}")
    if max_length is not None and len(obj) > max_length:
        raise MalformedWire(f"{what}: at most {max_length} elements, got {len(obj)}")
    return list(obj)


def wire_int(obj: Any, what: str, *, minimum: int = 0, maximum: int = MAX_TOTAL) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or not minimum <= obj <= maximum:
        raise MalformedWire(f"{what}: expected an integer in {minimum}..{maximum}, got {_describe(obj)}")
    return obj


def wire_replica(obj: Any, what: str, writer: Any) -> int | str | bytes:
    """Decode a replica slot; ``None`` stands for the entry's writer, which is implicit."""
    if obj is None:
        if writer is None:
            raise MalformedWire(f"{what}: implicit writer slot but no writer given")
        return writer
    try:
        return require_replica(obj)
    except InvalidInput as exc:
        raise MalformedWire(f"{what}: {exc}") from None


def wire_header(obj: Any, tag: str, version: int) -> Any:
    """Check ``[tag, version, payload]`` and return the payload."""
    items = wire_list(obj, f"{tag} wire form", length=3)
    if items[0] != tag:
        raise MalformedWire(f"expected type tag {tag!r}, got {_describe(items[0])}")
    if type(items[1]) is not int or items[1] != version:
        raise MalformedWire(f"{tag}: unsupported format version {_describe(items[1])}, expected {version}")
    return items[2]


def encode_replica(replica: Any, writer: Any) -> Any:
    return None if writer is not None and replica == writer else replica
