"""The frames of a replication session: frozen events, and their codec.

Inside the secure channel every frame is a CBOR array whose first element names it:

    ["have", {origin: seq, ...}, full]              full = the whole vector, else only what changed
    ["have", {...}, true, {origin: hash, ...}]      periodic full haves add each head's entry hash
    ["entries", [entry, ...], ack]                  ack = please answer with a have (back-pressure)
    ["ping", n] / ["pong", n]                       liveness
    ["bye", reason]                                 orderly close; reason starts with a CloseReason value

``parse_frame`` checks a received frame's shape against every bound and returns one of
the event classes below; ``encode_frame`` is its inverse. Nothing else in gossip builds or
reads a raw frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ._entry import MAX_ENTRY_BYTES
from ._errors import SessionProtocolError
from ._events import CloseReason

__all__ = [
    "FrameKind", "Have", "Entries", "Ping", "Pong", "Bye", "SessionFrame", "parse_frame", "encode_frame",
    "MAX_BATCH_ENTRIES", "MAX_BATCH_BYTES", "MAX_HAVE_ORIGINS", "MAX_REASON_CHARS",
]

# A batch must fit well inside one 1 MiB frame (the channel's limit), and be small enough
# that a LAN till interleaves live pushes with a large catch-up.
MAX_BATCH_ENTRIES = 256
MAX_BATCH_BYTES = 256 * 1024
# Origins in one have: every device of a chain, with a wide margin.
MAX_HAVE_ORIGINS = 65_536
MAX_REASON_CHARS = 200
_MAX_ORIGIN = 2**20
_MAX_SEQ = 2**53
_MAX_PING = 2**32


class FrameKind(enum.Enum):
    """Inputs of the session machine: the frames, and what the channel reports."""

    ESTABLISHED = "established"  # the channel authenticated the peer
    HAVE = "have"
    ENTRIES = "entries"
    PING = "ping"
    PONG = "pong"
    BYE = "bye"
    CLOSED = "closed"  # the transport or the channel ended


@dataclass(frozen=True, slots=True)
class Have:
    """The sender's version vector (or the part that changed), maybe with head hashes."""

    vector: dict[int, int]
    full: bool
    heads: dict[int, bytes] | None = None
    kind = FrameKind.HAVE


@dataclass(frozen=True, slots=True)
class Entries:
    """Encoded entries the receiver lacks; ``ack`` asks for a have in reply."""

    batch: tuple[bytes, ...]
    ack: bool = False
    kind = FrameKind.ENTRIES


@dataclass(frozen=True, slots=True)
class Ping:
    n: int
    kind = FrameKind.PING


@dataclass(frozen=True, slots=True)
class Pong:
    n: int
    kind = FrameKind.PONG


@dataclass(frozen=True, slots=True)
class Bye:
    """Orderly close. ``reason`` is the CloseReason the sender gave, when it is one we know."""

    reason: CloseReason
    detail: str = field(default="")
    kind = FrameKind.BYE


SessionFrame = Have | Entries | Ping | Pong | Bye


def _is_int(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def parse_frame(obj: Any) -> SessionFrame:
    """Check a received frame's shape and bounds.

    Raises:
        SessionProtocolError: not one of the frames above, or a field out of bounds.
    """
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise SessionProtocolError("a frame is an array starting with its name")
    name, args = obj[0], obj[1:]
    if name == "have" and len(args) in (2, 3) and isinstance(args[0], dict) and isinstance(args[1], bool):
        vector = args[0]
        if len(vector) > MAX_HAVE_ORIGINS or not all(
                _is_int(o, 0, _MAX_ORIGIN) and _is_int(s, 0, _MAX_SEQ) for o, s in vector.items()):
            raise SessionProtocolError("have: expected {device number: seq} within bounds")
        heads = None
        if len(args) == 3:
            heads = args[2]
            if not (args[1] and isinstance(heads, dict) and len(heads) <= len(vector) and all(
                    o in vector and isinstance(h, bytes) and len(h) == 32 for o, h in heads.items())):
                raise SessionProtocolError("have: head hashes come with a full vector, 32 bytes per listed origin")
        return Have(vector, args[1], heads)
    if name == "entries" and len(args) == 2 and isinstance(args[0], list) and isinstance(args[1], bool):
        batch = args[0]
        if not 0 < len(batch) <= MAX_BATCH_ENTRIES or not all(
                isinstance(e, bytes) and len(e) <= MAX_ENTRY_BYTES for e in batch):
            raise SessionProtocolError(f"entries: 1..{MAX_BATCH_ENTRIES} encoded entries expected")
        return Entries(tuple(batch), args[1])
    if name in ("ping", "pong") and len(args) == 1 and _is_int(args[0], 0, _MAX_PING):
        return Ping(args[0]) if name == "ping" else Pong(args[0])
    if name == "bye" and len(args) == 1 and isinstance(args[0], str) and len(args[0]) <= MAX_REASON_CHARS:
        code, _, detail = args[0].partition(": ")
        try:
            return Bye(CloseReason(code), detail)
        except ValueError:  # a reason from a newer version, or free text
            return Bye(CloseReason.BYE, args[0])
    raise SessionProtocolError(f"unknown or malformed frame {name!r}")


def encode_frame(frame: SessionFrame) -> list:
    """The CBOR-ready array for ``frame`` (``parse_frame`` of it gives it back)."""
    if isinstance(frame, Have):
        if frame.heads is not None:
            return ["have", frame.vector, frame.full, frame.heads]
        return ["have", frame.vector, frame.full]
    if isinstance(frame, Entries):
        return ["entries", list(frame.batch), frame.ack]
    if isinstance(frame, Ping):
        return ["ping", frame.n]
    if isinstance(frame, Pong):
        return ["pong", frame.n]
    if isinstance(frame, Bye):
        text = frame.reason.value + (f": {frame.detail}" if frame.detail else "")
        return ["bye", text[:MAX_REASON_CHARS]]
    raise TypeError(f"not a session frame: {frame!r}")
