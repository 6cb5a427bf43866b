"""The feed store on disk: SQLite, with buffered writes made durable in one transaction.

Why buffer: a till's hot path is commit -> append -> flush, and the flush (an fsync) is what
costs. Writes go to memory and are visible to reads at once; ``flush`` writes everything
buffered in one ``BEGIN IMMEDIATE ... COMMIT`` under ``journal_mode=WAL`` and
``synchronous=FULL``, so one disk sync covers however many commits came in (group commit),
and a crash keeps each flush whole or not at all, never part of one.

Why layers: the runtime calls ``flush`` from a worker thread while reads may still come from
the engine's task. When a flush starts, the buffer is frozen as a layer of its own and new
writes go to a fresh one on top; reads look through the layers, newest first, then the
database. The frozen layer is dropped once its transaction has committed; if it failed, it
stays (``dirty`` stays true, a later flush retries it) until ``discard_unflushed`` drops
every layer, which is exactly "forget what was not flushed".

Each layer holds, per origin it touched, a *tail*: the seq below which the layer beneath is
still valid (``base``: lower than that layer's head after a truncation) and the entries
appended above it. That keeps ``append`` O(1) and makes a flush one ``DELETE`` per
truncated origin plus one ``executemany`` of the new rows.

The database is read through its own connection (WAL readers see only committed data and
never wait for the writer), so the reader and the writer can work at the same time; every
read is clamped to what the layers say is valid, which makes it indifferent to whether a
concurrent flush has committed yet. Heads and quarantines of the durable state are cached
in memory (loaded at open: two index probes per origin).
"""

from __future__ import annotations

import sqlite3
import threading
from itertools import chain
from pathlib import Path
from typing import Iterator

from crdt_types import StorageError
from gossip import MAX_READ, FeedStore, Head

__all__ = ["SqliteFeedStore", "SCHEMA_VERSION"]

# PRAGMA user_version of a tillmesh feed store; 0 with no tables is a new file.
SCHEMA_VERSION = 1
_MAX_ORIGIN = 2**63 - 1  # what an SQLite INTEGER holds

