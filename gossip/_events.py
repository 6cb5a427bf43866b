"""What the engine hands its driver: frozen nouns, in the manner of h11's ``_events``.

A driver (the trio runtime, the simulator, a test) feeds the engine its five inputs and
then pulls one ``Effects`` with ``Engine.poll()``: bytes to send per peer, connections to
close and why, alerts for the operator, changes applied to the replica, local commits that
became durable, and changes in where this device's own entries are held. ``Status`` is a
snapshot of everything a status page or a simulator's metrics read, so that nothing outside
gossip needs to reach into an engine.

Time comes in as ``Now``: a monotonic reading for timers and the wall clock for HLC stamps
and certificate expiry. The two are separate on purpose: an NTP step of the wall clock must
neither freeze pings and timeouts nor stamp a write into the past.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from crdt_types import InvalidInput

__all__ = [
    "Now", "AlertKind", "Alert", "AppliedChange", "Committed", "CloseReason", "Close",
    "AckLevel", "AckChange", "AckSummary", "Effects", "PeerStatus", "Status",
]


@dataclass(frozen=True, slots=True)
class Now:
    """One reading of both clocks, in milliseconds.

    ``mono_ms`` drives every timer (it never steps); ``wall_ms`` stamps writes and judges
    certificate expiry and clock skew. Inputs also take a plain int, meaning both read the
    same (tests and simulations whose clocks agree).
    """

    mono_ms: int
    wall_ms: int

    def __post_init__(self) -> None:
        mono, wall = self.mono_ms, self.wall_ms
        if type(mono) is int and type(wall) is int and mono >= 0 and wall >= 0:
            return  # every input carries a Now: the common case is checked in one line
        for name in ("mono_ms", "wall_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"{name} must be a non-negative int (milliseconds), got {value!r}")

    @classmethod
    def of(cls, value: "Now | int") -> "Now":
        """``value`` itself, or both clocks at ``value`` for a plain int."""
        if isinstance(value, Now):
            return value
        return cls(value, value)


class AlertKind(enum.Enum):
    """What an alert is about; every replica reports the same kinds for the same data."""

    FORK = "fork"  # an origin signed two entries at one seq; it is quarantined
    FORK_SUSPECTED = "fork_suspected"  # a peer holds another entry at a seq we hold
    UNAUTHORIZED = "unauthorized"  # an op outside its origin's roles or branch was skipped
    FORGED_SLOTS = "forged_slots"  # an op writing another device's slot was skipped
    OVERDRAFT = "overdraft"  # a bounded-counter spend its origin had no rights for was skipped
    CLOCK_SKEW = "clock_skew"  # entries stamped too far ahead wait for our clock
    UNKNOWN_OPS = "unknown_ops"  # an entry with ops this version does not know is held
    RECORD_CONFLICT = "record_conflict"  # two different records under one id
    RIGHTS_REFUSED = "rights_refused"  # a rights answer or request clear could not be written
    ENTRY_REFUSED = "entry_refused"  # an entry its origin should not have written was not taken in
    REVOKED_ENTRIES_DROPPED = "revoked_entries_dropped"  # a cutoff removed entries already held
    PROTOCOL_ERROR = "protocol_error"  # a peer broke the protocol; its session was closed
    TOO_MANY_PEERS = "too_many_peers"  # a connection was refused for want of a slot
    STORAGE_FAILED = "storage_failed"  # a flush failed; its commits were dropped


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should see, with typed evidence.

    ``origin`` is the device it concerns (None when no device is known), ``entry`` the
    (origin, seq) involved, ``key`` the replicated key, ``evidence`` raw signed entries
    (a fork's two versions), ``skew_ms`` how far ahead a stamp was.
    """

    kind: AlertKind
    origin: int | None
    detail: str
    entry: tuple[int, int] | None = None
    key: tuple | None = None
    evidence: tuple[bytes, ...] = ()
    skew_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A member applied entry ``seq`` of ``origin``: these keys changed."""

    origin: int
    seq: int
    keys: tuple[tuple, ...]


@dataclass(frozen=True, slots=True)
class Committed:
    """One entry this device wrote: reported by ``commit`` and, once durable, in Effects."""

    origin: int
    seq: int
    hash: bytes
    keys: tuple[tuple, ...]


class CloseReason(enum.Enum):
    """Why a session ended; sent to the peer in ``bye`` so that a dialer can act on it."""

    BYE = "bye"  # the peer closed in an orderly way, giving no reason we know
    TRANSPORT_CLOSED = "transport_closed"  # the driver reported the end of the stream
    HANDSHAKE_FAILED = "handshake_failed"  # the secure channel failed (auth, timeout, limits)
    PROTOCOL_ERROR = "protocol_error"  # a frame that is malformed or out of place
    GREETING_TIMEOUT = "greeting_timeout"  # no have from the peer in time after the handshake
    PING_TIMEOUT = "ping_timeout"  # the peer went silent
    REVOKED = "revoked"  # one side's device was revoked
    EXPIRED = "expired"  # one side's certificate expired
    REPLACED = "replaced"  # a newer connection from the same device took over
    DUPLICATE = "duplicate"  # two connections between the same devices: the other is kept
    TOO_MANY_PEERS = "too_many_peers"  # no session slot was free
    SELF = "self"  # the connection leads back to this device
    STORAGE = "storage"  # local storage failed; the node starts its sessions afresh
    SHUTDOWN = "shutdown"  # this node is stopping


@dataclass(frozen=True, slots=True)
class Close:
    """Close the transport to ``peer``: why, in words, and whether the peer said so first."""

    peer: Any
    reason: CloseReason
    detail: str = ""
    by_peer: bool = False


class AckLevel(enum.Enum):
    """Where a local entry is known to be held, weakest first."""

    LOCAL = "local"  # on this device's disk only
    LAN = "lan"  # another member device holds it
    ANCHOR = "anchor"  # a relay anchor holds it


@dataclass(frozen=True, slots=True)
class AckChange:
    """This device's entries ``first..last`` are now held at ``level`` (or better)."""

    first: int
    last: int
    level: AckLevel


