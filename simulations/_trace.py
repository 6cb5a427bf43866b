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
import marshal

__all__ = ["Trace", "SEND", "DELIVER"]

# The two events of every message are recorded as flat tuples of ints (time, kind,
# connection, direction, size) and hashed in batches through marshal: a fraction of a
# repr's cost per event, and these are most of a run's events. Format version 2 writes
# no back-references (version 3 and later mark objects by their reference count, which
# is not part of a run), so the same events give the same bytes.
SEND, DELIVER = 1, 2
_MARSHAL_VERSION = 2


class Trace:
    """Feed events in with ``event`` (or, for messages, append to ``pending``); ``hexdigest()`` at the end."""

    __slots__ = ("_hash", "pending", "events")

    BATCH = 4096  # events hashed together: one update per batch, not per event

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=32, person=b"tillmesh-sim")
        # Message events not hashed yet: the network's hot path appends its tuples here
        # itself and calls ``drain`` once BATCH are waiting. Emptied in place, never replaced.
        self.pending: list[tuple[int, ...]] = []
        self.events = 0

    def event(self, now_us: int, kind: str, *fields: object, data: bytes = b"") -> None:
        """One event: its time, kind and fields (ints, strings and tuples of them: things
        with a stable ``repr``), and the size of the bytes it carried, if any. Rarer than
        messages: hashed at once, after the message events before it."""
        self.drain()
        self.events += 1
        self._hash.update(repr((now_us, kind, fields, len(data))).encode())

    def drain(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.events += len(pending)
        self._hash.update(marshal.dumps(pending, _MARSHAL_VERSION))
        pending.clear()

    def hexdigest(self) -> str:
        self.drain()
        return self._hash.copy().hexdigest()
