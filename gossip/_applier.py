"""Applying stored entries to a member's replica: causal order, authorization, holds.

Theory of operation
-------------------
Entries are verified and stored by ``Feeds`` before the applier sees them; the applier
turns what is stored into replica state, and is the only writer of the replica. Its
verdicts must be the same on every member, whenever and in whatever order entries arrive,
so each depends only on the entry, the authority feed and (for bounded counters) the
canonical fold of ``_escrow``:

- **Order.** An entry waits until its origin's earlier entries and everything in its
  ``deps`` are applied. A dep past its origin's revocation cutoff can never arrive; it
  counts as met once the origin is applied up to the cutoff (the escrow fold judges what
  the entry spends).
- **Clock skew.** An entry stamped more than ``max_skew`` ahead of our wall clock waits,
  stored and forwarded but not applied, until our clock catches up: applied at once it
  would pin registers in the future for good. One ``clock_skew`` alert per device and
  episode. Applying it later gives the state applying it at once would have.
- **Unknown ops.** An entry whose group this version cannot read (a newer device wrote
  it) is held, reported once, and counted as passed so the origin's later entries go on;
  a restart after an upgrade replays the store and applies it.
- **Authorization.** Each op is checked against the origin's certificate with the
  injected ``Policy``, and against the structural own-slots rule; a refused op is skipped,
  the rest of the group applies. Rights requests must be in the origin's own name.

Waiting costs no memory beyond a bounded cache of opened groups, because the entries are
in the store; a restart replays the store the same way, so the replica is rebuilt from
what is durable.
"""

from __future__ import annotations

from typing import Any

from crdt_types import (
    HLC,
    BoundedCounter,
    DeltaGroup,
    Document,
    InvalidInput,
    Replica,
    Schema,
    Timestamp,
    UnknownOps,
    client_id_for,
)

from ._entry import MAX_DEPS, Entry
from ._errors import EpochUnavailable, Unauthorized
from ._escrow import EscrowKeys, EscrowLedger
from ._events import Alert, AlertKind, AppliedChange, Now
from ._feeds import Feeds
from ._identity import AUTHORITY_NUMBER
from ._keyring import Keyring
from ._policy import Policy, writes_only_own_slots
from ._store import FeedStore

__all__ = ["Applier", "MAX_OPENED_CACHE", "MAX_OPENED_CACHE_BYTES"]

# Opened (decrypted) groups kept while they wait for their causal predecessors; beyond
# this they are dropped and re-opened from the store when their turn comes.
MAX_OPENED_CACHE = 10_000
# ... and at most this many bytes of them, counted as encoded entries (a decoded group
# takes several times its wire size in memory).
MAX_OPENED_CACHE_BYTES = 8 * 1024 * 1024

_HELD = object()  # _ready's verdict for an entry held for unknown ops


