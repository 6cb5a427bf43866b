"""A member's applied state as bytes: what a restart loads instead of replaying every feed.

A snapshot holds the replica, the applied vector, every bounded-counter op the escrow fold
keeps (a later op that sorts before them refolds the key from its first op), the entries
held for unknown ops, and the clock's last stamp. It is saved through the store's meta area
with the same all-or-nothing flush as the entries it was taken after, so it never claims an
entry the store does not hold durably. A restart replays only what came after it.

A snapshot that does not fit the store (one taken before a revocation truncated a feed, a
different format version, a different schema, damaged bytes) is not used: the engine replays
from the start, which is always right, only slower.
"""

from __future__ import annotations

from crdt_types import HLC, BoundedCounter, Replica, TillmeshError, Timestamp, canonical

from ._applier import Applier
from ._codec import decode
from ._store import MAX_SNAPSHOT_BYTES, FeedStore

__all__ = ["SNAPSHOT_VERSION", "take_snapshot", "restore_snapshot"]

SNAPSHOT_VERSION = 1


def take_snapshot(applier: Applier, clock: HLC) -> bytes:
    """The applier's state and the clock's last stamp, as canonical CBOR."""
    schema = applier.replica.schema
    ledger = [[schema.key_to_wire(key), [[stamp.pack(), origin, seq, delta.to_wire()[2]]
                                         for stamp, origin, seq, delta in ops]]
              for key, ops in applier.ledger.export()]
    return canonical([SNAPSHOT_VERSION, sorted(applier.applied.items()), applier.replica.to_wire(), ledger,
                      clock.last.pack(), sorted(applier.held_unknown)])


def restore_snapshot(applier: Applier, data: bytes, store: FeedStore, clock: HLC) -> bool:
    """Load ``data`` into a fresh ``applier``; False (and the applier untouched) when it does
    not fit this store or this code."""
    try:
        obj = decode(data, limit=MAX_SNAPSHOT_BYTES, what="snapshot", require_canonical=False)
        version, applied, replica_wire, ledger, last, held = obj
        if version != SNAPSHOT_VERSION:
            return False
        applied = {int(origin): int(seq) for origin, seq in applied}
        heads = store.heads()
        if any(seq > (heads[o].seq if o in heads else 0) for o, seq in applied.items()):
            return False  # taken before a cutoff removed entries, or of another store
        schema = applier.replica.schema
        replica = Replica.from_wire(applier.number, replica_wire, schema=schema)
        ops = [(schema.key_from_wire(raw_key), [(Timestamp.unpack(stamp), origin, seq, BoundedCounter.from_payload(p))
                                                for stamp, origin, seq, p in rows]) for raw_key, rows in ledger]
        held_unknown = {(int(o), int(s)) for o, s in held}
        stamp = Timestamp.unpack(last)
    except (TillmeshError, ValueError, TypeError):  # a damaged or foreign snapshot
        return False
    applier.replica = replica
    applier.applied = applied
    applier.held_unknown = held_unknown
    for key, rows in ops:
        for stamp_, origin, seq, delta in rows:
            applier.ledger.add(key, origin, seq, stamp_, delta)
    applier.ledger.settle(replica)
    clock.witness(stamp)
    return True
