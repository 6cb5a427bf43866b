"""Where feeds live: the ``FeedStore`` adapter interface and its in-memory implementation.

The store is deliberately dumb: it keeps verified entries per origin, contiguous from seq 1,
and answers range reads, heads and the version vector. Verification happens before
``append`` (see ``_feeds.Feeds``). The store enforces only its own invariant, contiguity,
and raises ``StorageError`` when a caller breaks it. Every implementation (the SQLite one
lives in node/) must pass the conformance suite in ``gossip.testing`` unchanged.

Durability is explicit. Writes (``append``, ``truncate``, ``quarantine``, ``put_meta``) may
be buffered and are visible to reads at once; ``flush`` makes every write so far durable,
all of them or none (one flush for many commits: group commit). ``discard_unflushed``
forgets the writes since the last flush, which is what a crash does and what a failed flush
must do so that the store and the engine above it agree again. A small key-value area
(``get_meta``/``put_meta``) keeps what the engine must remember across restarts besides the
feeds (where its own entries are held).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
from dataclasses import dataclass

from crdt_types import StorageError

__all__ = ["FeedStore", "MemoryFeedStore", "Head", "MAX_READ", "MAX_META_BYTES", "MAX_SNAPSHOT_BYTES"]

# Upper bound on one range read: a batch for a session is far smaller than this.
MAX_READ = 10_000
# One meta value: the ack table of a chain's devices is a few KiB; a snapshot (node/) is
# stored elsewhere, so anything near this limit is a bug, not data.
MAX_META_BYTES = 1024 * 1024
MAX_META_NAME_CHARS = 64
# A replica snapshot is kept in the meta area in chunks of MAX_META_BYTES. A shop's state
# (every sale record it ever made, its stock, balances, orders) stays far below this; past
# it, snapshots are refused and a restart replays the feeds instead.
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: bytes


class FeedStore(abc.ABC):
    """Durable, append-only storage of verified feed entries."""

    @abc.abstractmethod
    def append(self, origin: int, seq: int, entry_hash: bytes, data: bytes) -> None:
        """Store entry ``seq`` of ``origin``; it must be exactly head + 1."""

    @abc.abstractmethod
    def get(self, origin: int, seq: int) -> bytes | None:
        """The encoded entry, or None."""

    @abc.abstractmethod
    def read(self, origin: int, first: int, last: int | None = None, *, limit: int = MAX_READ) -> list[bytes]:
        """Entries ``first..last`` (inclusive, last defaults to the head), at most ``limit``."""

    @abc.abstractmethod
    def head(self, origin: int) -> Head | None:
        """Highest seq and its hash, or None for an origin never seen."""

    @abc.abstractmethod
    def heads(self) -> dict[int, Head]:
        """Every origin's head."""

    @abc.abstractmethod
    def quarantine(self, origin: int, evidence: tuple[bytes, bytes]) -> None:
        """Mark ``origin`` as forked, keeping the two conflicting entries as evidence."""

    @abc.abstractmethod
    def quarantined(self) -> dict[int, tuple[bytes, bytes]]:
        """Quarantined origins and their evidence."""

    @abc.abstractmethod
    def truncate(self, origin: int, last_seq: int) -> int:
        """Remove ``origin``'s entries after ``last_seq`` (a revocation cutoff); returns how many."""

    @abc.abstractmethod
    def get_meta(self, name: str) -> bytes | None:
        """The value stored under ``name``, or None."""

    @abc.abstractmethod
    def put_meta(self, name: str, value: bytes) -> None:
        """Store ``value`` under ``name`` (replacing any earlier value)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every write so far durable, all or none.

        Raises:
            StorageError: nothing new became durable; call ``discard_unflushed``.
        """

    @abc.abstractmethod
    def discard_unflushed(self) -> None:
        """Forget every write since the last successful flush (what a crash would lose)."""

    @property
    @abc.abstractmethod
    def dirty(self) -> bool:
        """True when there are writes not yet flushed."""

    def version_vector(self) -> dict[int, int]:
        """origin -> highest contiguous seq."""
        return {origin: head.seq for origin, head in self.heads().items()}

    def save_snapshot(self, data: bytes) -> None:
        """Keep ``data`` (the engine's replica snapshot) with the next flush, replacing the last.

        It is written through ``put_meta`` in chunks, so every store keeps it with the same
        all-or-nothing flush as the entries it was taken after.

        Raises:
            StorageError: larger than ``MAX_SNAPSHOT_BYTES``.
        """
        if not isinstance(data, bytes) or len(data) > MAX_SNAPSHOT_BYTES:
            raise StorageError(f"a snapshot is bytes of at most {MAX_SNAPSHOT_BYTES}")
        chunks = [data[i:i + MAX_META_BYTES] for i in range(0, len(data), MAX_META_BYTES)] or [b""]
        for index, chunk in enumerate(chunks):
            self.put_meta(f"snapshot.{index}", chunk)
        digest = hashlib.blake2b(data, digest_size=32).digest()
        self.put_meta("snapshot", len(chunks).to_bytes(4, "big") + digest)

    def load_snapshot(self) -> bytes | None:
        """The last snapshot saved, or None.

        Raises:
            StorageError: a snapshot is recorded but its chunks are missing or do not match.
        """
        head = self.get_meta("snapshot")
        if head is None:
            return None
        if len(head) != 36:
            raise StorageError("the stored snapshot's header is corrupt")
        count, digest = int.from_bytes(head[:4], "big"), head[4:]
        if count * MAX_META_BYTES > MAX_SNAPSHOT_BYTES + MAX_META_BYTES:
            raise StorageError(f"the stored snapshot claims {count} chunks")
        parts = [self.get_meta(f"snapshot.{index}") for index in range(count)]
        if any(part is None for part in parts):
            raise StorageError("the stored snapshot is missing chunks")
        data = b"".join(parts)
        if not hmac.compare_digest(hashlib.blake2b(data, digest_size=32).digest(), digest):
            raise StorageError("the stored snapshot does not match its digest")
        return data

    @staticmethod
    def _check_append(current: Head | None, origin: int, seq: int, entry_hash: bytes, data: bytes) -> None:
        expected = 1 if current is None else current.seq + 1
        if seq != expected:
            raise StorageError(f"feed {origin}: append of seq {seq}, expected {expected}")
        if not isinstance(entry_hash, bytes) or len(entry_hash) != 32 or not isinstance(data, bytes):
            raise StorageError("append needs a 32-byte hash and the encoded entry")

    @staticmethod
    def _check_range(first: int, last: int | None, limit: int) -> None:
        if first < 1 or (last is not None and last < first - 1) or not 0 < limit <= MAX_READ:
            raise StorageError(f"bad range read first={first} last={last} limit={limit}")

    @staticmethod
    def _check_meta(name: str, value: bytes | None = b"") -> None:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_META_NAME_CHARS:
            raise StorageError(f"a meta name is a 1..{MAX_META_NAME_CHARS} char string, got {name!r}")
        if not isinstance(value, bytes) or len(value) > MAX_META_BYTES:
            raise StorageError(f"a meta value is at most {MAX_META_BYTES} bytes")

    @staticmethod
    def _check_truncate(origin: int, last_seq: int) -> None:
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise StorageError(f"feed {origin}: truncate after seq {last_seq!r}, expected an int >= 0")


