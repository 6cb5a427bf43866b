"""One replication session with one peer, over a SecureChannel.

Theory of operation
-------------------
Once the channel is established (Noise, then certificates), each side sends ``have``, its
version vector. Each then streams what the other lacks, per origin in seq order, oldest
first, in bounded ``entries`` batches; after that, new entries are pushed as they appear
and ``have`` is re-sent periodically (anti-entropy) so that whatever was missed is repaired
without waiting for the next write. ``ping``/``pong`` detect a silent peer; ``bye`` closes
with a reason. The frames:

    ["have", {origin: seq, ...}, full]   full = the whole vector, else only what changed
    ["have", {...}, true, {origin: hash}]  periodic full haves add each head's entry hash
    ["entries", [entry, ...], ack]       ack = please answer with a have (back-pressure)
    ["ping", n] / ["pong", n]
    ["bye", reason]

What the peer holds (``known``) is learned from its haves, from the entries it sends us and
from the entries we send it (the channel is reliable: a lost message ends the session, and
a new session starts again from a full have). We never send an entry the peer is known to
hold or that came from it. Back-pressure: the bytes of entries sent but not yet confirmed by
a have are bounded by ``WINDOW_BYTES``; when a batch takes the window past half, it asks
for an ack, and the peer answers with a have at once.

Which frame is allowed when is a table (``TRANSITIONS``); anything else is a protocol error
that ends the session with a ``bye`` naming it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from crdt_types import RemoteProtocolError

from ._channel import SecureChannel
from ._entry import MAX_ENTRY_BYTES

__all__ = [
    "SessionState", "Frame", "TRANSITIONS", "Session", "SessionStats", "parse_frame",
    "MAX_BATCH_ENTRIES", "MAX_BATCH_BYTES", "WINDOW_BYTES", "MAX_HAVE_ORIGINS", "SessionProtocolError",
]

# A batch must fit well inside one 1 MiB frame (the channel's limit), and be small enough
# that a LAN till interleaves live pushes with a large catch-up.
MAX_BATCH_ENTRIES = 256
MAX_BATCH_BYTES = 256 * 1024
# Unconfirmed bytes in flight per session: four batches keep a LAN link busy without
# letting a slow anchor link buffer megabytes in the sender.
WINDOW_BYTES = 4 * MAX_BATCH_BYTES
# Origins in one have: every device of a chain, with a wide margin.
MAX_HAVE_ORIGINS = 65_536
MAX_REASON_CHARS = 200


class SessionProtocolError(RemoteProtocolError):
    """The peer sent a frame that is malformed or not allowed in the session's state."""


class SessionState(enum.Enum):
    """Where a replication session stands."""

    HANDSHAKE = "handshake"  # the secure channel is being set up
    GREETING = "greeting"  # established; our have sent, the peer's not yet received
    LIVE = "live"  # both haves seen: catching up, then live push and anti-entropy
    CLOSED = "closed"  # ended by bye, transport loss or a protocol error


class Frame(enum.Enum):
    """Inputs of the session machine."""

    ESTABLISHED = "established"
    HAVE = "have"
    ENTRIES = "entries"
    PING = "ping"
    PONG = "pong"
    BYE = "bye"
    CLOSED = "closed"


TRANSITIONS: dict[SessionState, dict[Frame, SessionState]] = {
    SessionState.HANDSHAKE: {Frame.ESTABLISHED: SessionState.GREETING, Frame.CLOSED: SessionState.CLOSED},
    SessionState.GREETING: {
        Frame.HAVE: SessionState.LIVE,
        Frame.PING: SessionState.GREETING,
        Frame.PONG: SessionState.GREETING,
        Frame.BYE: SessionState.CLOSED,
        Frame.CLOSED: SessionState.CLOSED,
    },
    SessionState.LIVE: {
        Frame.HAVE: SessionState.LIVE,
        Frame.ENTRIES: SessionState.LIVE,
        Frame.PING: SessionState.LIVE,
        Frame.PONG: SessionState.LIVE,
        Frame.BYE: SessionState.CLOSED,
        Frame.CLOSED: SessionState.CLOSED,
    },
    SessionState.CLOSED: {},
}


