"""The per-node replication engine, sans-IO.

Theory of operation
-------------------
One ``Engine`` per node. The driver (trio runtime in node/, the simulator, a test) owns the
connections and the clock; the engine owns everything else. Inputs:

    connected(peer, initiator, now)   a transport to ``peer`` (any hashable handle) is up
    received(peer, data, now)         bytes arrived from it
    disconnected(peer, now)           it is gone
    tick(now)                         time passed (call at ``next_deadline()`` at the latest)
    commit(build, now)                members only: a local transaction

Outputs are pulled: ``data_to_send(peer)``, ``peers_to_close()``, ``alerts()``,
``applied()``, ``next_deadline()``.

Entries are verified and stored by ``Feeds`` before anything else happens (a relay stops
there: it verifies, stores and forwards, and never sees plaintext). A member then applies
them to its ``Replica`` in causal order: an entry waits until its origin's earlier entries
and everything in its ``deps`` are applied. Waiting costs no memory beyond a bounded cache
of opened groups, because the entries are already in the store; after a restart the engine
replays the store the same way, so the replica is rebuilt from what is durable.

At apply time each op is authorized against the origin's certificate: the injected
``Policy`` (roles and branches) and the structural rule that a delta writes only its
origin's own slots. A refused op is skipped, identically on every member, and reported;
the rest of the group applies all-or-nothing.

Escrow rights move to where they are needed. A member that cannot charge a balance for
lack of rights records a request, the register ``("rights", member_id, device)`` holding
the amount it wants. Any member that sees an open request and holds rights on that balance
answers with a ``transfer`` of what it can spare (at most the amount asked). Rights are only
ever moved, never created; the requester clears its request once it holds enough.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from crdt_types import (
    HLC,
    MAX_AMOUNT,
    BoundedCounter,
    DeltaGroup,
    InvalidInput,
    Replica,
    TillmeshError,
)

from ._channel import ChannelClosed, ChannelEstablished, ChannelState, FrameReceived, SecureChannel
from ._entry import Entry, entry_hash
from ._errors import (
    CertificateError,
    ChainBroken,
    DecryptionError,
    EpochUnavailable,
    ForkDetected,
    Quarantined,
    SeqGap,
    UnknownOrigin,
    UnreadableEntry,
)
from ._feeds import Feeds
from ._identity import AUTHORITY_NUMBER
from ._keyring import Keyring
from ._policy import ALLOW_ALL, Policy, income_is_known, writes_only_own_slots
from ._session import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    WINDOW_BYTES,
    Frame,
    Session,
    SessionProtocolError,
    SessionState,
    parse_frame,
)
from ._store import FeedStore

__all__ = [
    "Engine", "EngineConfig", "Alert", "AppliedChange", "AckState", "Unauthorized",
    "MAX_PEERS", "MAX_OPENED_CACHE", "MAX_OPENED_CACHE_BYTES",
]

# Concurrent sessions: a shop has tens of devices; an anchor serves a few branches.
MAX_PEERS = 256
# Opened (decrypted) groups kept while they wait for their causal predecessors; beyond
# this they are dropped and re-opened from the store when their turn comes.
MAX_OPENED_CACHE = 10_000
# ... and at most this many bytes of them, counted as encoded entries (a decoded group
# takes several times its wire size in memory).
MAX_OPENED_CACHE_BYTES = 8 * 1024 * 1024


class Unauthorized(InvalidInput):
    """A local write that this device's roles or branch do not allow; nothing changed."""