class Applier:
    """The replica of one member, and the rules that feed it.

    Args:
        number: this device's number (the replica id).
        store, feeds, keyring: where entries are, how they open, who may write what.
        policy: the authorization table.
        schema: the key table of the replica.
        escrow: where rights requests live (None: no requests in this schema).
        clock: the node's HLC; it observes every applied stamp.
    """

    def __init__(self, *, number: int, store: FeedStore, feeds: Feeds, keyring: Keyring, policy: Policy,
                 schema: Schema, escrow: EscrowKeys | None, clock: HLC) -> None:
        self.number = number
        self._store = store
        self._feeds = feeds
        self._keyring = keyring
        self._policy = policy
        self._schema = schema
        self._escrow = escrow
        self._clock = clock
        self.replica = Replica(number, schema=schema)
        self.ledger = EscrowLedger()
        self.applied: dict[int, int] = {}  # origin -> highest seq passed (applied or held)
        self.held_unknown: set[tuple[int, int]] = set()
        self.held_skew: dict[int, tuple[int, int]] = {}  # origin -> (seq, stamp ms) waiting for our clock
        self._skew_episodes: set[int] = set()  # devices alerted for the skew they are in now
        self._opened: dict[tuple[int, int], tuple[Entry, DeltaGroup]] = {}
        self._opened_bytes = 0
        self.alerts: list[Alert] = []
        self.changes: list[AppliedChange] = []
        self.escrow_dirty = False  # a request or a bounded counter changed: rights work to do
        self.passed = 0  # entries applied or held since this applier was built

    # -- inputs -------------------------------------------------------------------------------

    def cache(self, entry: Entry, group: DeltaGroup) -> None:
        """Keep an opened entry for its turn, within both cache bounds; else it is decoded
        and opened again from the store when its turn comes."""
        ident = (entry.origin, entry.seq)
        if ident in self._opened:
            return
        size = len(entry.encode())
        if len(self._opened) < MAX_OPENED_CACHE and self._opened_bytes + size <= MAX_OPENED_CACHE_BYTES:
            self._opened[ident] = (entry, group)
            self._opened_bytes += size

    def run(self, now: Now) -> bool:
        """Apply, in causal order, every stored entry whose turn has come; returns whether
        anything was applied."""
        anything = False
        while True:
            progress = False
            for origin, head in self._store.heads().items():
                seq = self.applied.get(origin, 0)
                while seq < head.seq:
                    seq += 1
                    verdict = self._ready(origin, seq, now)
                    if verdict is None:
                        break
                    self.applied[origin] = seq
                    self.passed += 1
                    if isinstance(verdict, DeltaGroup):
                        self._merge(origin, seq, verdict, now)
                    progress = True
            if not progress:
                break
            anything = True
        for skip in self.ledger.settle(self.replica):
            kind = AlertKind.FORGED_SLOTS if skip.reason == "forged" else AlertKind.OVERDRAFT
            self.alerts.append(Alert(kind, skip.origin, f"entry {skip.origin}/{skip.seq}: {skip.reason} op on "
                                     f"{skip.key!r} skipped", entry=(skip.origin, skip.seq), key=skip.key))
        return anything

    def pending(self) -> int:
        """Entries stored but not yet applied (waiting for deps, epochs or our clock)."""
        return sum(max(0, head.seq - self.applied.get(origin, 0)) for origin, head in self._store.heads().items()
                   if origin != AUTHORITY_NUMBER)

    def held_for_skew(self) -> dict[int, int]:
        """origin -> how many of its stored entries wait for our clock (the first is stamped
        too far ahead; the rest wait behind it in their feed's order)."""
        out = {}
        for origin in self.held_skew:
            head = self._store.head(origin)
            out[origin] = (head.seq if head else 0) - self.applied.get(origin, 0)
        return out

    def skew_release_ms(self) -> int | None:
        """The earliest wall-clock time at which an entry held for skew may apply."""
        if not self.held_skew:
            return None
        return min(stamp for _, stamp in self.held_skew.values()) - self._clock.max_skew_ms

    def prepare(self, ops: Any, stamp: Timestamp, can_hold: Any = None) -> tuple[DeltaGroup, dict[int, int]]:
        """A local transaction, checked and not yet applied: its group and its deps.

        The checks every receiver makes are made here first, so that a commit that returns
        is one every replica applies: the policy, the own-slots rule, a rights request in
        this device's own name, and (``can_hold``) a transfer only to a device that could
        ever spend the rights.

        Raises:
            InvalidInput, InsufficientRights: a bad op (nothing changed).
            Unauthorized: an op this device may not write (nothing changed).
        """
        replica = self.replica
        with replica.transaction(stamp, apply=False) as tx:
            if callable(ops):
                ops(tx)
            else:
                for op in ops:
                    tx.apply(op)
        group = tx.delta
        replica.discard(group)  # it is applied like any stored entry, once written
        cert = self._keyring.certificate
        for key, delta in group.ops:
            if not self._policy.allows(cert, key):
                raise Unauthorized(f"device {self.number} ({', '.join(cert.roles)}, branch {cert.branch}) "
                                   f"may not write {key!r}")
            if not writes_only_own_slots(delta, self.number) or not self._own_request(key, self.number):
                raise Unauthorized(f"{key!r}: a write into another device's slots")
            if isinstance(delta, BoundedCounter) and can_hold is not None:
                for (source, target), _ in delta.rows()[2].items():
                    if source == self.number and not can_hold(target):
                        raise InvalidInput(f"{key!r}: device {target!r} could never spend rights moved to it "
                                           "(not an enrolled member, a relay, or revoked)")
        bounded = [key for key, delta in group.ops if isinstance(delta, BoundedCounter)]
        return group, self.ledger.deps(bounded, self.number, MAX_DEPS)

    # -- one entry ----------------------------------------------------------------------------

    def _ready(self, origin: int, seq: int, now: Now) -> Any:
        """None (not yet), _HELD (passed without applying), True (nothing to apply: an
        authority entry, applied to the keyring on intake) or the entry's opened group."""
        if origin == AUTHORITY_NUMBER:
            return True
        if (origin, seq) in self.held_unknown:
            return _HELD
        cached = self._opened.pop((origin, seq), None)
        if cached is not None:
            entry, group = cached
            self._opened_bytes -= len(entry.encode())
        else:
            entry, group = Entry.decode(self._store.get(origin, seq)), None
        if not all(self._dep_met(o, s) for o, s in entry.deps):
            if group is not None:
                self.cache(entry, group)
            return None
        if group is None:
            try:
                group = self._feeds.open(entry)
            except EpochUnavailable:
                return None
            except UnknownOps as exc:
                self.held_unknown.add((origin, seq))
                self.alerts.append(Alert(AlertKind.UNKNOWN_OPS, origin, f"entry {origin}/{seq} is held: {exc}",
                                         entry=(origin, seq)))
                return _HELD
        ahead = group.hlc.ms - now.wall_ms
        # Our own entries never wait: our clock stamped them, however its wall reading stepped.
        if ahead > self._clock.max_skew_ms and origin != self.number:
            self.cache(entry, group)
            self.held_skew[origin] = (seq, group.hlc.ms)
            if origin not in self._skew_episodes:
                self._skew_episodes.add(origin)
                self.alerts.append(Alert(AlertKind.CLOCK_SKEW, origin,
                                         f"device {origin}'s entry {seq} is stamped {ahead} ms ahead of our clock; "
                                         "it waits until our clock catches up", entry=(origin, seq), skew_ms=ahead))
            return None
        if self.held_skew.pop(origin, None) is not None:
            self._skew_episodes.discard(origin)
        return group

    def _dep_met(self, origin: int, seq: int) -> bool:
        applied = self.applied.get(origin, 0)
        if applied >= seq:
            return True
        cutoff = self._keyring.revocations.get(origin)
        return cutoff is not None and seq > cutoff and applied >= cutoff

    def _merge(self, origin: int, seq: int, group: DeltaGroup, now: Now) -> None:
        cert = self._keyring.certificates.get(origin)
        allowed = []
        keys = []
        for key, delta in group.ops:
            if cert is None or not self._policy.allows(cert, key):
                roles = ", ".join(cert.roles) if cert else "no certificate"
                self.alerts.append(Alert(AlertKind.UNAUTHORIZED, origin, f"entry {origin}/{seq}: {roles} may not "
                                         f"write {key!r}; skipped", entry=(origin, seq), key=key))
                continue
            if isinstance(delta, BoundedCounter):
                self.ledger.add(key, origin, seq, group.hlc, delta)
                keys.append(key)
                self.escrow_dirty = True
                continue
            if (not writes_only_own_slots(delta, origin) or not self._own_request(key, origin)
                    or (isinstance(delta, Document) and self._rewrites_history(key, delta, origin))):
                self.alerts.append(Alert(AlertKind.FORGED_SLOTS, origin, f"entry {origin}/{seq}: writes another "
                                         f"device's slots of {key!r}; skipped", entry=(origin, seq), key=key))
                continue
            allowed.append((key, delta))
            keys.append(key)
            if self._escrow is not None and key[0] == self._escrow.request_kind:
                self.escrow_dirty = True
        self._clock.observe(group.hlc, now.wall_ms)
        if allowed:
            result = self.replica.merge(DeltaGroup(group.hlc, origin, tuple(allowed)))
            for key in result.conflicts:
                self.alerts.append(Alert(AlertKind.RECORD_CONFLICT, origin, f"two different records under {key!r}",
                                         entry=(origin, seq), key=key))
        self.changes.append(AppliedChange(origin, seq, tuple(keys)))

    def _rewrites_history(self, key: tuple, delta: Document, origin: int) -> bool:
        """A document update whose writer restarts below clocks it already wrote here: two
        different items under one (client, clock), which Yrs would keep in whichever order
        it folded them. Only the origin writes its client id and its entries apply in seq
        order, so this verdict is the same on every replica."""
        client = client_id_for(origin)
        start = delta.first_clock(client)
        return start is not None and start < self.replica.state(key).next_clock(client)

    def _own_request(self, key: tuple, origin: int) -> bool:
        escrow = self._escrow
        return escrow is None or key[0] != escrow.request_kind or escrow.device_of(key) == origin
