"""One replication session with one peer: its whole protocol, sans-IO.

Theory of operation
-------------------
A session sits on a ``SecureChannel`` (Noise, then certificates). Once the channel is
established and the engine has accepted the peer, each side sends ``have``, its version
vector, and the session is GREETING until the peer's have arrives; then it is LIVE. Each
side streams what the other lacks, per origin in seq order, oldest first, in bounded
``entries`` batches; afterwards new entries are pushed as they appear and ``have`` is
re-sent periodically (anti-entropy), so whatever was missed is repaired without waiting for
the next write. Every few periodic haves is full and carries the head hashes, which exposes
a fork hidden behind equal seqs. ``ping``/``pong`` detect a silent peer; ``bye`` closes
with a typed reason (``CloseReason``).

Every state has a deadline, so no session can hang: HANDSHAKE the channel's handshake
timeout, GREETING ``greeting_timeout_ms`` (a connection that dies between our have and the
peer's, unnoticed by the transport, would otherwise hold the device's slot for good), LIVE
the ping timeout. ``next_deadline`` gives the earliest; ``tick`` acts on it.

What the peer holds (``known``) is learned from its haves, from the entries it sends us and
from the entries we send it (the channel is reliable: a lost message ends the session, and
a new session starts again from a full have). We never send an entry the peer is known to
hold or that came from it. Back-pressure: the bytes of entries sent but not yet confirmed by
a have are bounded by ``WINDOW_BYTES``; when a batch takes the window past half, it asks
for an ack, and the peer answers with a have at once.

Which frame is allowed when is the table ``TRANSITIONS``; anything else is a protocol error
that ends the session with a ``bye`` naming it. The session does no intake itself: entries
it receives go up to the engine as an ``EntriesArrived`` event, and the engine tells it
what was taken in (``took_in``), which decides the acks and corrections it sends.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

from crdt_types import TillmeshError

from ._channel import ChannelClosed, ChannelEstablished, ChannelState, FrameReceived, SecureChannel
from ._entry import entry_hash
from ._errors import ConnectionLost, SessionProtocolError
from ._events import CloseReason, PeerStatus
from ._frames import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    Bye,
    Entries,
    FrameKind,
    Have,
    Ping,
    Pong,
    SessionFrame,
    encode_frame,
    parse_frame,
)
from ._identity import Certificate
from ._store import FeedStore

__all__ = [
    "SessionState", "TRANSITIONS", "Session", "SessionConfig", "SessionStats", "WINDOW_BYTES",
    "Authenticated", "HaveArrived", "EntriesArrived", "ForkSuspected", "Ended",
]

# Two connections between the same devices opened closer together than this are one
# simultaneous dial; one opened later means the peer dialled again because its end of the
# older one is gone. Dialling takes milliseconds on a LAN and well under this to an anchor.
SIMULTANEOUS_DIAL_MS = 2_000
# Unconfirmed bytes in flight per session: four batches keep a LAN link busy without
# letting a slow anchor link buffer megabytes in the sender.
WINDOW_BYTES = 4 * MAX_BATCH_BYTES


class SessionState(enum.Enum):
    """Where a replication session stands."""

    HANDSHAKE = "handshake"  # the secure channel is being set up
    GREETING = "greeting"  # established; our have sent, the peer's not yet received
    LIVE = "live"  # both haves seen: catching up, then live push and anti-entropy
    CLOSED = "closed"  # ended by bye, transport loss, a timeout or a protocol error


TRANSITIONS: dict[SessionState, dict[FrameKind, SessionState]] = {
    SessionState.HANDSHAKE: {FrameKind.ESTABLISHED: SessionState.GREETING, FrameKind.CLOSED: SessionState.CLOSED},
    SessionState.GREETING: {
        FrameKind.HAVE: SessionState.LIVE,
        FrameKind.PING: SessionState.GREETING,
        FrameKind.PONG: SessionState.GREETING,
        FrameKind.BYE: SessionState.CLOSED,
        FrameKind.CLOSED: SessionState.CLOSED,
    },
    SessionState.LIVE: {
        FrameKind.HAVE: SessionState.LIVE,
        FrameKind.ENTRIES: SessionState.LIVE,
        FrameKind.PING: SessionState.LIVE,
        FrameKind.PONG: SessionState.LIVE,
        FrameKind.BYE: SessionState.CLOSED,
        FrameKind.CLOSED: SessionState.CLOSED,
    },
    SessionState.CLOSED: {},
}


@dataclass(frozen=True)
class SessionConfig:
    """Timers of a session; every value in milliseconds of monotonic time."""

    have_interval_ms: int = 5_000  # anti-entropy: re-send have this often
    full_have_every: int = 6  # every Nth periodic have carries the whole vector and head hashes
    # Ping a quiet peer after this long. A live peer sends a full have every
    # ``have_interval_ms * full_have_every`` (30 s, jittered by a few seconds): pinging only
    # after a longer silence lets those haves be the heartbeat of an idle link.
    ping_interval_ms: int = 40_000
    ping_timeout_ms: int = 60_000  # close a peer silent for this long
    greeting_timeout_ms: int = 10_000  # the peer's first have must come this soon after the handshake
    prompt_acks: bool = True  # answer a peer's own new entries with a have at once (ack state)
    push_delay_ms: int = 0  # coalesce pushes for this long (0: push at once, as a LAN wants)
    have_jitter: bool = True  # spread periodic haves so peers that connected together do not all answer at once


# --- what a session hands the engine ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The channel accepted the peer's certificate; the engine decides whether to keep it."""

    cert: Certificate