def _is_int(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def parse_frame(obj: Any) -> tuple[Frame, Any]:
    """Check a received frame's shape; returns (kind, argument).

    Raises:
        SessionProtocolError: not one of the frames above, or a field out of bounds.
    """
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise SessionProtocolError("a frame is an array starting with its name")
    name, args = obj[0], obj[1:]
    if name == "have" and len(args) in (2, 3) and isinstance(args[0], dict) and isinstance(args[1], bool):
        vector = args[0]
        if len(vector) > MAX_HAVE_ORIGINS or not all(
                _is_int(o, 0, 2**20) and _is_int(s, 0, 2**53) for o, s in vector.items()):
            raise SessionProtocolError("have: expected {device number: seq} within bounds")
        if len(args) == 3:
            heads = args[2]
            if not (args[1] and isinstance(heads, dict) and len(heads) <= len(vector) and all(
                    o in vector and isinstance(h, bytes) and len(h) == 32 for o, h in heads.items())):
                raise SessionProtocolError("have: head hashes come with a full vector, 32 bytes per listed origin")
        return Frame.HAVE, (vector, args[1])
    if name == "entries" and len(args) == 2 and isinstance(args[0], list) and isinstance(args[1], bool):
        batch = args[0]
        if not 0 < len(batch) <= MAX_BATCH_ENTRIES or not all(
                isinstance(e, bytes) and len(e) <= MAX_ENTRY_BYTES for e in batch):
            raise SessionProtocolError(f"entries: 1..{MAX_BATCH_ENTRIES} encoded entries expected")
        return Frame.ENTRIES, (batch, args[1])
    if name in ("ping", "pong") and len(args) == 1 and _is_int(args[0], 0, 2**32):
        return (Frame.PING if name == "ping" else Frame.PONG), args[0]
    if name == "bye" and len(args) == 1 and isinstance(args[0], str) and len(args[0]) <= MAX_REASON_CHARS:
        return Frame.BYE, args[0]
    raise SessionProtocolError(f"unknown or malformed frame {name!r}")


@dataclass
class SessionStats:
    """Byte and entry counters of one session."""

    bytes_sent: int = 0
    payload_bytes_sent: int = 0  # encoded entries only
    entries_sent: int = 0
    entries_received: int = 0
    redundant_received: int = 0  # entries we already had
    frames_sent: int = 0

    @property
    def metadata_bytes_sent(self) -> int:
        """Everything that is not entry payload: handshake, frames, haves, pings, AEAD tags."""
        return self.bytes_sent - self.payload_bytes_sent


@dataclass
class Session:
    """The engine's bookkeeping for one peer connection."""

    peer: Any
    channel: SecureChannel
    state: SessionState = SessionState.HANDSHAKE
    number: int | None = None  # the peer's device number, once established
    is_relay: bool = False
    known: dict[int, int] = field(default_factory=dict)  # origin -> seq the peer holds
    told: dict[int, int] = field(default_factory=dict)  # origin -> seq the peer knows we hold
    push_due_ms: int | None = None  # when a delayed push is due (EngineConfig.push_delay_ms)
    next_correction_ms: int = 0  # earliest time for another have correcting the peer's view
    # origin -> {seq: bytes} sent but not yet confirmed; per origin so that a have naming many
    # origins costs time in proportion to what it confirms, not to everything in flight.
    unconfirmed: dict[int, dict[int, int]] = field(default_factory=dict)
    unconfirmed_bytes: int = 0
    next_have_ms: int = 0
    haves_sent: int = 0
    last_heard_ms: int = 0
    ping_sent_ms: int | None = None
    ping_counter: int = 0
    close_reason: str | None = None
    stats: SessionStats = field(default_factory=SessionStats)

    def fire(self, frame: Frame) -> None:
        next_state = TRANSITIONS[self.state].get(frame)
        if next_state is None:
            raise SessionProtocolError(f"{frame.value} is not allowed while {self.state.value}")
        self.state = next_state

    def confirm(self, origin: int, seq: int) -> None:
        """The peer has shown (in a have, or by sending it) that it holds ``origin`` up to ``seq``."""
        if seq > self.known.get(origin, 0):
            self.known[origin] = seq
        pending = self.unconfirmed.get(origin)
        if pending:
            for sent_seq in [s for s in pending if s <= seq]:
                self.unconfirmed_bytes -= pending.pop(sent_seq)
            if not pending:
                del self.unconfirmed[origin]

    def correct(self, vector: dict[int, int]) -> None:
        """A full have is the peer's whole truth: what we sent and it does not list, it did
        not take in (a deferred epoch, a refused entry). Forget those as in flight and
        believe the have, so the window cannot fill with entries that will never be
        confirmed and what it lacks is sent again. An entry still truly in flight may be
        sent twice; the peer takes the second copy as a no-op."""
        for origin, pending in list(self.unconfirmed.items()):
            for sent_seq in [s for s in pending if s > vector.get(origin, 0)]:
                self.unconfirmed_bytes -= pending.pop(sent_seq)
            if not pending:
                del self.unconfirmed[origin]
        for origin in list(self.known):
            if self.known[origin] > vector.get(origin, 0):
                self.known[origin] = vector.get(origin, 0)

    def tell(self, origin: int, seq: int) -> None:
        """The peer now knows we hold ``origin`` up to ``seq``."""
        if seq > self.told.get(origin, 0):
            self.told[origin] = seq

    def sent(self, origin: int, seq: int, size: int) -> None:
        """We sent the peer this entry: it will hold it unless the session breaks."""
        self.known[origin] = max(self.known.get(origin, 0), seq)
        self.tell(origin, seq)
        self.unconfirmed.setdefault(origin, {})[seq] = size
        self.unconfirmed_bytes += size
