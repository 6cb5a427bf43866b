"""Where feeds live: the ``FeedStore`` adapter interface and its in-memory implementation.

The store is deliberately dumb: it keeps verified entries per origin, contiguous from seq 1,
and answers range reads, heads and the version vector. Verification happens before
``append`` (see ``_feeds.Feeds``). The store enforces only its own invariant, contiguity,
and raises ``StorageError`` when a caller breaks it. Every implementation (the SQLite one
lives in node/) must pass ``tests/gossip/feedstore_conformance.py`` unchanged.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from crdt_types import StorageError

__all__ = ["FeedStore", "MemoryFeedStore", "Head", "MAX_READ"]

# Upper bound on one range read: a batch for a session is far smaller than this.
MAX_READ = 10_000


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

    def version_vector(self) -> dict[int, int]:
        """origin -> highest contiguous seq."""
        return {origin: head.seq for origin, head in self.heads().items()}

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


class MemoryFeedStore(FeedStore):
    """A FeedStore in a dict: for tests, simulations and relays that keep nothing on disk."""

    def __init__(self) -> None:
        self._feeds: dict[int, list[bytes]] = {}
        self._heads: dict[int, Head] = {}
        self._quarantined: dict[int, tuple[bytes, bytes]] = {}

    def append(self, origin: int, seq: int, entry_hash: bytes, data: bytes) -> None:
        self._check_append(self._heads.get(origin), origin, seq, entry_hash, data)
        self._feeds.setdefault(origin, []).append(data)
        self._heads[origin] = Head(seq, entry_hash)

    def get(self, origin: int, seq: int) -> bytes | None:
        feed = self._feeds.get(origin, ())
        return feed[seq - 1] if 1 <= seq <= len(feed) else None

    def read(self, origin: int, first: int, last: int | None = None, *, limit: int = MAX_READ) -> list[bytes]:
        self._check_range(first, last, limit)
        feed = self._feeds.get(origin, [])
        stop = len(feed) if last is None else min(last, len(feed))
        return feed[first - 1:min(stop, first - 1 + limit)]

    def head(self, origin: int) -> Head | None:
        return self._heads.get(origin)

    def heads(self) -> dict[int, Head]:
        return dict(self._heads)

    def quarantine(self, origin: int, evidence: tuple[bytes, bytes]) -> None:
        self._quarantined.setdefault(origin, evidence)

    def quarantined(self) -> dict[int, tuple[bytes, bytes]]:
        return dict(self._quarantined)