@dataclass(frozen=True, slots=True)
class HaveArrived:
    """The peer showed what it holds."""

    vector: dict[int, int]
    full: bool


@dataclass(frozen=True, slots=True)
class EntriesArrived:
    """Entries for intake; answer with ``Session.took_in``."""

    batch: tuple[bytes, ...]
    ack: bool


@dataclass(frozen=True, slots=True)
class ForkSuspected:
    """The peer holds another entry than ours at ``seq`` of ``origin`` (ours was sent to it)."""

    origin: int
    seq: int


@dataclass(frozen=True, slots=True)
class Ended:
    """The session is over (always the last event of a session)."""

    reason: CloseReason
    detail: str
    by_peer: bool
    error: TillmeshError | None = None


SessionEvent = Authenticated | HaveArrived | EntriesArrived | ForkSuspected | Ended


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


class Session:
    """The replication protocol with one peer.

    Args:
        peer: the driver's handle for the connection.
        channel: the secure channel under it (fresh, not yet established).
        config: timers.
        store: the node's FeedStore, read to stream entries and answer haves.
        sendable: origin -> highest seq we may send (our own feed only up to what is durable).
        draw: injected randomness, ``draw(n)`` -> an int in 0..n-1 (have jitter).
        now_ms: monotonic time of the connection.
    """

    def __init__(self, peer: Any, channel: SecureChannel, *, config: SessionConfig, store: FeedStore,
                 sendable: Callable[[], dict[int, int]], draw: Callable[[int], int], now_ms: int) -> None:
        self.peer = peer
        self.channel = channel
        self.config = config
        self._store = store
        self._sendable = sendable
        self._draw = draw
        self.state = SessionState.HANDSHAKE
        self.cert: Certificate | None = None
        self.opened_ms = now_ms
        self.last_heard_ms = now_ms
        self.stats = SessionStats()
        self.known: dict[int, int] = {}  # origin -> seq the peer holds
        self.told: dict[int, int] = {}  # origin -> seq the peer knows we hold
        # origin -> {seq: bytes} sent but not yet confirmed; per origin so that a have naming many
        # origins costs time in proportion to what it confirms, not to everything in flight.
        self.unconfirmed: dict[int, dict[int, int]] = {}
        self.unconfirmed_bytes = 0
        self._greeting_deadline: int | None = None
        self._next_have_ms = 0
        self._haves_sent = 0
        # Whether entries were stored since our last periodic have: if not, the next
        # non-full have would name nothing (everything we hold is told), so its slot is
        # skipped without waking; the full haves keep their times.
        self._untold = False
        self._ping_sent_ms: int | None = None
        self._ping_counter = 0
        self._push_due_ms: int | None = None
        self._next_correction_ms = 0
        self._events: list[SessionEvent] = []
        self._paused = False  # draining waits for the engine (see ``resume``)
        # next_deadline, remembered until the next input: the engine asks after every input
        # for every session (an anchor holds hundreds), and only an input changes it. Every
        # method that takes an input or changes state begins by forgetting it.
        self._due: int | None = None
        self._due_known = False

    # -- observers ----------------------------------------------------------------------------

    @property
    def number(self) -> int | None:
        """The peer's device number, once authenticated."""
        return None if self.cert is None else self.cert.number

    @property
    def is_relay(self) -> bool:
        return self.cert is not None and self.cert.is_relay

    @property
    def live(self) -> bool:
        return self.state is SessionState.LIVE

    def next_deadline(self) -> int | None:
        """The earliest monotonic time at which ``tick`` has something to do."""
        if not self._due_known:
            self._due, self._due_known = self._deadline(), True
        return self._due

    def _deadline(self) -> int | None:
        if self.state is SessionState.HANDSHAKE:
            return self.channel.next_deadline()
        if self.state is SessionState.GREETING:
            return self._greeting_deadline
        if self.state is SessionState.LIVE:
            config = self.config
            due = self._next_have_ms
            if not self._untold:  # the next slot that says something is the next full have
                due += (-(self._haves_sent + 1)) % config.full_have_every * config.have_interval_ms
            heard = self.last_heard_ms
            due = min(due, heard + config.ping_timeout_ms)
            if self._ping_sent_ms is None:
                due = min(due, heard + config.ping_interval_ms)
            if self._push_due_ms is not None and self._push_due_ms < due:
                due = self._push_due_ms
            return due
        return None

    def status(self) -> PeerStatus:
        stats = self.stats
        return PeerStatus(self.peer, self.number, self.state.value, self.is_relay, self.channel.initiator,
                          stats.bytes_sent, stats.payload_bytes_sent, stats.metadata_bytes_sent,
                          stats.entries_sent, stats.entries_received, stats.redundant_received,
                          self.last_heard_ms)

    def sync_state(self, vector: dict[int, int]) -> tuple[int, int]:
        """How far this peer and ``vector`` (what we hold) are apart, as far as this session
        knows what the peer holds (its haves, and what went either way): the entries we hold
        that it is not known to hold, and the entries it has shown that we lack."""
        known = self.known
        they_lack = sum(seq - known.get(origin, 0) for origin, seq in vector.items() if seq > known.get(origin, 0))
        we_lack = sum(seq - vector.get(origin, 0) for origin, seq in known.items() if seq > vector.get(origin, 0))
        return they_lack, we_lack

    # -- inputs -------------------------------------------------------------------------------

    def receive(self, data: bytes, mono_ms: int, wall_ms: int) -> list[SessionEvent]:
        """Bytes from the peer; returns what the engine must act on."""
        self._due_known = False
        if self.state is SessionState.CLOSED:
            return []
        self.last_heard_ms = mono_ms
        self.channel.receive_data(data, mono_ms, wall_ms)
        self._drain(mono_ms)
        return self.events()

    def transport_closed(self, mono_ms: int) -> list[SessionEvent]:
        """The driver saw the end of the stream."""
        self._due_known = False
        if self.state is SessionState.CLOSED:
            return []
        self.channel.receive_data(None, mono_ms)
        self._drain(mono_ms)
        if self.state is not SessionState.CLOSED:  # the channel had already reported its end
            self._end(CloseReason.TRANSPORT_CLOSED, "", by_peer=True)
        return self.events()

    def tick(self, mono_ms: int) -> list[SessionEvent]:
        """Act on every deadline that has passed."""
        self._due_known = False
        if self.state is SessionState.HANDSHAKE:
            self.channel.tick(mono_ms)
            self._drain(mono_ms)
        elif self.state is SessionState.GREETING:
            if self._greeting_deadline is not None and mono_ms >= self._greeting_deadline:
                self.close(CloseReason.GREETING_TIMEOUT, f"no have {self.config.greeting_timeout_ms} ms "
                                                         "after the handshake")
        elif self.state is SessionState.LIVE:
            self._tick_live(mono_ms)
        return self.events()

    def greet(self, mono_ms: int) -> None:
        """The engine keeps this peer: send our whole vector and wait for the peer's."""
        self._due_known = False
        self._greeting_deadline = mono_ms + self.config.greeting_timeout_ms
        self._next_have_ms = mono_ms + self._have_interval()
        self._send_have(full=True)

    def resume(self, mono_ms: int) -> list[SessionEvent]:
        """Go on with the frames received behind the last event handed out.

        Draining pauses after ``Authenticated`` and after ``EntriesArrived``: what the engine
        does with those (greet the peer; take the entries in, which tells us what the peer
        holds) must happen before a later frame in the same bytes is answered, or we would
        answer a have before our own, or send back entries the peer has just sent us.
        """
        self._due_known = False
        self._drain(mono_ms)
        return self.events()

    def push(self, mono_ms: int, sendable: list[tuple[int, int]] | None = None) -> None:
        """New entries are stored: stream them now, or after the configured delay.
        ``sendable``: what may leave, as sorted (origin, seq) pairs, when the caller pushes
        to every session at once (one vector for all of them, not one each)."""
        self._due_known = False
        self.stored(mono_ms)
        if self.state is not SessionState.LIVE:
            return
        if self.config.push_delay_ms <= 0:
            self._stream(sendable)
        elif self._push_due_ms is None:
            self._push_due_ms = mono_ms + self.config.push_delay_ms

    def stored(self, mono_ms: int) -> None:
        """Entries were stored (from anyone) at ``mono_ms``: the next periodic have slot may
        name them (an ack the peer waits for) and stream them (what is not forwarded
        eagerly goes then), so it is kept, not skipped. Slots before now passed empty."""
        self._due_known = False
        if not self._untold and self.state is SessionState.LIVE:
            self._skip_empty_slots(mono_ms)
        self._untold = True

    def send_evidence(self, entries: tuple[bytes, ...]) -> None:
        """Hand the peer a fork's two entries: whichever it holds, the other proves the fork."""
        self._due_known = False
        if self.state is SessionState.LIVE:
            self._send(Entries(entries), payload=sum(map(len, entries)))

    def took_in(self, *, origins: set[int], own_new: bool, refused: bool, ack: bool, mono_ms: int) -> None:
        """What became of an ``EntriesArrived`` batch: the origins of the entries taken in,
        whether any was a new entry of the peer's own feed, whether any was refused."""
        self._due_known = False
        if refused and mono_ms >= self._next_correction_ms:
            # The peer counts what we did not take in as delivered; a full have puts it
            # right (at most once per have interval: what failed now may well fail again).
            self._next_correction_ms = mono_ms + self.config.have_interval_ms
            self._send_have(full=True)
        if ack:
            # Name every feed the batch carried even though the peer knows we hold what it
            # sent: that is the confirmation its back-pressure window waits for.
            self._send_have(full=False, ack_origins=origins)
        elif own_new and self.config.prompt_acks:
            self._send_have(full=False, ack_origins={self.number})

    def received_entry(self, origin: int, seq: int, new: bool) -> None:
        """One entry of a batch was taken in (or was already held)."""
        self._due_known = False
        self.stats.entries_received += 1
        if not new:
            self.stats.redundant_received += 1
        self._confirm(origin, seq)
        self._tell(origin, seq)

    def refused_entry(self) -> None:
        self._due_known = False
        self.stats.entries_received += 1

    def close(self, reason: CloseReason, detail: str = "") -> None:
        """End the session from our side: a ``bye`` with the reason, then CLOSED."""
        self._due_known = False
        if self.state is SessionState.CLOSED:
            return
        if self.channel.state is ChannelState.ESTABLISHED:
            try:
                self.channel.send_frame(encode_frame(Bye(reason, detail)))
            except TillmeshError:
                pass  # the channel died under us: nothing more can reach the peer anyway
        self._end(reason, detail, by_peer=False)

    def data_to_send(self) -> bytes:
        if not self.channel.has_output:
            return b""  # asked of every session at every poll: most have nothing
        data = self.channel.data_to_send()
        self.stats.bytes_sent += len(data)
        return data

    # -- the machine --------------------------------------------------------------------------

    def events(self) -> list[SessionEvent]:
        """Events not yet handed to the engine (after ``close``)."""
        events, self._events = self._events, []
        return events

    def _fire(self, kind: FrameKind) -> None:
        next_state = TRANSITIONS[self.state].get(kind)
        if next_state is None:
            raise SessionProtocolError(f"{kind.value} is not allowed while {self.state.value}")
        self.state = next_state

    def _end(self, reason: CloseReason, detail: str, *, by_peer: bool, error: TillmeshError | None = None) -> None:
        self.state = SessionState.CLOSED
        self._events.append(Ended(reason, detail, by_peer, error))

    def _drain(self, mono_ms: int) -> None:
        channel = self.channel
        self._paused = False
        while not self._paused and self.state is not SessionState.CLOSED and (event := channel.next_event()) is not None:
            try:
                if isinstance(event, ChannelEstablished):
                    self._fire(FrameKind.ESTABLISHED)
                    self.cert = event.peer
                    self._events.append(Authenticated(event.peer))
                    return  # the engine decides, then resumes
                elif isinstance(event, FrameReceived):
                    self._frame(parse_frame(event.obj), mono_ms)
                elif isinstance(event, ChannelClosed):
                    error = event.error
                    if error is None:
                        self._end(CloseReason.TRANSPORT_CLOSED, "", by_peer=True)
                    else:
                        reason = (CloseReason.TRANSPORT_CLOSED if isinstance(error, ConnectionLost)
                                  else CloseReason.HANDSHAKE_FAILED if self.cert is None else CloseReason.PROTOCOL_ERROR)
                        self._end(reason, f"{type(error).__name__}: {error}", by_peer=False, error=error)
            except SessionProtocolError as exc:
                self.close(CloseReason.PROTOCOL_ERROR, str(exc))
                self._events[-1] = Ended(CloseReason.PROTOCOL_ERROR, str(exc), False, exc)

    def _frame(self, frame: SessionFrame, mono_ms: int) -> None:
        self._fire(frame.kind)
        if isinstance(frame, Have):
            for origin, seq in frame.vector.items():
                self._confirm(origin, seq)
            if frame.full:
                self._correct(frame.vector)
            self._events.append(HaveArrived(frame.vector, frame.full))
            if frame.heads:
                self._compare_heads(frame.vector, frame.heads)
            self._stream()
        elif isinstance(frame, Entries):
            self._events.append(EntriesArrived(frame.batch, frame.ack))
            self._paused = True
        elif isinstance(frame, Ping):
            self._send(Pong(frame.n))
        elif isinstance(frame, Pong):
            self._ping_sent_ms = None
        elif isinstance(frame, Bye):
            self._end(frame.reason, frame.detail, by_peer=True)

    def _tick_live(self, mono_ms: int) -> None:
        config = self.config
        if mono_ms - self.last_heard_ms >= config.ping_timeout_ms:
            self.close(CloseReason.PING_TIMEOUT, f"nothing heard for {mono_ms - self.last_heard_ms} ms")
            return
        if mono_ms - self.last_heard_ms >= config.ping_interval_ms and self._ping_sent_ms is None:
            self._ping_counter += 1
            self._ping_sent_ms = mono_ms
            self._send(Ping(self._ping_counter))
        if self._push_due_ms is not None and mono_ms >= self._push_due_ms:
            self._push_due_ms = None
            self._stream()
        if not self._untold:
            self._skip_empty_slots(mono_ms)
        if mono_ms >= self._next_have_ms:
            self._haves_sent += 1
            full = self._haves_sent % config.full_have_every == 0
            self._untold = False
            self._send_have(full=full, with_heads=full)
            self._next_have_ms = mono_ms + self._have_interval()
            self._stream()

    def _skip_empty_slots(self, mono_ms: int) -> None:
        """Periodic have slots up to ``mono_ms`` whose have would have named nothing pass
        without one (``next_deadline`` did not wake us for them), counted as if they had
        been sent, so that the full have keeps its place; the full have is never skipped."""
        config = self.config
        while mono_ms >= self._next_have_ms and (self._haves_sent + 1) % config.full_have_every:
            self._haves_sent += 1
            self._next_have_ms += config.have_interval_ms

    def _have_interval(self) -> int:
        interval = self.config.have_interval_ms
        if not self.config.have_jitter:
            return interval
        # Between half and one and a half intervals, from the injected source: peers that
        # connected together do not all send their haves, and all answer, at the same moment.
        return interval // 2 + self._draw(max(1, interval))

    # -- what the peer holds ------------------------------------------------------------------

    def _confirm(self, origin: int, seq: int) -> None:
        """The peer has shown (in a have, or by sending it) that it holds ``origin`` up to ``seq``."""
        if seq > self.known.get(origin, 0):
            self.known[origin] = seq
        pending = self.unconfirmed.get(origin)
        if pending:
            for sent_seq in [s for s in pending if s <= seq]:
                self.unconfirmed_bytes -= pending.pop(sent_seq)
            if not pending:
                del self.unconfirmed[origin]

    def _correct(self, vector: dict[int, int]) -> None:
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

    def _tell(self, origin: int, seq: int) -> None:
        """The peer now knows we hold ``origin`` up to ``seq``."""
        if seq > self.told.get(origin, 0):
            self.told[origin] = seq

    def _sent(self, origin: int, seq: int, size: int) -> None:
        """We sent the peer this entry: it will hold it unless the session breaks."""
        self.known[origin] = max(self.known.get(origin, 0), seq)
        self._tell(origin, seq)
        self.unconfirmed.setdefault(origin, {})[seq] = size
        self.unconfirmed_bytes += size

    # -- sending ------------------------------------------------------------------------------

    def _send(self, frame: SessionFrame, payload: int = 0) -> None:
        if self.channel.state is not ChannelState.ESTABLISHED:
            return  # the channel closed under this batch of events: its ChannelClosed comes next
        self.channel.send_frame(encode_frame(frame))
        self.stats.frames_sent += 1
        self.stats.payload_bytes_sent += payload

    def _send_have(self, *, full: bool, ack_origins: set[int] = frozenset(), with_heads: bool = False) -> None:
        """Send the whole vector, or only what the peer does not know we hold (nothing: no frame)."""
        vector = self._sendable()
        if not full:
            vector = {o: s for o, s in vector.items() if s > self.told.get(o, 0) or o in ack_origins}
            if not vector:
                return
        for origin, seq in vector.items():
            self._tell(origin, seq)
        heads = None
        if with_heads:
            # Equal seqs can hide a fork (the origin signed two entries at one seq); the head
            # hashes let the peer see it. Quarantined origins are left out: already known.
            quarantined = self._store.quarantined()
            heads = {}
            for origin, seq in vector.items():
                if origin in quarantined or seq == 0:
                    continue
                head = self._store.head(origin)
                heads[origin] = head.hash if head is not None and head.seq == seq \
                    else entry_hash(self._store.get(origin, seq))
        self._send(Have(vector, full, heads))

    def _compare_heads(self, vector: dict[int, int], heads: dict[int, bytes]) -> None:
        """Where the peer's entry at a seq we hold has another hash, the origin forked: send
        the peer our entry, whose intake gives it both signed entries as evidence (and it
        does the same for us at its next full have)."""
        store = self._store
        quarantined = store.quarantined()
        for origin, claimed in heads.items():
            if origin in quarantined:
                continue
            seq = vector[origin]
            head = store.head(origin)
            if head is not None and head.seq == seq and head.hash == claimed:
                continue  # the usual case, a peer level with us: no entry to read and hash
            ours = store.get(origin, seq)
            if ours is None or entry_hash(ours) == claimed:
                continue
            self._events.append(ForkSuspected(origin, vector[origin]))
            self._send(Entries((ours,)), payload=len(ours))

    def _stream(self, sendable: list[tuple[int, int]] | None = None) -> None:
        """Send the peer what it lacks, oldest first per origin, within the window.
        ``sendable``: what may leave as sorted (origin, seq) pairs, if the caller has it."""
        if self.state is not SessionState.LIVE:
            return
        batch: list[bytes] = []
        size = 0
        for origin, top in sorted(self._sendable().items()) if sendable is None else sendable:
            if origin == self.number:
                continue  # it came from the peer: it has it
            start = self.known.get(origin, 0) + 1
            while start <= top:
                if self.unconfirmed_bytes + size >= WINDOW_BYTES:
                    break
                chunk = self._store.read(origin, start, top, limit=MAX_BATCH_ENTRIES)
                if not chunk:
                    break
                for data in chunk:
                    if len(batch) >= MAX_BATCH_ENTRIES or size + len(data) > MAX_BATCH_BYTES:
                        self._flush_batch(batch, size)
                        batch, size = [], 0
                        if self.unconfirmed_bytes >= WINDOW_BYTES:
                            break
                    batch.append(data)
                    size += len(data)
                    self._sent(origin, start, len(data))
                    start += 1
                else:
                    continue
                break
        if batch:
            self._flush_batch(batch, size)

    def _flush_batch(self, batch: list[bytes], size: int) -> None:
        ask = self.unconfirmed_bytes >= WINDOW_BYTES // 2
        self._send(Entries(tuple(batch), ask), payload=size)
        self.stats.entries_sent += len(batch)

    def __repr__(self) -> str:
        return f"Session(peer={self.peer!r}, device={self.number}, {self.state.value})"


def duplicate_loser(old: Session, new: Session, me: int, now_ms: int) -> tuple[Session, CloseReason]:
    """Two authenticated sessions with one device: which one goes, and why.

    Dialled the same way, or the old one opened more than ``SIMULTANEOUS_DIAL_MS`` before,
    the new one wins: the peer dialled again, so the old connection is stale (half-open, its
    end gone without a word; the peer restarted). Dialled both ways at once, both devices keep
    the connection the lower-numbered device initiated, and agree on it without a word.
    """
    if old.channel.initiator == new.channel.initiator or new.opened_ms - old.opened_ms > SIMULTANEOUS_DIAL_MS:
        return old, CloseReason.REPLACED

    def dialler(session: Session) -> int:
        return me if session.channel.initiator else session.number

    return (new if dialler(old) < dialler(new) else old), CloseReason.DUPLICATE
