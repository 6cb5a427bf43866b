"""The per-node replication engine, sans-IO: orchestration only.

Theory of operation
-------------------
One ``Engine`` per node. The driver (the trio runtime in node/, the simulator, a test) owns
the connections, the clocks and the disk; the engine owns the protocol. Inputs:

    connected(peer, initiator, now)   a transport to ``peer`` (any hashable handle) is up
    received(peer, data, now)         bytes arrived from it
    disconnected(peer, now)           its transport ended (the one end-of-stream input)
    tick(now)                         time passed (call at ``next_deadline()`` at the latest)
    commit(ops, now)                  members only: a local transaction
    flushed(now) / flush_failed(now)  the durability call: how the store's flush went

and one output, ``poll() -> Effects``, plus ``next_deadline()`` and ``status()``.

Durability: no entry leaves the device before it is durable, because a crash after sending
and before the disk write would re-issue its seq with other content, which every peer would
see as a fork. ``commit`` appends to the store (buffered) and applies locally; ``poll`` then
says ``flush``; the driver flushes the store, once for however many commits came in (group
commit), and calls ``flushed``, which releases the entries to peers and reports them in
``Effects.committed``. A caller's commit is acknowledged only then.

Intake goes Feeds (verify, store) -> Applier (causal order, authorization, escrow fold).
What a peer's entry did wrong is decided by where its error sits in the tree: ``NotYet``
defers it, ``OriginFault`` refuses it without blaming the forwarding peer, anything else is
the peer's protocol error. A revocation that arrives below what the node holds drops the
entries past the cutoff and rebuilds the replica as the replay of the valid entries.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from crdt_types import DEFAULT_SCHEMA, HLC, BoundedCounter, InvalidInput, Schema, StorageError, TillmeshError
from crdt_types._check import require_amount

from ._acks import AckTracker
from ._applier import Applier
from ._channel import SecureChannel
from ._config import EngineConfig
from ._errors import ConnectionLost, HandshakeTimeout, MalformedData
from ._escrow import EscrowKeys, rights_work
from ._events import Alert, AlertKind, Close, CloseReason, Committed, Effects, Now, Status
from ._feeds import Feeds
from ._identity import AUTHORITY_NUMBER, Revocation
from ._intake import Batch, take_in
from ._keyring import Keyring
from ._policy import ALLOW_ALL, Policy
from ._snapshot import restore_snapshot, take_snapshot
from ._session import Authenticated, Ended, EntriesArrived, ForkSuspected, HaveArrived, Session, duplicate_loser
from ._store import FeedStore

__all__ = ["Engine", "MAX_PEERS"]

# Concurrent sessions: a shop has tens of devices; an anchor serves a few branches.
MAX_PEERS = 256
# Connections not yet authenticated. Kept apart from MAX_PEERS: anyone who can reach the
# port (no network key needed) can open connections, and must not crowd out the tills. When
# full, the oldest pending handshake is dropped (a till's takes milliseconds).
MAX_PENDING_HANDSHAKES = 64


class Engine:
    """Replication engine of one node.

    Args:
        keyring: this node's keyring (a relay's holds no data key).
        store: its FeedStore; what it holds is replayed at start, authority feed first.
        random_bytes: injected randomness (nonces, ephemeral keys, jitter).
        now: the time of construction (``Now``, or an int for both clocks).
        policy: authorization table (node/ injects the POS one); allow-all by default.
        schema: the key table (node/ injects the POS one).
        escrow: where rights requests live; None disables ``request_rights``.
        config: timers.
        hlc: the clock restored from storage, if any (a replay restores it too).
    Raises:
        IntegrityError: a stored authority entry does not verify.
        StorageError: the store's meta data is corrupt.
    """

    def __init__(self, keyring: Keyring, store: FeedStore, *, random_bytes: Callable[[int], bytes],
                 now: Now | int, policy: Policy = ALLOW_ALL, schema: Schema = DEFAULT_SCHEMA,
                 escrow: EscrowKeys | None = None, config: EngineConfig = EngineConfig(),
                 hlc: HLC | None = None) -> None:
        now = Now.of(now)
        self._keyring, self._store, self._random, self._config = keyring, store, random_bytes, config
        self._policy, self._schema, self._escrow = policy, schema, escrow
        self._clock = hlc or HLC()
        self._feeds = Feeds(keyring, store, schema)
        self.number = keyring.number
        self._feeds.catch_up_authority()
        cert = keyring.certificate
        self.is_member = keyring.is_member and not (cert is not None and cert.is_relay)
        self._forward_eagerly = (not self.is_member) if config.forward_eagerly is None else config.forward_eagerly
        self._sessions: dict[Any, Session] = {}
        self._closing: list[Session] = []  # ended, their last bytes (a bye) still to hand out
        self._outbox: dict[Session, None] = {}  # sessions that queued bytes since the last poll, in order
        self._closes: list[Close] = []
        self._alerts: list[Alert] = []
        self._committed: list[Committed] = []
        self._unflushed: list[Committed] = []
        self._acks_out: list = []
        self._acks = AckTracker(self.number, store, self._is_relay)
        self._now = now
        self._flush_mark: tuple[int, int] | None = None  # (own head, commits) at the poll that asked to flush
        self._writing = False
        self._applier: Applier | None = None
        for origin, cutoff in keyring.revocations.items():
            store.truncate(origin, cutoff)  # a crash between a cutoff's intake and its truncation
        self._snapshot_at = 0
        self._rebuild(now, from_snapshot=True)
        own = store.head(self.number) if self.number is not None else None
        self._durable_seq = own.seq if own else 0

    # -- inputs -------------------------------------------------------------------------------

    def connected(self, peer: Any, initiator: bool, now: Now | int) -> None:
        """A transport to ``peer`` is up; the initiator speaks first.

        Raises:
            InvalidInput: ``peer`` is already connected.
        """
        now = self._at(now)
        if peer in self._sessions:
            raise InvalidInput(f"peer {peer!r} is already connected")
        pending = [s for s in self._sessions.values() if s.cert is None]
        if len(pending) >= MAX_PENDING_HANDSHAKES:
            # The oldest pending handshake gives way, not the newcomer: a flood of connections
            # that never authenticate cannot keep a till out, it can only slow it down.
            oldest = min(pending, key=lambda s: s.opened_ms)
            self._alert(AlertKind.TOO_MANY_PEERS, None, f"{MAX_PENDING_HANDSHAKES} handshakes pending: "
                        f"dropped the oldest, {oldest.peer!r}")
            self._close(oldest, CloseReason.TOO_MANY_PEERS, f"{MAX_PENDING_HANDSHAKES} handshakes pending", now)
        channel = SecureChannel(self._keyring, initiator=initiator, random_bytes=self._random, now_ms=now.mono_ms)
        session = self._sessions[peer] = Session(peer, channel, config=self._config.session, store=self._store,
                                                 sendable=self._sendable, draw=self._draw, now_ms=now.mono_ms)
        outbox = self._outbox
        channel.on_output = lambda: outbox.__setitem__(session, None)
        if channel.has_output:  # an initiator's first handshake message, queued as it was made
            outbox[session] = None

    def received(self, peer: Any, data: bytes, now: Now | int) -> None:
        """Bytes from ``peer``. The end of its stream is ``disconnected``, not empty data.

        Raises:
            InvalidInput: ``data`` is not bytes.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"data must be bytes (end of stream is disconnected()), got {type(data).__name__}")
        now = self._at(now)
        session = self._sessions.get(peer)
        if session is not None and data:
            self._handle(session, session.receive(bytes(data), now.mono_ms, now.wall_ms), now)

    def disconnected(self, peer: Any, now: Now | int) -> None:
        """``peer``'s transport is gone (closed cleanly or not); what it holds is remembered."""
        now = self._at(now)
        session = self._sessions.get(peer)
        if session is not None:
            self._handle(session, session.transport_closed(now.mono_ms), now, gone=True)

    def close(self, peer: Any, now: Now | int, reason: CloseReason = CloseReason.SHUTDOWN, detail: str = "") -> None:
        """Close the session with ``peer`` from our side: it gets a ``bye`` with ``reason``,
        then ``poll()`` hands out a ``Close`` for it. Unknown peers are ignored."""
        now = self._at(now)
        session = self._sessions.get(peer)
        if session is not None:
            self._close(session, reason, detail, now)

    def tick(self, now: Now | int) -> None:
        """Let time pass: timeouts, pings, anti-entropy, expiries, skew holds, rights work."""
        now = self._at(now)
        own = self._keyring.certificate
        mono = now.mono_ms
        for session in list(self._sessions.values()):
            expired = False
            for cert in (own, session.cert):
                if cert is not None and cert.expires_ms is not None and now.wall_ms >= cert.expires_ms:
                    session.close(CloseReason.EXPIRED, f"the certificate of device {cert.number} expired")
                    expired = True
            # Only sessions with a timer due are ticked: a driver ticks at the earliest of all
            # deadlines, and most sessions have nothing to do then.
            due = session.next_deadline()
            if expired or (due is not None and due <= mono):
                self._handle(session, session.tick(mono), now)
        release = self._applier.skew_release_ms() if self._applier else None
        if release is not None and now.wall_ms >= release:
            self._settle(now)
        elif self._applier is not None and self._applier.escrow_dirty:
            self._settle(now)
        self._maybe_snapshot()

    def commit(self, ops: Iterable[tuple] | Callable[[Any], None], now: Now | int) -> Committed:
        """Write a local transaction: stamp, seal, sign, append (buffered), apply.

        It reaches peers once the driver has flushed the store and called ``flushed``.

        Args:
            ops: ops as data, ``[("add", key, -2), ("set", key, 950), ...]`` (verbs of
                ``crdt_types.Transaction``), or a callable that receives the transaction.
        Returns:
            What was written: origin, seq, entry hash and the keys it touched.
        Raises:
            InvalidInput: not a member, or a bad op (nothing changed).
            Unauthorized: an op this device's certificate does not allow (nothing changed).
            InsufficientRights: a decrement or transfer beyond local rights (nothing changed).
        """
        now = self._at(now)
        committed = self._write(ops, now)
        self._settle(now, ran=True)  # _write ran the applier already
        return committed

    def import_entries(self, entries: Iterable[bytes], now: Now | int) -> int:
        """Take in entries from a trusted local source (the authority's feed carried from an
        admin machine, a backup) as if a peer had sent them; returns how many were new.

        Raises:
            IntegrityError: an entry that does not verify (those before it are kept).
        """
        now = self._at(now)
        new, offer = 0, tuple(entries)
        while offer:  # a backup need not be in feed order: what came too early is offered again
            batch = take_in(self._feeds, offer)
            self._taken(batch, now)
            new += len(batch.fresh())
            if batch.fault is not None:
                self._settle(now)
                raise MalformedData(batch.fault)
            offer = tuple(batch.deferred) if batch.fresh() else ()
        self._settle(now)
        self._push_all(now)
        return new

    def request_rights(self, key: tuple, amount: int, now: Now | int) -> Committed:
        """Ask the other members for ``amount`` rights on the bounded counter ``key``.

        Raises:
            InvalidInput: the schema names no escrow requests, or ``key`` is not bounded.
        """
        if self._escrow is None:
            raise InvalidInput("this engine has no escrow keys: rights requests are not part of its schema")
        if self._schema.type_of(key) is not BoundedCounter:
            raise InvalidInput(f"{key!r} is not a bounded counter")
        request = self._escrow.request_key(key, self.number)
        if self._escrow.bounded_key(request) != key:
            raise InvalidInput(f"the escrow keys name no rights requests for {key!r}")
        require_amount("amount", amount)
        return self.commit([("set", request, amount)], now)

    def flushed(self, now: Now | int) -> None:
        """The driver flushed the store after the ``poll()`` that asked for it: everything
        appended up to that poll is durable. What was appended after it (a commit, a rights
        answer set off by bytes that arrived meanwhile) waits for the next flush."""
        now = self._at(now)
        seq, count = self._flush_mark if self._flush_mark is not None else (self._own_head(), len(self._unflushed))
        if not self._store.dirty:
            # Nothing is buffered: everything appended so far is durable. A driver whose
            # flush runs beside the engine (node/runtime.py) may have had appends made after
            # the poll land in that flush; no later poll would ask to flush them again.
            seq, count = self._own_head(), len(self._unflushed)
        self._flush_mark = None
        released = seq > self._durable_seq
        self._durable_seq = max(self._durable_seq, seq)
        self._committed += self._unflushed[:count]
        del self._unflushed[:count]
        if released:  # our own entries may leave now; others' go by the forwarding rule
            self._push_all(now)

    def flush_failed(self, now: Now | int) -> tuple[Committed, ...]:
        """The store's flush failed: its writes are discarded, the replica rebuilt from what
        is durable, every session restarted (peers were told of entries now gone).

        Returns:
            The commits that were lost; their callers must be told they failed.
        """
        now = self._at(now)
        self._store.discard_unflushed()
        self._flush_mark = None
        lost, self._unflushed = tuple(self._unflushed), []
        for session in list(self._sessions.values()):
            self._close(session, CloseReason.STORAGE, "local storage failed", now)
        self._alert(AlertKind.STORAGE_FAILED, self.number, f"a flush failed; {len(lost)} commit(s) dropped")
        self._rebuild(now, from_snapshot=True)
        return lost

    # -- outputs ------------------------------------------------------------------------------

    def poll(self) -> Effects:
        """Everything to do now; each effect is handed out once."""
        sends = {}
        if self._outbox:
            # Only sessions that queued bytes, and only those still here or closing (the
            # bytes of a session that is gone have nowhere to go).
            sessions, closing = self._sessions, self._closing
            for session in self._outbox:
                if sessions.get(session.peer) is session or session in closing:
                    data = session.data_to_send()
                    if data:
                        sends[session.peer] = data
            self._outbox.clear()  # in place: each channel's on_output holds this dict
        self._closing = []
        applier = self._applier
        alerts, changes = self._alerts, ()
        if applier is not None:
            if applier.alerts:
                alerts = alerts + applier.alerts
                applier.alerts = []
            if applier.changes:
                changes, applier.changes = applier.changes, []
        # Most polls have nothing but bytes (or nothing at all): lists are replaced only
        # when they held something.
        effects = Effects(sends, tuple(self._closes), tuple(alerts), tuple(changes), tuple(self._committed),
                          tuple(self._acks_out), self._store.dirty)
        if self._closes:
            self._closes = []
        if self._alerts:
            self._alerts = []
        if self._committed:
            self._committed = []
        if self._acks_out:
            self._acks_out = []
        if effects.flush:  # what the driver's flush will hold: released by flushed()
            self._flush_mark = (self._own_head(), len(self._unflushed))
        return effects

    def _own_head(self) -> int:
        head = self._store.head(self.number) if self.number is not None else None
        return head.seq if head else 0

    def next_deadline(self) -> int | None:
        """The monotonic time by which ``tick`` must be called next, or None."""
        # Called after every input: the earliest of each kind is kept as it goes, no lists.
        mono = wall = None
        own = self._keyring.certificate
        if own is not None:
            wall = own.expires_ms
        for session in self._sessions.values():
            d = session.next_deadline()
            if d is not None and (mono is None or d < mono):
                mono = d
            cert = session.cert
            if cert is not None and (w := cert.expires_ms) is not None and (wall is None or w < wall):
                wall = w
        applier = self._applier
        if applier is not None:
            if applier.escrow_dirty and (mono is None or self._now.mono_ms < mono):
                mono = self._now.mono_ms
            release = applier.skew_release_ms()
            if release is not None and (wall is None or release < wall):
                wall = release
        if wall is not None:
            # A wall-clock time as a monotonic one, as the clocks stood at the last input.
            at = self._now.mono_ms + max(0, wall - self._now.wall_ms)
            if mono is None or at < mono:
                mono = at
        return mono

    def status(self) -> Status:
        """A snapshot of this engine (vectors, acks, peers, pending and held entries)."""
        applier = self._applier
        return Status(
            device=self.number, is_member=self.is_member, vector=self._store.version_vector(),
            applied=dict(applier.applied) if applier else {}, durable_seq=self._durable_seq,
            digest=applier.replica.digest() if applier else None, acks=self._acks.summary(self._durable_seq),
            peers=tuple(s.status() for s in self._sessions.values()), pending=applier.pending() if applier else 0,
            held_for_skew=applier.held_for_skew() if applier else {},
            held_unknown=tuple(sorted(applier.held_unknown)) if applier else (),
            quarantined=tuple(sorted(self._store.quarantined())), revoked=dict(self._keyring.revocations))

    def peer_sync(self) -> dict[Any, tuple[int, int]]:
        """For each connected peer (by handle): the entries we hold that it is not known to
        hold, and the entries it has shown that we lack (0, 0: in sync, as far as we know).
        Apart from ``status`` because it costs a walk of every feed per peer."""
        vector = self._sendable()  # what may leave: own entries once durable
        return {peer: session.sync_state(vector) for peer, session in self._sessions.items()}

    def value(self, key: tuple) -> Any:
        """The replicated value at ``key`` (members).

        Raises:
            InvalidInput: a relay (it holds no replica), or a key the schema does not know.
        """
        return self._member().replica.value(key)

    def rights(self, key: tuple, device: int | None = None) -> int:
        """Rights ``device`` (default: this one) holds on the bounded counter ``key``."""
        if self._schema.type_of(key) is not BoundedCounter:
            raise InvalidInput(f"{key!r} is not a bounded counter: it has no rights")
        return self._member().replica.state(key).rights(self.number if device is None else device)

    def keys(self, kind: str) -> list[tuple]:
        """The keys of ``kind`` that hold state on this member, in canonical order.

        Raises:
            InvalidInput: a relay (it holds no replica).
        """
        return list(self._member().replica.keys(kind))

    def ack_level(self, seq: int):
        """Where this device's entry ``seq`` is known to be held.

        Raises:
            InvalidInput: ``seq`` is not one of this device's entries.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= self._own_head():
            raise InvalidInput(f"seq must be one of this device's entries (1..{self._own_head()}), got {seq!r}")
        return self._acks.level(seq)

    # -- orchestration ------------------------------------------------------------------------

    def _at(self, now: Now | int) -> Now:
        self._now = Now.of(now)
        return self._now

    def _member(self) -> Applier:
        if self._applier is None:
            raise InvalidInput("this node is a relay: it holds no data key and no replica")
        return self._applier

    def _can_hold_rights(self, number: Any) -> bool:
        """Whether rights moved to ``number`` could ever be spent: an enrolled, unrevoked member
        device (not a relay, and not the authority, whose machine is kept off the tills)."""
        cert = self._keyring.certificates.get(number) if isinstance(number, int) else None
        return (cert is not None and not cert.is_relay and number != AUTHORITY_NUMBER
                and number not in self._keyring.revocations)

    def _is_relay(self, number: int) -> bool:
        cert = self._keyring.certificates.get(number)
        return cert is not None and cert.is_relay

    def _draw(self, n: int) -> int:
        return int.from_bytes(self._random(4), "big") % n

    def _alert(self, kind: AlertKind, origin: int | None, detail: str, **fields: Any) -> None:
        self._alerts.append(Alert(kind, origin, detail, **fields))

    def _sendable(self) -> dict[int, int]:
        vector = self._store.version_vector()
        if self.number in vector:
            vector[self.number] = min(vector[self.number], self._durable_seq)
        return vector

    def _rebuild(self, now: Now, *, from_snapshot: bool = False) -> None:
        """The replica as the replay of every stored, valid entry (after the stored snapshot,
        when asked and when it fits the store)."""
        if not self.is_member:
            return
        applier = Applier(number=self.number, store=self._store, feeds=self._feeds, keyring=self._keyring,
                          policy=self._policy, schema=self._schema, escrow=self._escrow, clock=self._clock)
        if from_snapshot:
            try:
                data = self._store.load_snapshot()
            except StorageError as exc:
                self._alert(AlertKind.STORAGE_FAILED, self.number, f"snapshot not used: {exc}; replaying the feeds")
                data = None
            if data is not None:
                restore_snapshot(applier, data, self._store, self._clock)
        self._applier = applier
        applier.run(now)
        self._snapshot_at = applier.passed

    def _maybe_snapshot(self) -> None:
        # A snapshot costs time in proportion to the whole state, so it is taken at most
        # once per half of the entries held (the total work stays within a few times the
        # state, however large the history grows), and only from tick(): never in the middle
        # of a burst of commits or of a catch-up.
        every = self._config.snapshot_every
        applier = self._applier
        if not every or applier is None:
            return
        due = max(every, sum(applier.applied.values()) // 2)
        if applier.passed - self._snapshot_at >= due:
            self._store.save_snapshot(take_snapshot(applier, self._clock))
            self._snapshot_at = applier.passed

    def _settle(self, now: Now, *, ran: bool = False) -> None:
        """Apply what is ready (unless the applier has just ``ran`` and nothing came in since),
        then write the rights answers it calls for, until quiet."""
        applier = self._applier
        if applier is None:
            return
        if not ran:
            applier.run(now)
        while self._escrow is not None and applier.escrow_dirty:
            applier.escrow_dirty = False
            # Each answer is worked out after the last one is applied; every write lowers our
            # rights or clears a request, so the loop ends.
            while (ops := rights_work(applier.replica, self.number, self._escrow, self._can_hold_rights)) is not None:
                try:
                    self._write(ops, now)
                except TillmeshError as exc:
                    self._alert(AlertKind.RIGHTS_REFUSED, self.number, f"could not write {ops!r}: {exc}")
                    break
            applier.run(now)

    def _write(self, ops: Iterable[tuple] | Callable[[Any], None], now: Now) -> Committed:
        applier = self._member()
        if self._writing:
            raise InvalidInput("commit() may not be called from inside a transaction's build")
        if not callable(ops) and not isinstance(ops, (list, tuple)):
            raise InvalidInput(f"ops must be a list of (verb, key, *args) tuples or a callable, got {type(ops).__name__}")
        self._writing = True
        try:
            group, deps = applier.prepare(ops, self._clock.now(now.wall_ms), self._can_hold_rights)
        finally:
            self._writing = False
        entry = self._feeds.append_local(group, deps=deps, random_bytes=self._random)
        self._clock.witness(group.hlc)
        applier.cache(entry, group)
        applier.run(now)
        committed = Committed(entry.origin, entry.seq, entry.hash, tuple(key for key, _ in group.ops))
        self._unflushed.append(committed)
        return committed

    def _push_all(self, now: Now) -> None:
        # One sorted vector for every session: an anchor holds hundreds, each of which would
        # otherwise build and sort its own (streaming reads the store, it does not change it).
        sendable = sorted(self._sendable().items())
        for session in self._sessions.values():
            session.push(now.mono_ms, sendable)

    def _handle(self, session: Session, events: list, now: Now, *, gone: bool = False) -> None:
        events = list(events)
        while events:
            event = events.pop(0)
            if isinstance(event, (Authenticated, EntriesArrived)):
                if isinstance(event, Authenticated):
                    self._authenticated(session, event.cert, now)
                else:
                    self._intake(session, event, now)
                events += session.resume(now.mono_ms)  # the frames that came behind it
            elif isinstance(event, HaveArrived):
                device = session.number
                self._acks_out += self._acks.observe(device, event.vector.get(self.number, 0), self._durable_seq)
            elif isinstance(event, ForkSuspected):
                self._alert(AlertKind.FORK_SUSPECTED, event.origin, f"device {event.origin}: the peer holds another "
                            f"entry at seq {event.seq}", entry=(event.origin, event.seq))
            elif isinstance(event, Ended):
                # A transport that died mid-handshake or mid-message is the network's doing,
                # not something to alert an operator about; a peer breaking the protocol is.
                lost = isinstance(event.error, (ConnectionLost, HandshakeTimeout))
                if event.reason is CloseReason.PROTOCOL_ERROR or (event.error is not None and not lost):
                    self._alert(AlertKind.PROTOCOL_ERROR, session.number, event.detail)
                if self._sessions.get(session.peer) is session:
                    del self._sessions[session.peer]
                self._closing.append(session)
                if not gone:
                    self._closes.append(Close(session.peer, event.reason, event.detail, event.by_peer))

    def _close(self, session: Session, reason: CloseReason, detail: str, now: Now) -> None:
        """End a session from our side and hand out what that sets off."""
        session.close(reason, detail)
        self._handle(session, session.events(), now)

    def _authenticated(self, session: Session, cert: Any, now: Now) -> None:
        if cert.number == self.number:
            self._close(session, CloseReason.SELF, "connected to itself", now)
            return
        if sum(1 for s in self._sessions.values() if s.cert is not None and s is not session) >= MAX_PEERS:
            self._alert(AlertKind.TOO_MANY_PEERS, cert.number, f"refused device {cert.number}: already {MAX_PEERS} sessions")
            self._close(session, CloseReason.TOO_MANY_PEERS, f"already {MAX_PEERS} sessions", now)
            return
        for other in [s for s in self._sessions.values() if s is not session and s.number == cert.number]:
            loser, reason = duplicate_loser(other, session, self.number, now.mono_ms)
            detail = (f"device {cert.number} is connected already" if reason is CloseReason.DUPLICATE
                      else "a newer connection from the same device took over")
            self._close(loser, reason, detail, now)
            if loser is session:
                return
        session.greet(now.mono_ms)

    def _intake(self, session: Session, event: EntriesArrived, now: Now) -> None:
        batch = take_in(self._feeds, event.batch)
        self._taken(batch, now)
        for evidence in batch.evidence:  # whichever entry a peer holds, the other proves the fork
            for other in self._sessions.values():
                other.send_evidence(evidence)
        for result in batch.taken:
            session.received_entry(result.entry.origin, result.entry.seq, result.new)
        for _ in range(len(event.batch) - len(batch.taken)):
            session.refused_entry()
        if batch.fault is not None:
            self._close(session, CloseReason.PROTOCOL_ERROR, batch.fault, now)
            return
        own_new = any(r.entry.origin == session.number for r in batch.fresh())
        session.took_in(origins=batch.origins, own_new=own_new, refused=batch.refused > 0, ack=event.ack,
                        mono_ms=now.mono_ms)
        if batch.fresh():
            self._settle(now)
            if self._forward_eagerly:
                self._push_all(now)

    def _taken(self, batch: Batch, now: Now) -> None:
        """What every intake does with what it took in, whoever sent it."""
        self._alerts += batch.alerts
        if batch.fresh():
            for session in self._sessions.values():
                session.stored(now.mono_ms)
        for origin, seq in batch.forks:
            self._drop_after(origin, seq - 1, now)
        for result in batch.fresh():
            if result.control is not None:
                self._control(result.control, now)
            if result.group is not None and self._applier is not None:
                self._applier.cache(result.entry, result.group)

    def _drop_after(self, device: int, last: int, now: Now) -> int:
        """Remove ``device``'s entries after ``last`` and rebuild if any had been applied:
        a revocation cutoff, or a fork (both versions of the forked seq, and what follows,
        are void on every replica alike, whichever version each received first)."""
        dropped = self._store.truncate(device, last)
        applied = self._applier.applied.get(device, 0) if self._applier else 0
        if applied > last:
            self._rebuild(now)
        return dropped

    def _control(self, record: Any, now: Now) -> None:
        """A control record was taken in; a revocation acts at once."""
        if not isinstance(record, Revocation):
            return
        device, cutoff = record.number, self._keyring.revocations[record.number]
        dropped = self._drop_after(device, cutoff, now)
        if dropped:
            self._alert(AlertKind.REVOKED_ENTRIES_DROPPED, device, f"device {device} was revoked after seq {cutoff}: "
                        f"{dropped} entries past the cutoff removed")
        for session in list(self._sessions.values()):
            if device == self.number or session.number == device:
                self._close(session, CloseReason.REVOKED, f"device {device} was revoked", now)

    def __repr__(self) -> str:
        kind = "member" if self.is_member else "relay"
        return f"Engine(device={self.number}, {kind}, sessions={len(self._sessions)})"