@dataclass(frozen=True, slots=True)
class AckSummary:
    """How many of this device's entries are held only here, on the LAN, or by an anchor."""

    local: int = 0
    lan: int = 0
    anchor: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"local": self.local, "lan": self.lan, "anchor": self.anchor}


@dataclass(frozen=True, slots=True)
class Effects:
    """Everything the engine wants done, pulled once by the driver (``Engine.poll``).

    ``sends`` maps peer handles to bytes to write; ``flush`` says the store holds appends
    that are not durable yet: flush it, then call ``Engine.flushed``.
    """

    sends: dict[Any, bytes]
    closes: tuple[Close, ...] = ()
    alerts: tuple[Alert, ...] = ()
    applied: tuple[AppliedChange, ...] = ()
    committed: tuple[Committed, ...] = ()
    acks: tuple[AckChange, ...] = ()
    flush: bool = False

    @property
    def empty(self) -> bool:
        return not (self.sends or self.closes or self.alerts or self.applied or self.committed
                    or self.acks or self.flush)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One connection as the engine sees it."""

    handle: Any
    device: int | None  # None until the peer is authenticated
    state: str  # a SessionState value
    is_relay: bool
    initiator: bool
    bytes_sent: int
    payload_bytes_sent: int
    metadata_bytes_sent: int
    entries_sent: int
    entries_received: int
    redundant_received: int
    last_heard_ms: int  # monotonic


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of one engine, for status pages, metrics and simulators."""

    device: int | None
    is_member: bool
    vector: dict[int, int]  # origin -> highest seq stored
    applied: dict[int, int]  # origin -> highest seq applied (members)
    durable_seq: int  # this device's own entries on disk
    digest: bytes | None  # the replica's digest (members)
    acks: AckSummary
    peers: tuple[PeerStatus, ...]
    pending: int  # entries stored but not applied yet
    held_for_skew: dict[int, int]  # origin -> how many of its entries wait for our clock
    held_unknown: tuple[tuple[int, int], ...]  # entries held for ops this version does not know
    quarantined: tuple[int, ...]
    revoked: dict[int, int]  # device -> cutoff