@dataclass(frozen=True)
class EngineConfig:
    """Timers of the engine; every value in milliseconds."""

    have_interval_ms: int = 5_000  # anti-entropy: re-send have this often
    full_have_every: int = 6  # every Nth periodic have carries the whole vector
    ping_interval_ms: int = 15_000  # ping a quiet peer after this long
    ping_timeout_ms: int = 45_000  # close a peer silent for this long
    # Push other devices' entries on arrival, not only in answer to a have. None: relays do
    # (they are the hubs between branches), members do not (on a LAN every device hears the
    # origin itself, and forwarding there mostly sends duplicates).
    forward_eagerly: bool | None = None
    prompt_acks: bool = True  # answer a peer's own new entries with a have at once (ack state)
    push_delay_ms: int = 0  # coalesce pushes for this long (0: push at once, as a LAN wants)
    have_jitter: bool = True  # spread periodic haves over the interval so peers do not all answer at once


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should see: kind, the device it concerns, details."""

    kind: str  # fork, unauthorized, clock_skew, protocol_error, record_conflict, rights_refused, …
    origin: int | None
    detail: str
    evidence: tuple = ()


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A member applied entry ``seq`` of ``origin``: these keys changed."""

    origin: int
    seq: int
    keys: tuple[tuple, ...]


@dataclass(frozen=True, slots=True)
class AckState:
    """Who is known to hold one local entry."""

    seq: int
    lan: frozenset[int]  # member devices that hold it
    anchors: frozenset[int]  # relays that hold it

    @property
    def level(self) -> str:
        """"anchor" when a relay holds it, else "lan" when a peer does, else "local"."""
        return "anchor" if self.anchors else "lan" if self.lan else "local"


