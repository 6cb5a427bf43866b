"""Where this device's own entries are known to be held: local, LAN, anchor.

A peer's ``have`` says up to which seq it holds our feed. The tracker keeps, per device,
the highest such seq, and derives each entry's level: ``anchor`` once a relay holds it,
else ``lan`` once another member does, else ``local``. What a shop asks most of an
offline-first system is how many of its sales sit on this till alone; ``summary`` answers
that. The table is saved in the store's meta area on every change (it is flushed with the
next group commit), so a restart keeps what it knew, and changes are handed to the driver
as ``AckChange`` effects rather than only pulled.

Acks trust the peer's word: a peer that claims entries it does not hold only lies about
its own reliability, and the entries are still ours and still re-sent on any full have.
"""

from __future__ import annotations

from typing import Callable

import cbor2

from crdt_types import StorageError, canonical

from ._events import AckChange, AckLevel, AckSummary
from ._store import MAX_META_BYTES, FeedStore

__all__ = ["AckTracker"]

META_NAME = "acks"


class AckTracker:
    """The ack table of one device.

    Args:
        number: this device's number (None for a verifier without a feed).
        store: where the table is kept across restarts.
        is_relay: whether a device number belongs to a relay (from its certificate).
    Raises:
        StorageError: the stored table is not one this code wrote.
    """

    def __init__(self, number: int | None, store: FeedStore, is_relay: Callable[[int], bool]) -> None:
        self._number = number
        self._store = store
        self._is_relay = is_relay
        self._holds: dict[int, int] = _load(store.get_meta(META_NAME))  # device -> our seq it holds

    def observe(self, device: int, seq: int, top: int) -> list[AckChange]:
        """``device`` holds our feed up to ``seq``; ``top`` is our durable head. Returns the
        ranges of our entries whose level rose."""
        if device == self._number or seq <= self._holds.get(device, 0):
            return []
        before = self._levels(top)
        self._holds[device] = seq
        self._store.put_meta(META_NAME, canonical(dict(sorted(self._holds.items()))))
        after = self._levels(top)
        changes = []
        if after[1] > before[1]:
            changes.append(AckChange(before[1] + 1, after[1], AckLevel.ANCHOR))
        lan_from = max(before[0], after[1]) + 1
        if after[0] >= lan_from:
            changes.append(AckChange(lan_from, after[0], AckLevel.LAN))
        return changes

    def level(self, seq: int) -> AckLevel:
        lan, anchor = self._levels(seq)
        return AckLevel.ANCHOR if anchor >= seq else AckLevel.LAN if lan >= seq else AckLevel.LOCAL

    def summary(self, top: int) -> AckSummary:
        lan, anchor = self._levels(top)
        return AckSummary(local=top - max(lan, anchor), lan=max(0, lan - anchor), anchor=anchor)

    def _levels(self, top: int) -> tuple[int, int]:
        """(highest seq a member holds, highest seq a relay holds), capped at ``top``."""
        lan = max((s for d, s in self._holds.items() if not self._is_relay(d)), default=0)
        anchor = max((s for d, s in self._holds.items() if self._is_relay(d)), default=0)
        return min(lan, top), min(anchor, top)


def _load(data: bytes | None) -> dict[int, int]:
    if data is None:
        return {}
    try:
        table = cbor2.loads(data) if len(data) <= MAX_META_BYTES else None
    except Exception:
        table = None
    if not isinstance(table, dict) or not all(
            type(d) is int and type(s) is int and d >= 0 and s >= 0 for d, s in table.items()):
        raise StorageError("the stored ack table is corrupt (expected a map of device -> seq)")
    return table
