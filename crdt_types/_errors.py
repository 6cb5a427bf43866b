"""The one error tree of tillmesh.

The type says who is to blame, in the manner of h11's Local/RemoteProtocolError:
``InvalidInput`` is the caller's fault, ``RemoteProtocolError`` the peer's,
``IntegrityError`` means data failed a cryptographic or structural check,
``InsufficientRights`` is an escrow refusal, ``StorageError`` a storage fault.
It lives in the lowest layer so that every package raises from the same root.
"""

__all__ = [
    "TillmeshError",
    "InvalidInput",
    "MalformedWire",
    "UnknownOps",
    "UnknownKey",
    "InsufficientRights",
    "RemoteProtocolError",
    "IntegrityError",
    "StorageError",
]


class TillmeshError(Exception):
    """Root of every error tillmesh raises on purpose."""


class InvalidInput(TillmeshError, ValueError):
    """The caller passed a value that is not acceptable; nothing was changed."""


class MalformedWire(InvalidInput):
    """A wire structure (CBOR-ready object or bytes) does not have the expected shape."""


class UnknownOps(MalformedWire):
    """Well-formed wire data naming a key kind, key shape, CRDT type or format version that
    this version does not know: written by a newer version, to be held, not refused."""


class UnknownKey(InvalidInput):
    """A key that matches no rule of the schema."""


class InsufficientRights(TillmeshError):
    """A bounded-counter decrement or transfer exceeds the replica's local rights."""

    def __init__(self, message: str, *, needed: int = 0, available: int = 0) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class RemoteProtocolError(TillmeshError):
    """The peer broke the protocol; the session must close."""


class IntegrityError(TillmeshError):
    """Bad signature, broken hash chain, fork, or data that fails authentication."""


class StorageError(TillmeshError):
    """The storage adapter failed or holds inconsistent data."""