_SCHEMA = (
    "CREATE TABLE entries (origin INTEGER NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (origin, seq))",
    'CREATE TABLE quarantine (origin INTEGER PRIMARY KEY, "first" BLOB NOT NULL, "second" BLOB NOT NULL)',
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_TABLES = {"entries", "quarantine", "meta"}


class _Tail:
    """One origin's writes in one layer: valid below ``base``, then ``entries`` (hash, data)."""

    __slots__ = ("base", "base_hash", "entries", "cut")

    def __init__(self, base: int, base_hash: bytes | None) -> None:
        self.base = base
        self.base_hash = base_hash
        self.entries: list[tuple[bytes, bytes]] = []
        self.cut = False  # base was lowered below the layer beneath's head: delete above it

    def head(self) -> Head | None:
        seq = self.base + len(self.entries)
        if seq == 0:
            return None
        return Head(seq, self.entries[-1][0] if self.entries else self.base_hash)


class _Layer:
    """Writes not yet durable: per-origin tails, new quarantines, meta values."""

    __slots__ = ("feeds", "quarantine", "meta")

    def __init__(self) -> None:
        self.feeds: dict[int, _Tail] = {}
        self.quarantine: dict[int, tuple[bytes, bytes]] = {}
        self.meta: dict[str, bytes] = {}

    def empty(self) -> bool:
        return not (self.feeds or self.quarantine or self.meta)

    def rows(self) -> Iterator[tuple[int, int, bytes, bytes]]:
        for origin, tail in self.feeds.items():
            for seq, (entry_hash, data) in enumerate(tail.entries, tail.base + 1):
                yield origin, seq, entry_hash, data


class SqliteFeedStore(FeedStore):
    """A ``gossip.FeedStore`` in one SQLite file, with buffered writes and group commit.

    Opening creates the file and its schema when it does not exist. ``append``,
    ``truncate``, ``quarantine`` and ``put_meta`` are buffered in memory and visible to
    reads at once; ``flush`` makes all of them durable in one transaction. ``flush`` may run
    in another thread than the other methods (one flush at a time; they are serialized).

    Args:
        path: the database file (its directory must exist).
    Raises:
        StorageError: the file cannot be opened, is not an SQLite database (corrupt), or
            holds something other than a tillmesh feed store; the message names the file.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()  # layers, caches and the reader connection
        self._flush_lock = threading.Lock()  # the writer connection: one flush at a time
        self._layers: list[_Layer] = [_Layer()]  # oldest first; the last takes new writes
        self._closed = False
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        try:
            self._writer = self._connect()
            self._prepare(self._writer)
            self._reader = self._connect()
            self._reader.execute("PRAGMA query_only = 1")
            self._heads = self._load_heads()
            self._quarantined = {origin: (bytes(a), bytes(b)) for origin, a, b in
                                 self._reader.execute('SELECT origin, "first", "second" FROM quarantine')}
        except sqlite3.Error as exc:
            self._close_connections()
            raise StorageError(f"feed store {self._path}: cannot open it ({exc}); the file is unreadable, "
                               "locked by a writer, corrupt or not a database") from exc
        except StorageError:
            self._close_connections()
            raise

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; flush opens its own.
        return sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"feed store {self._path}: the file system refused WAL journaling (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        if self._schema(conn) == (0, set()):
            # A new file. Two processes creating the schema at once: one does it, under the
            # write lock (an existing store is opened without taking it: a flush may hold it).
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._schema(conn) == (0, set()):
                    for statement in _SCHEMA:
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        version, tables = self._schema(conn)
        if version != SCHEMA_VERSION or not _TABLES <= tables:
            raise StorageError(f"feed store {self._path}: not a tillmesh feed store (schema version "
                               f"{version}, tables {sorted(tables)}); expected version {SCHEMA_VERSION}")

    @staticmethod
    def _schema(conn: sqlite3.Connection) -> tuple[int, set[str]]:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        return version, {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _load_heads(self) -> dict[int, Head]:
        heads: dict[int, Head] = {}
        reader = self._reader
        origin = reader.execute("SELECT MIN(origin) FROM entries").fetchone()[0]
        while origin is not None:  # skip-scan over the primary key: O(origins * log n)
            seq, entry_hash = reader.execute("SELECT seq, hash FROM entries WHERE origin = ? "
                                             "ORDER BY seq DESC LIMIT 1", (origin,)).fetchone()
            heads[origin] = Head(seq, bytes(entry_hash))
            origin = reader.execute("SELECT MIN(origin) FROM entries WHERE origin > ?", (origin,)).fetchone()[0]
        return heads

    # -- what it is ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        return f"SqliteFeedStore({str(self._path)!r}{', closed' if self._closed else ''})"

    def __enter__(self) -> "SqliteFeedStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes (buffered) --------------------------------------------------------------------

    def append(self, origin: int, seq: int, entry_hash: bytes, data: bytes) -> None:
        """Buffer entry ``seq`` of ``origin``; visible to reads at once, durable after ``flush``.

        Args:
            origin: the feed (an int 0..2**63-1).
            seq: exactly the feed's head + 1 (1 for a new feed).
            entry_hash: the entry's 32-byte hash (kept, not checked).
            data: the encoded entry.
        Raises:
            StorageError: a seq that is not head + 1, a bad hash, data or origin, or a closed
                store; nothing is stored then.
        """
        with self._lock:
            self._check_open()
            if isinstance(origin, bool) or not isinstance(origin, int) or not 0 <= origin <= _MAX_ORIGIN:
                raise StorageError(f"an origin is an int 0..{_MAX_ORIGIN}, got {origin!r}")
            self._check_append(self._head(origin), origin, seq, entry_hash, data)
            self._writable_tail(origin).entries.append((entry_hash, data))

    def truncate(self, origin: int, last_seq: int) -> int:
        """Remove ``origin``'s entries after ``last_seq`` (buffered, like every write).

        Args:
            origin: the feed.
            last_seq: the last seq to keep (0 forgets the feed).
        Returns:
            How many entries were removed (0 when ``last_seq`` is at or past the head).
        Raises:
            StorageError: ``last_seq`` is not an int >= 0, or the store is closed or corrupt;
                nothing is removed then.
        """
        self._check_truncate(origin, last_seq)
        with self._lock:
            self._check_open()
            head = self._head(origin)
            if head is None or last_seq >= head.seq:
                return 0
            tail = self._layers[-1].feeds.get(origin)
            if tail is not None and last_seq >= tail.base:
                del tail.entries[last_seq - tail.base:]
            else:  # below what this layer added: the layers beneath (or the file) lose rows too
                below = self._entry(origin, last_seq) if last_seq else None
                if last_seq and below is None:
                    raise self._corrupt(origin, last_seq)
                tail = self._writable_tail(origin)
                tail.base, tail.base_hash, tail.entries, tail.cut = last_seq, below[0] if below else None, [], True
            return head.seq - last_seq

    def quarantine(self, origin: int, evidence: tuple[bytes, bytes]) -> None:
        """Mark ``origin`` as forked (buffered); the first evidence recorded is kept.

        Args:
            origin: the forked feed.
            evidence: the two conflicting encoded entries.
        Raises:
            StorageError: evidence that is not two byte strings, a bad origin, a closed store.
        """
        if isinstance(origin, bool) or not isinstance(origin, int) or not 0 <= origin <= _MAX_ORIGIN:
            raise StorageError(f"an origin is an int 0..{_MAX_ORIGIN}, got {origin!r}")
        if not isinstance(evidence, (tuple, list)) or len(evidence) != 2 \
                or not all(isinstance(x, (bytes, bytearray, memoryview)) for x in evidence):
            raise StorageError("quarantine evidence is a pair of encoded entries (bytes)")
        with self._lock:
            self._check_open()
            if origin in self._quarantined or any(origin in layer.quarantine for layer in self._layers):
                return
            self._layers[-1].quarantine[origin] = (bytes(evidence[0]), bytes(evidence[1]))

    def put_meta(self, name: str, value: bytes) -> None:
        """Store ``value`` under ``name`` (buffered), replacing any earlier value.

        Args:
            name: 1..64 characters.
            value: at most ``MAX_META_BYTES`` bytes.
        Raises:
            StorageError: a bad name or value, or a closed store; nothing is stored then.
        """
        self._check_meta(name, value)
        with self._lock:
            self._check_open()
            self._layers[-1].meta[name] = value

    # -- durability ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered write in one transaction and commit it (fsync, WAL).

        Writes made while a flush runs (from another thread) are not part of it; they stay
        buffered for the next one.

        Raises:
            StorageError: the transaction failed (disk full, I/O error, closed connection):
                nothing of it became durable, the buffered writes are still visible and still
                buffered; call ``discard_unflushed`` to bring reads back to the durable state
                (or ``flush`` again to retry).
        """
        with self._flush_lock:
            with self._lock:
                self._check_open()
                top = self._layers[-1]
                below = [layer for layer in self._layers[:-1] if not layer.empty()]
                self._layers = below + [top]
                if not top.empty():
                    self._layers.append(_Layer())  # new writes go on top of what is written now
                    below = below + [top]
                batch = below
            if not batch:
                return
            try:
                self._write(batch)
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"feed store {self._path}: flush failed, nothing of it was written "
                                   f"({exc})") from exc
            with self._lock:
                for layer in batch:
                    for origin, tail in layer.feeds.items():
                        head = tail.head()
                        if head is None:
                            self._heads.pop(origin, None)
                        else:
                            self._heads[origin] = head
                    for origin, evidence in layer.quarantine.items():
                        self._quarantined.setdefault(origin, evidence)
                written = set(map(id, batch))
                self._layers = [layer for layer in self._layers if id(layer) not in written] or [_Layer()]

    def _write(self, batch: list[_Layer]) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        for layer in batch:  # oldest first: each layer's writes are relative to the ones before
            cuts = [(origin, tail.base) for origin, tail in layer.feeds.items() if tail.cut]
            if cuts:
                conn.executemany("DELETE FROM entries WHERE origin = ? AND seq > ?", cuts)
            conn.executemany("INSERT INTO entries (origin, seq, hash, data) VALUES (?, ?, ?, ?)", layer.rows())
            if layer.quarantine:
                conn.executemany('INSERT OR IGNORE INTO quarantine (origin, "first", "second") VALUES (?, ?, ?)',
                                 ((o, a, b) for o, (a, b) in layer.quarantine.items()))
            if layer.meta:
                conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?) "
                                 "ON CONFLICT (name) DO UPDATE SET value = excluded.value", layer.meta.items())
        conn.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # a closed or broken connection: the transaction is gone with it

    def discard_unflushed(self) -> None:
        """Forget every write not yet flushed, including those of a failed flush.

        Reads show the durable state again, as a restart after a crash would.
        """
        with self._lock:
            self._layers = [_Layer()]

    @property
    def dirty(self) -> bool:
        """True while some write is not durable yet (buffered, or in a failed flush)."""
        with self._lock:
            return any(not layer.empty() for layer in self._layers)

    def close(self) -> None:
        """Close the database; unflushed writes are lost, as in a crash. Idempotent.

        Waits for a flush that is running in another thread.
        """
        with self._flush_lock, self._lock:
            self._closed = True
            self._layers = [_Layer()]
            self._close_connections()

    def _close_connections(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass

    def reopen(self) -> "SqliteFeedStore":
        """A new store over the same file: it holds exactly what was flushed.

        Returns:
            The new store (this one stays open; close both).
        Raises:
            StorageError: as when opening.
        """
        return SqliteFeedStore(self._path)

    # -- reads (buffered writes included) -----------------------------------------------------

    def get(self, origin: int, seq: int) -> bytes | None:
        """The encoded entry ``seq`` of ``origin``, or None outside the feed.

        Raises:
            StorageError: the store is closed, or the file is unreadable or misses the entry.
        """
        with self._lock:
            self._check_open()
            found = self._entry(origin, seq)
            return found[1] if found is not None else None

    def read(self, origin: int, first: int, last: int | None = None, *, limit: int = MAX_READ) -> list[bytes]:
        """Entries ``first..last`` of ``origin`` (inclusive; ``last`` defaults to the head).

        Args:
            first: the first seq, >= 1.
            last: the last seq (clipped to the head), >= first - 1.
            limit: at most this many entries, 1..MAX_READ.
        Returns:
            The encoded entries, in seq order.
        Raises:
            StorageError: a bad range, a closed store, or an unreadable or incomplete file.
        """
        self._check_range(first, last, limit)
        with self._lock:
            self._check_open()
            head = self._head(origin)
            if head is None:
                return []
            stop = min(head.seq if last is None else last, head.seq, first - 1 + limit)
            pieces: list[list[bytes]] = []
            for layer in reversed(self._layers):
                if stop < first:
                    break
                tail = layer.feeds.get(origin)
                if tail is not None and stop > tail.base:
                    low = max(first, tail.base + 1)
                    pieces.append([data for _, data in tail.entries[low - tail.base - 1:stop - tail.base]])
                    stop = low - 1
            if stop >= first:
                rows = self._query("SELECT data FROM entries WHERE origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                                   (origin, first, stop))
                if len(rows) != stop - first + 1:
                    raise self._corrupt(origin, first, stop)
                pieces.append([bytes(data) for (data,) in rows])
            return list(chain.from_iterable(reversed(pieces)))

    def head(self, origin: int) -> Head | None:
        """The highest seq of ``origin`` and its hash, or None for an origin never seen.

        Raises:
            StorageError: the store is closed.
        """
        with self._lock:
            self._check_open()
            return self._head(origin)

    def heads(self) -> dict[int, Head]:
        """Every origin's head (a new dict).

        Raises:
            StorageError: the store is closed.
        """
        with self._lock:
            self._check_open()
            heads = dict(self._heads)
            for layer in self._layers:
                for origin, tail in layer.feeds.items():
                    head = tail.head()
                    if head is None:
                        heads.pop(origin, None)
                    else:
                        heads[origin] = head
            return heads

    def version_vector(self) -> dict[int, int]:
        """origin -> highest contiguous seq (a new dict).

        Raises:
            StorageError: the store is closed.
        """
        return {origin: head.seq for origin, head in self.heads().items()}

    def quarantined(self) -> dict[int, tuple[bytes, bytes]]:
        """Quarantined origins and their evidence (a new dict).

        Raises:
            StorageError: the store is closed.
        """
        with self._lock:
            self._check_open()
            quarantined = dict(self._quarantined)
            for layer in self._layers:
                for origin, evidence in layer.quarantine.items():
                    quarantined.setdefault(origin, evidence)
            return quarantined

    def get_meta(self, name: str) -> bytes | None:
        """The value stored under ``name``, or None.

        Raises:
            StorageError: a bad name, a closed store, an unreadable file.
        """
        self._check_meta(name)
        with self._lock:
            self._check_open()
            for layer in reversed(self._layers):
                if name in layer.meta:
                    return layer.meta[name]
            rows = self._query("SELECT value FROM meta WHERE name = ?", (name,))
            return bytes(rows[0][0]) if rows else None

    # -- helpers (called with self._lock held) ------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"feed store {self._path} is closed")

    def _head(self, origin: int) -> Head | None:
        for layer in reversed(self._layers):
            tail = layer.feeds.get(origin)
            if tail is not None:
                return tail.head()
        return self._heads.get(origin)

    def _writable_tail(self, origin: int) -> _Tail:
        top = self._layers[-1]
        tail = top.feeds.get(origin)
        if tail is None:
            head = self._head(origin)
            tail = top.feeds[origin] = _Tail(head.seq, head.hash) if head else _Tail(0, None)
        return tail

    def _entry(self, origin: int, seq: int) -> tuple[bytes, bytes] | None:
        """(hash, data) of entry ``seq`` as the layers and the file say, or None."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            return None
        for layer in reversed(self._layers):
            tail = layer.feeds.get(origin)
            if tail is not None and seq > tail.base:
                index = seq - tail.base - 1
                return tail.entries[index] if index < len(tail.entries) else None
        head = self._heads.get(origin)
        if head is None or seq > head.seq:
            return None
        rows = self._query("SELECT hash, data FROM entries WHERE origin = ? AND seq = ?", (origin, seq))
        if not rows:
            raise self._corrupt(origin, seq)
        return bytes(rows[0][0]), bytes(rows[0][1])

    def _query(self, sql: str, params: tuple) -> list[tuple]:
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"feed store {self._path}: read failed ({exc})") from exc

    def _corrupt(self, origin: int, first: int, last: int | None = None) -> StorageError:
        where = f"seq {first}" if last is None or last == first else f"seqs {first}..{last}"
        return StorageError(f"feed store {self._path}: feed {origin} is missing {where} below its head; "
                            "the file is damaged")
