"""The trace digest: BLAKE2b over every event of a run, in the order they happened.

Two runs of the same scenario, seed and code give the same digest, bit for bit; any
difference in when anything was sent, delivered, committed, applied or broken, or in how
many bytes it carried, changes it.

The bytes themselves are not hashed, only their length: Yrs encodes a map inside a
document (an order line) in its hash map's order, which Rust seeds per process, so the
same line written in two processes has the same content and size but not the same
bytes. Nothing in a run depends on that order (replicas merge to the same state), so the
sizes and the timing are what a run reproduces exactly.
"""

from __future__ import annotations

import hashlib

__all__ = ["Trace"]


class Trace:
    """Feed events in with ``event``; ``hexdigest()`` at the end."""

    __slots__ = ("_hash", "_pending", "events")

    BATCH = 4096  # events hashed together: one repr and one update per batch, not per event

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=32, person=b"tillmesh-sim")
        self._pending: list[tuple] = []
        self.events = 0

    def event(self, now_us: int, kind: str, *fields: object, data: bytes = b"") -> None:
        """One event: its time, kind and fields (ints, strings and tuples of them: things
        with a stable ``repr``), and the size of the bytes it carried, if any."""
        pending = self._pending
        pending.append((now_us, kind, fields, len(data)))
        if len(pending) >= 4096:  # BATCH
            self._drain()

    def _drain(self) -> None:
        self.events += len(self._pending)
        self._hash.update(repr(self._pending).encode())
        self._pending = []

    def hexdigest(self) -> str:
        self._drain()
        return self._hash.copy().hexdigest()