class MemoryFeedStore(FeedStore):
    """A FeedStore in a dict: for tests, simulations and relays that keep nothing on disk.

    It keeps the same durability protocol as a disk store: writes since the last ``flush``
    are undone by ``discard_unflushed``, and ``crashed()`` gives the store as a crash would
    leave it, which is how the simulator restarts a node.
    """

    def __init__(self) -> None:
        self._feeds: dict[int, list[tuple[bytes, bytes]]] = {}  # origin -> [(hash, data)]
        self._quarantined: dict[int, tuple[bytes, bytes]] = {}
        self._meta: dict[str, bytes] = {}
        # Since the last flush, oldest first: ("append", origin) | ("truncate", origin, removed)
        # | ("quarantine", origin) | ("meta", name, old value or None).
        self._undo: list[tuple] = []

    def append(self, origin: int, seq: int, entry_hash: bytes, data: bytes) -> None:
        self._check_append(self.head(origin), origin, seq, entry_hash, data)
        self._feeds.setdefault(origin, []).append((entry_hash, data))
        self._undo.append(("append", origin))

    def get(self, origin: int, seq: int) -> bytes | None:
        feed = self._feeds.get(origin, ())
        return feed[seq - 1][1] if 1 <= seq <= len(feed) else None

    def read(self, origin: int, first: int, last: int | None = None, *, limit: int = MAX_READ) -> list[bytes]:
        self._check_range(first, last, limit)
        feed = self._feeds.get(origin, [])
        stop = len(feed) if last is None else min(last, len(feed))
        return [data for _, data in feed[first - 1:min(stop, first - 1 + limit)]]

    def head(self, origin: int) -> Head | None:
        feed = self._feeds.get(origin)
        return Head(len(feed), feed[-1][0]) if feed else None

    def heads(self) -> dict[int, Head]:
        return {origin: Head(len(feed), feed[-1][0]) for origin, feed in self._feeds.items() if feed}

    def version_vector(self) -> dict[int, int]:
        return {origin: len(feed) for origin, feed in self._feeds.items() if feed}

    def quarantine(self, origin: int, evidence: tuple[bytes, bytes]) -> None:
        if origin not in self._quarantined:
            self._quarantined[origin] = evidence
            self._undo.append(("quarantine", origin))

    def quarantined(self) -> dict[int, tuple[bytes, bytes]]:
        return dict(self._quarantined)

    def truncate(self, origin: int, last_seq: int) -> int:
        self._check_truncate(origin, last_seq)
        feed = self._feeds.get(origin, [])
        if last_seq >= len(feed):
            return 0
        removed = feed[last_seq:]
        del feed[last_seq:]
        self._undo.append(("truncate", origin, removed))
        return len(removed)

    def get_meta(self, name: str) -> bytes | None:
        self._check_meta(name)
        return self._meta.get(name)

    def put_meta(self, name: str, value: bytes) -> None:
        self._check_meta(name, value)
        self._undo.append(("meta", name, self._meta.get(name)))
        self._meta[name] = value

    def flush(self) -> None:
        self._undo.clear()

    def discard_unflushed(self) -> None:
        while self._undo:
            self._revert(self._undo.pop())

    @property
    def dirty(self) -> bool:
        return bool(self._undo)

    def crashed(self) -> "MemoryFeedStore":
        """A copy holding exactly what was durable: what a restart after a crash finds."""
        copy = MemoryFeedStore()
        copy._feeds = {origin: list(feed) for origin, feed in self._feeds.items()}
        copy._quarantined, copy._meta = dict(self._quarantined), dict(self._meta)
        copy._undo = list(self._undo)
        copy.discard_unflushed()
        return copy

    def _revert(self, change: tuple) -> None:
        what, where = change[0], change[1]
        if what == "append":
            self._feeds[where].pop()
        elif what == "truncate":
            self._feeds.setdefault(where, []).extend(change[2])
        elif what == "quarantine":
            del self._quarantined[where]
        elif change[2] is None:
            del self._meta[where]
        else:
            self._meta[where] = change[2]
