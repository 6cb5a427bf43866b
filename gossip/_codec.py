"""Canonical CBOR in and out, bounded, and the one place where signable bytes are made.

Everything tillmesh signs or hashes is ``context || 0x00 || canonical CBOR`` with a context
tag naming what it is (as Hypercore's ``caps.js`` does), so a signature made for one purpose
can never be replayed as another.
"""

from __future__ import annotations

from typing import Any

import cbor2

from crdt_types import canonical

from ._errors import MalformedData

__all__ = ["canonical", "decode", "signable", "CONTEXTS"]

CONTEXTS = frozenset({
    b"tillmesh/v1/certificate",
    b"tillmesh/v1/revocation",
    b"tillmesh/v1/epoch-key",
    b"tillmesh/v1/entry",
    b"tillmesh/v1/channel-certificate",
})

def signable(context: bytes, obj: Any) -> bytes:
    """The exact bytes signed for ``obj`` in ``context``."""
    if context not in CONTEXTS:
        raise ValueError(f"unknown signing context {context!r}")
    return context + b"\x00" + canonical(obj)


def _reject_tag(decoder: Any, tag: Any) -> Any:
    raise MalformedData(f"CBOR semantic tag {tag.tag} is not used by tillmesh")


def decode(data: Any, *, limit: int, what: str, require_canonical: bool = True) -> Any:
    """Decode one CBOR item from at most ``limit`` bytes.

    Canonical form is required of anything hashed or signed as received (entries, records,
    tokens): a second encoding of the same value would otherwise be a second, "different"
    entry that a relay could forge without any key. Nesting depth is bounded by cbor2's own
    recursion guard here and by the value validators of crdt_types afterwards. Semantic tags
    cbor2 does not know are refused here; those it knows (sets, datetimes, bignums) decode to
    Python types that every shape check downstream refuses, since all of them expect plain
    lists, maps, ints, strings and bytes.

    Raises:
        MalformedData: not bytes, over the limit, trailing bytes, non-canonical, or not CBOR.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedData(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limit:
        raise MalformedData(f"{what}: {len(data)} bytes, the limit is {limit}")
    try:
        obj = cbor2.loads(data, tag_hook=_reject_tag)
    except MalformedData:
        raise
    except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, RecursionError…)
        raise MalformedData(f"{what}: not valid CBOR ({type(exc).__name__})") from None
    if require_canonical and canonical_size(obj) != len(data):
        raise MalformedData(f"{what}: not in canonical CBOR form")
    return obj


def canonical_size(obj: Any) -> int:
    try:
        return len(canonical(obj))
    except Exception:
        return -1