class Engine:
    """Replication engine of one node.

    Args:
        keyring: this node's keyring (a relay's holds no data key).
        store: its FeedStore; entries in it are replayed into the replica at start.
        random_bytes: injected randomness (nonces, ephemeral keys).
        now_ms: the time of construction.
        policy: authorization table (node/ injects the POS one); allow-all by default.
        config: timers.
        hlc: the clock restored from storage, if any.
    """

    def __init__(self, keyring: Keyring, store: FeedStore, *, random_bytes: Callable[[int], bytes],
                 now_ms: int, policy: Policy = ALLOW_ALL, config: EngineConfig = EngineConfig(),
                 hlc: HLC | None = None) -> None:
        self.keyring = keyring
        self.store = store
        self.feeds = Feeds(keyring, store)
        self.policy = policy
        self.config = config
        self._random = random_bytes
        self.clock = hlc or HLC()
        self.number = keyring.number
        self.is_member = keyring.is_member and not (keyring.certificate and keyring.certificate.is_relay)
        self.replica: Replica | None = Replica(keyring.number) if self.is_member else None
        eager = config.forward_eagerly
        self._forward_eagerly = (not self.is_member) if eager is None else eager
        self._sessions: dict[Any, Session] = {}
        self._to_close: list[Any] = []
        self._alerts: list[Alert] = []
        self._applied_out: list[AppliedChange] = []
        self._applied: dict[int, int] = {}  # origin -> highest seq applied to the replica
        self._opened: dict[tuple[int, int], tuple[DeltaGroup, int]] = {}  # -> (group, entry bytes)
        self._opened_bytes = 0
        self._touched: dict[tuple, dict[int, int]] = {}  # bounded-counter key -> origin -> seq
        self._peer_holds: dict[int, dict[int, int]] = {}  # device -> origin -> seq it holds
        self._relays: set[int] = set()
        self._rights_dirty = False
        self._answering = False
        self._applying = False
        self._now = now_ms
        self._replaying = True  # a restart replays the store; it must not write anything
        self._apply_ready(now_ms)
        self._replaying = False

    # -- inputs ---------------------------------------------------------------------------

    def connected(self, peer: Any, initiator: bool, now_ms: int) -> None:
        """A transport to ``peer`` is up; the initiator speaks first."""
        self._now = now_ms
        if peer in self._sessions:
            raise InvalidInput(f"peer {peer!r} is already connected")
        if len(self._sessions) >= MAX_PEERS:
            self._to_close.append(peer)
            self._alert("too_many_peers", None, f"refused {peer!r}: already {MAX_PEERS} sessions")
            return
        channel = SecureChannel(self.keyring, initiator=initiator, random_bytes=self._random, now_ms=now_ms)
        self._sessions[peer] = Session(peer, channel, last_heard_ms=now_ms)

    def received(self, peer: Any, data: bytes | None, now_ms: int) -> None:
        """Bytes from ``peer`` (None: its transport closed)."""
        self._now = now_ms
        session = self._sessions.get(peer)
        if session is None or session.state is SessionState.CLOSED:
            return
        session.last_heard_ms = now_ms
        session.channel.receive_data(data, now_ms)
        self._drain_channel(session, now_ms)

    def disconnected(self, peer: Any, now_ms: int) -> None:
        """``peer``'s transport is gone; forget the session (what it holds is remembered)."""
        self._now = now_ms
        session = self._sessions.pop(peer, None)
        if session is not None and session.state is not SessionState.CLOSED:
            session.state = SessionState.CLOSED

    def tick(self, now_ms: int) -> None:
        """Let time pass: timeouts, pings, periodic haves, rights requests seen at replay."""
        self._now = now_ms
        self._rights_work(now_ms)
        for session in list(self._sessions.values()):
            if session.state is SessionState.CLOSED:
                continue
            session.channel.tick(now_ms)
            self._drain_channel(session, now_ms)
            if session.state is not SessionState.LIVE:
                continue
            if now_ms - session.last_heard_ms >= self.config.ping_timeout_ms:
                self._close(session, "ping timeout", protocol_error=False)
                continue
            if now_ms - session.last_heard_ms >= self.config.ping_interval_ms and session.ping_sent_ms is None:
                session.ping_counter += 1
                session.ping_sent_ms = now_ms
                self._send(session, ["ping", session.ping_counter])
            if session.push_due_ms is not None and now_ms >= session.push_due_ms:
                session.push_due_ms = None
                self._stream(session)
            if now_ms >= session.next_have_ms:
                session.haves_sent += 1
                full = session.haves_sent % self.config.full_have_every == 0
                self._send_have(session, full=full, with_heads=full)
                session.next_have_ms = now_ms + self._have_interval()
                self._stream(session)

    def commit(self, build: Callable[[Any], None], now_ms: int) -> DeltaGroup:
        """Run a local transaction: stamp, seal, sign, append durably, apply, push.

        Args:
            build: called with the transaction (``tx.add``, ``tx.set``, ``tx.decrement`` …).
        Returns:
            The applied delta group.
        Raises:
            InvalidInput: not a member, or a bad op (nothing changed).
            Unauthorized: an op this device's certificate does not allow (nothing changed).
            InsufficientRights: a decrement or transfer beyond local rights (nothing changed).
        """
        self._now = now_ms
        if self.replica is None:
            raise InvalidInput("this node is a relay: it holds no data key and cannot commit")
        stamp = self.clock.now(now_ms)
        with self.replica.transaction(stamp, apply=False) as tx:
            build(tx)
        group = tx.delta
        try:
            cert = self.keyring.certificate
            for key, _ in group.ops:
                if not self.policy.allows(cert, key):
                    raise Unauthorized(f"device {self.number} ({', '.join(cert.roles)}, branch {cert.branch}) "
                                       f"may not write {key!r}")
            deps: dict[int, int] = {}
            for key, delta in group.ops:
                if isinstance(delta, BoundedCounter):
                    for origin, seq in self._touched.get(key, {}).items():
                        deps[origin] = max(deps.get(origin, 0), seq)
            entry = self.feeds.append_local(group, deps=deps, random_bytes=self._random, now_ms=now_ms)
        finally:
            # Durable (or refused): from here the group is applied like any stored entry.
            self.replica.discard(group)
        self._cache_group(entry.origin, entry.seq, group, len(entry.encode()))
        self._apply_ready(now_ms)
        self._push_all()
        return group

    def request_rights(self, member_id: str, amount: int, now_ms: int) -> None:
        """Ask the other members for ``amount`` rights on ``("member", member_id, "balance")``."""
        self.commit(lambda tx: tx.set(("rights", member_id, self.number), amount), now_ms)

    # -- outputs --------------------------------------------------------------------------

    def data_to_send(self, peer: Any) -> bytes:
        session = self._sessions.get(peer)
        if session is None:
            return b""
        data = session.channel.data_to_send()
        session.stats.bytes_sent += len(data)
        return data

    def peers(self) -> list[Any]:
        return list(self._sessions)

    def peers_to_close(self) -> list[Any]:
        out, self._to_close = self._to_close, []
        return out

    def alerts(self) -> list[Alert]:
        out, self._alerts = self._alerts, []
        return out

    def applied(self) -> list[AppliedChange]:
        out, self._applied_out = self._applied_out, []
        return out

    def next_deadline(self) -> int | None:
        deadlines = []
        for session in self._sessions.values():
            if session.state is SessionState.CLOSED:
                continue
            channel_deadline = session.channel.next_deadline()
            if channel_deadline is not None:
                deadlines.append(channel_deadline)
            if session.state is SessionState.LIVE:
                deadlines.append(session.next_have_ms)
                if session.push_due_ms is not None:
                    deadlines.append(session.push_due_ms)
                if session.ping_sent_ms is None:
                    deadlines.append(session.last_heard_ms + self.config.ping_interval_ms)
                deadlines.append(session.last_heard_ms + self.config.ping_timeout_ms)
        return min(deadlines) if deadlines else None

    def session(self, peer: Any) -> Session | None:
        return self._sessions.get(peer)

    def live_peers(self) -> dict[Any, int]:
        """peer handle -> device number of every live session."""
        return {p: s.number for p, s in self._sessions.items() if s.state is SessionState.LIVE}

    def version_vector(self) -> dict[int, int]:
        return self.store.version_vector()

    def applied_vector(self) -> dict[int, int]:
        return dict(self._applied)

    def ack(self, seq: int) -> AckState:
        """Who is known to hold this node's entry ``seq``."""
        holders = {n for n, vv in self._peer_holds.items() if vv.get(self.number, 0) >= seq and n != self.number}
        return AckState(seq, frozenset(holders - self._relays), frozenset(holders & self._relays))

    def ack_summary(self) -> dict[str, int]:
        """How many local entries are held only here, on the LAN, or by an anchor."""
        head = self.store.head(self.number) if self.number is not None else None
        counts = {"local": 0, "lan": 0, "anchor": 0}
        top = head.seq if head else 0
        anchor_seq = max((vv.get(self.number, 0) for n, vv in self._peer_holds.items() if n in self._relays), default=0)
        lan_seq = max((vv.get(self.number, 0) for n, vv in self._peer_holds.items()
                       if n not in self._relays and n != self.number), default=0)
        anchor_seq, lan_seq = min(anchor_seq, top), min(lan_seq, top)
        counts["anchor"] = anchor_seq
        counts["lan"] = max(0, lan_seq - anchor_seq)
        counts["local"] = top - max(anchor_seq, lan_seq)
        return counts

    # -- sessions -------------------------------------------------------------------------

    def _drain_channel(self, session: Session, now_ms: int) -> None:
        channel = session.channel
        while session.state is not SessionState.CLOSED and (event := channel.next_event()) is not None:
            try:
                if isinstance(event, ChannelEstablished):
                    self._established(session, event, now_ms)
                elif isinstance(event, FrameReceived):
                    self._frame(session, event.obj, now_ms)
                elif isinstance(event, ChannelClosed):
                    session.fire(Frame.CLOSED)
                    if event.error is not None:
                        self._alert("protocol_error", session.number, f"{type(event.error).__name__}: {event.error}")
                    self._to_close.append(session.peer)
            except SessionProtocolError as exc:
                self._alert("protocol_error", session.number, str(exc))
                self._close(session, str(exc), protocol_error=True)

    def _established(self, session: Session, event: ChannelEstablished, now_ms: int) -> None:
        session.fire(Frame.ESTABLISHED)
        cert = event.peer
        if cert.number == self.number:
            raise SessionProtocolError("connected to itself")
        if any(s.number == cert.number and s.state is not SessionState.CLOSED
               for s in self._sessions.values() if s is not session):
            raise SessionProtocolError(f"device {cert.number} is already connected")
        session.number = cert.number
        session.is_relay = cert.is_relay
        if cert.is_relay:
            self._relays.add(cert.number)
        session.next_have_ms = now_ms + self._have_interval()
        self._send_have(session, full=True)

    def _frame(self, session: Session, obj: Any, now_ms: int) -> None:
        kind, arg = parse_frame(obj)
        session.fire(kind)
        if kind is Frame.HAVE:
            vector, full = arg
            holds = self._peer_holds.setdefault(session.number, {})
            for origin, seq in vector.items():
                session.confirm(origin, seq)
                if seq > holds.get(origin, 0):
                    holds[origin] = seq
            if full:
                session.correct(vector)
            if len(obj) == 4:
                self._compare_heads(session, vector, obj[3])
            self._stream(session)
        elif kind is Frame.ENTRIES:
            batch, ack = arg
            own, origins = self._entries(session, batch, now_ms)
            if ack:
                # Name every feed the batch carried even though the peer knows we hold what
                # it sent: that is the confirmation its back-pressure window waits for.
                self._send_have(session, full=False, ack_origins=origins)
            elif own and self.config.prompt_acks:
                self._send_have(session, full=False, ack_origins={session.number})
        elif kind is Frame.PING:
            self._send(session, ["pong", arg])
        elif kind is Frame.PONG:
            session.ping_sent_ms = None
        elif kind is Frame.BYE:
            session.close_reason = arg
            self._to_close.append(session.peer)

    def _entries(self, session: Session, batch: list[bytes], now_ms: int) -> tuple[bool, set[int]]:
        """Take in a batch; returns whether it held new entries of the peer's own feed, and
        the origins of the entries taken in."""
        fresh = own = refused = False
        origins: set[int] = set()
        holds = self._peer_holds.setdefault(session.number, {})
        for data in batch:
            session.stats.entries_received += 1
            try:
                result = self.feeds.ingest(data, now_ms)
            except ForkDetected as exc:
                self._alert("fork", exc.origin, str(exc), exc.evidence)
                # Hand the evidence to every peer: whichever entry it holds, the other one
                # proves the fork to it too, and it quarantines the origin as well.
                for other in self._sessions.values():
                    if other.state is SessionState.LIVE:
                        self._send(other, ["entries", list(exc.evidence), False], payload=sum(map(len, exc.evidence)))
                continue
            except (EpochUnavailable, SeqGap, UnknownOrigin) as exc:
                # Not this peer's fault: the certificate, epoch grant or predecessors come later.
                self._alert("entry_deferred", None, str(exc))
                refused = True
                continue
            except (CertificateError, UnreadableEntry, DecryptionError, Quarantined) as exc:
                # Revoked past its cutoff, expired, unreadable inside, or from a forked
                # origin: the origin's doing (or news the peer had not heard yet), not the
                # forwarding peer's, so no reason to drop the session.
                self._alert("entry_refused", None, str(exc))
                refused = True
                continue
            except ChainBroken as exc:
                # The origin signed an entry that chains to a predecessor we do not hold:
                # it has two histories, and the peer merely holds the other one.
                self._alert("fork_suspected", None, str(exc))
                refused = True
                continue
            except TillmeshError as exc:
                raise SessionProtocolError(f"entry refused: {type(exc).__name__}: {exc}") from None
            entry = result.entry
            origins.add(entry.origin)
            session.confirm(entry.origin, entry.seq)
            session.tell(entry.origin, entry.seq)
            if entry.seq > holds.get(entry.origin, 0):
                holds[entry.origin] = entry.seq
            if not result.new:
                session.stats.redundant_received += 1
                continue
            fresh = True
            own = own or entry.origin == session.number
            if result.group is not None:
                self._cache_group(entry.origin, entry.seq, result.group, len(data))
        if refused and now_ms >= session.next_correction_ms:
            # The peer counts what we did not take in as delivered; a full have puts it
            # right (at most once per have interval: what failed now may well fail again).
            session.next_correction_ms = now_ms + self.config.have_interval_ms
            self._send_have(session, full=True)
        if fresh:
            self._apply_ready(now_ms)
            if self._forward_eagerly:
                self._push_all()
        return own, origins

    def _send(self, session: Session, frame: list, payload: int = 0) -> None:
        if session.channel.state is ChannelState.CLOSED:
            return  # the channel closed under this batch of events: its ChannelClosed comes next
        session.channel.send_frame(frame)
        session.stats.frames_sent += 1
        session.stats.payload_bytes_sent += payload

    def _compare_heads(self, session: Session, vector: dict[int, int], heads: dict[int, bytes]) -> None:
        """Where the peer's entry at a seq we hold has another hash, the origin forked: send
        the peer our entry, whose ingest gives it both signed entries as evidence (and it
        does the same for us at its next full have)."""
        quarantined = self.store.quarantined()
        for origin, claimed in heads.items():
            if origin in quarantined:
                continue
            ours = self.store.get(origin, vector[origin])
            if ours is None or entry_hash(ours) == claimed:
                continue
            self._alert("fork_suspected", origin, f"device {origin}: the peer holds another entry at seq {vector[origin]}")
            self._send(session, ["entries", [ours], False], payload=len(ours))

    def _send_have(self, session: Session, *, full: bool, ack_origins: set[int] = frozenset(),
                   with_heads: bool = False) -> None:
        """Send the whole vector, or only what the peer does not know we hold (nothing: no frame)."""
        vector = self.store.version_vector()
        if not full:
            vector = {o: s for o, s in vector.items() if s > session.told.get(o, 0) or o in ack_origins}
            if not vector:
                return
        for origin, seq in vector.items():
            session.tell(origin, seq)
        if with_heads:
            # Equal seqs can hide a fork (the origin signed two entries at one seq); the head
            # hashes let the peer see it. Quarantined origins are left out: already known.
            quarantined = self.store.quarantined()
            heads = {o: h.hash for o, h in self.store.heads().items() if o not in quarantined}
            self._send(session, ["have", vector, full, heads])
        else:
            self._send(session, ["have", vector, full])

    def _have_interval(self) -> int:
        interval = self.config.have_interval_ms
        if not self.config.have_jitter:
            return interval
        # Between half and one and a half intervals, from the injected source: peers that
        # connected together do not all send their haves, and all answer, at the same moment.
        return interval // 2 + int.from_bytes(self._random(4), "big") % max(1, interval)

    def _push_all(self) -> None:
        delay = self.config.push_delay_ms
        for session in self._sessions.values():
            if session.state is not SessionState.LIVE:
                continue
            if delay <= 0:
                self._stream(session)
            elif session.push_due_ms is None:
                session.push_due_ms = self._now + delay

    def _stream(self, session: Session) -> None:
        """Send the peer what it lacks, oldest first per origin, within the window."""
        if session.state is not SessionState.LIVE:
            return
        heads = self.store.heads()
        batch: list[bytes] = []
        size = 0
        for origin in sorted(heads):
            if origin == session.number:
                continue  # it came from the peer: it has it
            start = session.known.get(origin, 0) + 1
            while start <= heads[origin].seq:
                if session.unconfirmed_bytes + size >= WINDOW_BYTES:
                    break
                chunk = self.store.read(origin, start, heads[origin].seq, limit=MAX_BATCH_ENTRIES)
                for data in chunk:
                    if len(batch) >= MAX_BATCH_ENTRIES or size + len(data) > MAX_BATCH_BYTES:
                        self._flush(session, batch, size)
                        batch, size = [], 0
                        if session.unconfirmed_bytes >= WINDOW_BYTES:
                            break
                    batch.append(data)
                    size += len(data)
                    session.sent(origin, start, len(data))
                    start += 1
                else:
                    continue
                break
        if batch:
            self._flush(session, batch, size)

    def _flush(self, session: Session, batch: list[bytes], size: int) -> None:
        ask = session.unconfirmed_bytes >= WINDOW_BYTES // 2
        if session.channel.state is ChannelState.CLOSED:
            return
        self._send(session, ["entries", batch, ask], payload=size)
        session.stats.entries_sent += len(batch)

    def _close(self, session: Session, reason: str, *, protocol_error: bool) -> None:
        if session.state is SessionState.CLOSED:
            return
        try:
            session.channel.send_frame(["bye", reason[:200]])
        except TillmeshError:
            pass
        session.state = SessionState.CLOSED
        session.close_reason = reason
        self._to_close.append(session.peer)

    def _alert(self, kind: str, origin: int | None, detail: str, evidence: tuple = ()) -> None:
        self._alerts.append(Alert(kind, origin, detail, evidence))

    # -- applying -------------------------------------------------------------------------

    def _apply_ready(self, now_ms: int) -> None:
        """Apply, in causal order, every stored entry whose predecessors are applied.

        Answering rights requests commits new entries, which lands back here; the flag
        keeps that to one loop, run again until nothing more is ready.
        """
        if self._applying:
            return
        self._applying = True
        try:
            while True:
                progress = False
                for origin, head in self.store.heads().items():
                    while self._applied.get(origin, 0) < head.seq:
                        seq = self._applied.get(origin, 0) + 1
                        ready, group = self._ready(origin, seq)
                        if not ready:
                            break
                        self._applied[origin] = seq
                        if group is not None:
                            self._merge(origin, seq, group, now_ms)
                        progress = True
                if not progress:
                    break
        finally:
            self._applying = False
        self._rights_work(now_ms)

    def _rights_work(self, now_ms: int) -> None:
        # A loop, not recursion: each answer commits, and a commit lands back here. Each
        # round answers every open shortfall once, so the loop ends when nothing is left.
        if self._answering or self.replica is None or self._replaying:
            return
        self._answering = True
        try:
            while self._rights_dirty:
                self._rights_dirty = False
                self._answer_requests(now_ms)
                self._clear_own_requests(now_ms)
        finally:
            self._answering = False

    def _cache_group(self, origin: int, seq: int, group: DeltaGroup, size: int) -> None:
        """Keep an opened group for its turn, within both cache bounds; else it is re-opened."""
        if len(self._opened) < MAX_OPENED_CACHE and self._opened_bytes + size <= MAX_OPENED_CACHE_BYTES:
            self._opened[(origin, seq)] = (group, size)
            self._opened_bytes += size

    def _ready(self, origin: int, seq: int) -> tuple[bool, DeltaGroup | None]:
        """Whether entry ``seq`` of ``origin`` can be applied now, and its opened group."""
        group, size = self._opened.pop((origin, seq), (None, 0))
        self._opened_bytes -= size
        if origin == AUTHORITY_NUMBER or self.replica is None:
            return True, None  # control records are applied to the keyring on ingest
        entry = Entry.decode(self.store.get(origin, seq))
        if any(self._applied.get(o, 0) < s for o, s in entry.deps):
            if group is not None:
                self._cache_group(origin, seq, group, size)
            return False, None
        if group is None:
            try:
                group = self.feeds.open(entry)
            except EpochUnavailable:
                return False, None
        return True, group

    def _merge(self, origin: int, seq: int, group: DeltaGroup, now_ms: int) -> None:
        replica = self.replica
        cert = self.keyring.certificates.get(origin)
        allowed = []
        for key, delta in group.ops:
            if cert is None or not self.policy.allows(cert, key):
                roles = ", ".join(cert.roles) if cert else "no certificate"
                self._alert("unauthorized", origin, f"entry {origin}/{seq}: {roles} may not write {key!r}; skipped")
                continue
            if not writes_only_own_slots(delta, origin) or (key[0] == "rights" and key[2] != origin):
                self._alert("unauthorized", origin, f"entry {origin}/{seq}: forged slots for {key!r}; skipped")
                continue
            if isinstance(delta, BoundedCounter) and not self._spends_within_rights(key, delta, origin):
                self._alert("unauthorized", origin, f"entry {origin}/{seq}: spends rights it does not hold "
                                                    f"on {key!r}; skipped")
                continue
            allowed.append((key, delta))
        skew = self.clock.observe(group.hlc, now_ms)
        if skew is not None:
            self._alert("clock_skew", origin, f"entry {origin}/{seq} is stamped {skew.skew_ms} ms ahead; not adopted")
        if allowed:
            result = replica.merge(DeltaGroup(group.hlc, origin, tuple(allowed)))
            for key in result.conflicts:
                self._alert("record_conflict", origin, f"two different records under {key!r}")
        for key, delta in allowed:
            if isinstance(delta, BoundedCounter):
                self._touched.setdefault(key, {})[origin] = seq
        keys = tuple(key for key, _ in allowed)
        self._applied_out.append(AppliedChange(origin, seq, keys))
        if any(k[0] in ("rights", "member") for k in keys):
            self._rights_dirty = True

    def _spends_within_rights(self, key: tuple, delta: BoundedCounter, origin: int) -> bool:
        """An honest writer's delta, applied in causal order, cites only income we hold and
        leaves the writer's rights at zero or more; anything else is made up."""
        state = self.replica.state(key)
        if not income_is_known(delta, state, origin):
            return False
        state.merge(delta)
        return state.rights(origin) >= 0

    # -- escrow rights --------------------------------------------------------------------

    def open_requests(self) -> list[tuple[tuple, int]]:
        """Outstanding rights requests: (request key, amount)."""
        replica = self.replica
        if replica is None:
            return []
        requests = []
        for key in replica.keys("rights"):
            amount = replica.value(key)
            if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0:
                requests.append((key, amount))
        return requests

    def _answer_requests(self, now_ms: int) -> None:
        replica = self.replica
        requests = self.open_requests()
        # A member that is itself short on a balance gives none of it away: two members
        # asking for the same balance would otherwise pass the rights back and forth forever.
        wanting = {key[1] for key, _ in requests if key[2] == self.number}
        for key, amount in requests:
            _, member_id, device = key
            if device == self.number or member_id in wanting:
                continue
            balance = ("member", member_id, "balance")
            counter = replica.state(balance)
            # What the requester still lacks, as this replica sees it: our own transfers
            # are applied here at once, so we never answer the same shortfall twice, and
            # the rule needs no memory beyond the replicated state (a restart changes nothing).
            give = min(counter.rights(self.number), amount - counter.rights(device), MAX_AMOUNT)
            if give <= 0:
                continue
            try:
                self.commit(lambda tx: tx.transfer(balance, device, give), now_ms)
            except TillmeshError as exc:
                self._alert("rights_refused", self.number, f"could not answer {key!r}: {exc}")

    def _clear_own_requests(self, now_ms: int) -> None:
        replica = self.replica
        for key, amount in self.open_requests():
            _, member_id, device = key
            if device != self.number:
                continue
            if replica.state(("member", member_id, "balance")).rights(self.number) >= amount:
                try:
                    self.commit(lambda tx: tx.set(key, 0), now_ms)
                except TillmeshError as exc:
                    self._alert("rights_refused", self.number, f"could not clear {key!r}: {exc}")

    def __repr__(self) -> str:
        kind = "member" if self.is_member else "relay"
        return f"Engine(device={self.number}, {kind}, sessions={len(self._sessions)})"


def seeded(seed: int) -> Callable[[int], bytes]:
    """A deterministic random-bytes source, for tests and simulations only."""
    return random.Random(seed).randbytes
