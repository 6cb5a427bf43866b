"""The FeedStore conformance suite: every implementation must pass it unchanged.

Like automerge-repo's ``runStorageAdapterTests(setup)``: the tests below take a ``store``
fixture (an empty store, fresh for each test) and assume nothing but the ``FeedStore``
interface. A test module runs the suite for its implementations by importing it and building
the fixture from a registry of factories::

    from gossip.testing.feedstore_conformance import *  # noqa: F403  (the test functions)
    from gossip.testing.feedstore_conformance import store_fixture

    store = store_fixture({"sqlite": lambda tmp_path: SqliteFeedStore(tmp_path / "feeds.db")})

``store_factories`` holds the implementations of gossip/ itself (``tests/gossip/test_store.py``
runs it); a factory takes pytest's ``tmp_path`` so that on-disk stores have somewhere to live.
A store with a ``close()`` method is closed after each test; a store that can be reopened
on the same place (a ``reopen()`` method returning a new instance over the same files) is
also checked for what survives: exactly what was flushed.

It needs pytest, which only the test extras install; nothing else in gossip imports it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import pytest

from crdt_types import StorageError, TillmeshError
from gossip import MAX_READ, FeedStore, Head, MemoryFeedStore
from gossip._store import MAX_META_BYTES

StoreFactory = Callable[[Path], FeedStore]

store_factories: dict[str, StoreFactory] = {
    "memory": lambda tmp_path: MemoryFeedStore(),
}


def store_fixture(factories: dict[str, StoreFactory]):
    """A ``store`` fixture parametrized over ``factories`` (name -> factory(tmp_path))."""
    names = sorted(factories)

    @pytest.fixture(params=names, ids=names)
    def store(request, tmp_path):
        instance = factories[request.param](tmp_path)
        assert isinstance(instance, FeedStore)
        yield instance
        close = getattr(instance, "close", None)
        if callable(close):
            close()

    return store


def h(origin: int, seq: int) -> bytes:
    """A distinct 32-byte hash per (origin, seq): the store does not check hashes, only keeps them."""
    return hashlib.blake2b(f"{origin}/{seq}".encode(), digest_size=32).digest()


def d(origin: int, seq: int) -> bytes:
    """Distinct entry bytes per (origin, seq), of varying length."""
    return f"entry {origin}/{seq} ".encode() * (1 + seq % 3)


def fill(store: FeedStore, origin: int, count: int, start: int = 1) -> None:
    for seq in range(start, start + count):
        store.append(origin, seq, h(origin, seq), d(origin, seq))


def observed(store: FeedStore, origins=(0, 1, 2, 3)) -> tuple:
    return (store.heads(), store.version_vector(), store.quarantined(),
            {o: store.read(o, 1) for o in origins})


# -- an empty store ---------------------------------------------------------------------------


def test_empty_store_has_nothing(store):
    assert store.heads() == {}
    assert store.version_vector() == {}
    assert store.quarantined() == {}
    assert store.head(1) is None
    assert store.get(1, 1) is None
    assert store.read(1, 1) == []
    assert store.read(1, 1, 100) == []


# -- append: contiguous from seq 1, else StorageError and nothing stored ----------------------


def test_append_first_entry_sets_head(store):
    store.append(3, 1, h(3, 1), d(3, 1))
    assert store.head(3) == Head(1, h(3, 1))
    assert store.get(3, 1) == d(3, 1)
    assert store.heads() == {3: Head(1, h(3, 1))}
    assert store.version_vector() == {3: 1}


def test_append_contiguous_sequence(store):
    fill(store, 1, 5)
    assert store.head(1) == Head(5, h(1, 5))
    assert [store.get(1, s) for s in range(1, 6)] == [d(1, s) for s in range(1, 6)]
    assert store.version_vector() == {1: 5}


@pytest.mark.parametrize("seq", [0, 2, 5, -1])
def test_append_must_start_at_seq_1(store, seq):
    with pytest.raises(StorageError):
        store.append(1, seq, h(1, seq), d(1, seq))
    assert store.head(1) is None
    assert store.heads() == {}
    assert store.version_vector() == {}
    assert store.read(1, 1) == []


@pytest.mark.parametrize("seq", [1, 3, 5, 10, 0])
def test_append_must_be_head_plus_one(store, seq):
    fill(store, 1, 3)
    before = observed(store)
    with pytest.raises(StorageError):
        store.append(1, seq, h(1, 99), b"intruder")
    assert observed(store) == before
    assert store.get(1, 4) is None
    assert store.head(1) == Head(3, h(1, 3))


def test_append_rejects_a_bad_hash_and_stores_nothing(store):
    fill(store, 2, 1)
    before = observed(store)
    for bad_hash in (b"", bytes(31), bytes(33), "x" * 32):
        with pytest.raises(StorageError):
            store.append(2, 2, bad_hash, d(2, 2))
        assert observed(store) == before


def test_append_rejects_non_bytes_data_and_stores_nothing(store):
    before = observed(store)
    for bad_data in ("text", None, 7):
        with pytest.raises(StorageError):
            store.append(1, 1, h(1, 1), bad_data)
        assert observed(store) == before


def test_failed_append_leaves_the_next_append_possible(store):
    fill(store, 1, 2)
    with pytest.raises(StorageError):
        store.append(1, 4, h(1, 4), d(1, 4))
    store.append(1, 3, h(1, 3), d(1, 3))
    assert store.head(1) == Head(3, h(1, 3))
    assert store.read(1, 1) == [d(1, s) for s in (1, 2, 3)]


def test_storage_error_is_a_tillmesh_error(store):
    with pytest.raises(TillmeshError):
        store.append(1, 2, h(1, 2), d(1, 2))


def test_empty_entry_bytes_round_trip(store):
    store.append(1, 1, h(1, 1), b"")
    assert store.get(1, 1) == b""
    assert store.read(1, 1) == [b""]


# -- get ---------------------------------------------------------------------------------------


def test_get_outside_the_feed_is_none(store):
    fill(store, 1, 3)
    assert store.get(1, 0) is None
    assert store.get(1, -1) is None
    assert store.get(1, 4) is None
    assert store.get(2, 1) is None
    assert store.get(1, 3) == d(1, 3)


def test_get_returns_bytes(store):
    fill(store, 1, 2)
    assert type(store.get(1, 2)) is bytes


# -- read --------------------------------------------------------------------------------------


def test_read_ranges(store):
    fill(store, 1, 10)
    all_entries = [d(1, s) for s in range(1, 11)]
    assert store.read(1, 1) == all_entries
    assert store.read(1, 1, None) == all_entries
    assert store.read(1, 4) == all_entries[3:]
    assert store.read(1, 3, 5) == all_entries[2:5]
    assert store.read(1, 7, 7) == [all_entries[6]]
    assert store.read(1, 10, 10) == [all_entries[9]]
    assert all(type(x) is bytes for x in store.read(1, 1))


def test_read_empty_range_is_allowed(store):
    fill(store, 1, 3)
    assert store.read(1, 3, 2) == []
    assert store.read(1, 1, 0) == []


def test_read_past_the_head_is_clipped(store):
    fill(store, 1, 3)
    assert store.read(1, 2, 100) == [d(1, 2), d(1, 3)]
    assert store.read(1, 4) == []
    assert store.read(1, 50, 60) == []


def test_read_with_limit(store):
    fill(store, 1, 10)
    assert store.read(1, 1, limit=1) == [d(1, 1)]
    assert store.read(1, 2, limit=3) == [d(1, s) for s in (2, 3, 4)]
    assert store.read(1, 2, 3, limit=5) == [d(1, 2), d(1, 3)]
    assert store.read(1, 8, limit=5) == [d(1, s) for s in (8, 9, 10)]


@pytest.mark.parametrize("first,last,limit", [
    (0, None, MAX_READ),        # seqs start at 1
    (-3, 2, MAX_READ),
    (5, 3, MAX_READ),           # last < first - 1
    (1, None, 0),               # a limit is positive
    (1, None, -1),
    (1, None, MAX_READ + 1),    # and at most MAX_READ
    (1, 5, MAX_READ + 1),
])
def test_read_bad_ranges_raise(store, first, last, limit):
    fill(store, 1, 5)
    before = observed(store)
    with pytest.raises(StorageError):
        store.read(1, first, last, limit=limit)
    assert observed(store) == before


def test_read_bad_range_raises_even_for_an_unknown_origin(store):
    with pytest.raises(StorageError):
        store.read(9, 0)
    with pytest.raises(StorageError):
        store.read(9, 1, limit=0)


def test_read_limit_boundary_at_max_read(store):
    fill(store, 1, MAX_READ + 1)
    assert store.head(1) == Head(MAX_READ + 1, h(1, MAX_READ + 1))
    default = store.read(1, 1)
    assert len(default) == MAX_READ  # the default limit is MAX_READ
    assert default[0] == d(1, 1) and default[-1] == d(1, MAX_READ)
    assert len(store.read(1, 1, limit=MAX_READ)) == MAX_READ
    assert store.read(1, MAX_READ + 1) == [d(1, MAX_READ + 1)]
    assert store.read(1, 2, limit=MAX_READ)[-1] == d(1, MAX_READ + 1)
    with pytest.raises(StorageError):
        store.read(1, 1, limit=MAX_READ + 1)


# -- heads and version vector ------------------------------------------------------------------


def test_heads_and_version_vector_over_many_origins(store):
    counts = {origin: 1 + (origin * 7) % 5 for origin in range(0, 40)}
    # interleave appends across origins, as ingest does
    for seq in range(1, 6):
        for origin, count in counts.items():
            if seq <= count:
                store.append(origin, seq, h(origin, seq), d(origin, seq))
    assert store.version_vector() == counts
    assert store.heads() == {o: Head(c, h(o, c)) for o, c in counts.items()}
    for origin, count in counts.items():
        assert store.head(origin) == Head(count, h(origin, count))
        assert store.read(origin, 1) == [d(origin, s) for s in range(1, count + 1)]
        assert store.get(origin, count + 1) is None


def test_large_origin_numbers(store):
    big = 2**20
    store.append(big, 1, h(big, 1), d(big, 1))
    store.append(0, 1, h(0, 1), d(0, 1))
    assert store.version_vector() == {big: 1, 0: 1}
    assert store.read(big, 1) == [d(big, 1)]


def test_origins_are_independent(store):
    fill(store, 1, 3)
    fill(store, 2, 1)
    with pytest.raises(StorageError):
        store.append(2, 3, h(2, 3), d(2, 3))  # feed 1's head does not count for feed 2
    store.append(2, 2, h(2, 2), d(2, 2))
    assert store.version_vector() == {1: 3, 2: 2}
    assert store.get(2, 3) is None


def test_heads_is_a_copy(store):
    fill(store, 1, 1)
    heads = store.heads()
    heads[5] = Head(9, h(5, 9))
    heads.pop(1)
    assert store.heads() == {1: Head(1, h(1, 1))}
    vv = store.version_vector()
    vv[1] = 99
    assert store.version_vector() == {1: 1}


def test_head_is_hashable_value(store):
    fill(store, 1, 2)
    head = store.head(1)
    assert head == Head(2, h(1, 2))
    assert head.seq == 2 and head.hash == h(1, 2)
    assert {head} == {Head(2, h(1, 2))}


# -- quarantine --------------------------------------------------------------------------------


def test_quarantine_records_evidence(store):
    fill(store, 4, 2)
    evidence = (d(4, 2), b"the other entry at seq 2")
    store.quarantine(4, evidence)
    assert store.quarantined() == {4: evidence}


def test_quarantine_keeps_the_feed_readable(store):
    fill(store, 4, 2)
    fill(store, 5, 1)
    before_vv = store.version_vector()
    store.quarantine(4, (b"a", b"b"))
    assert store.version_vector() == before_vv
    assert store.read(4, 1) == [d(4, 1), d(4, 2)]
    assert store.head(4) == Head(2, h(4, 2))


def test_quarantine_of_an_origin_never_seen(store):
    store.quarantine(7, (b"x", b"y"))
    assert store.quarantined() == {7: (b"x", b"y")}
    assert store.head(7) is None
    assert store.version_vector() == {}


def test_quarantine_many_origins(store):
    for origin in range(1, 6):
        store.quarantine(origin, (d(origin, 1), d(origin, 2)))
    assert store.quarantined() == {o: (d(o, 1), d(o, 2)) for o in range(1, 6)}


def test_quarantine_twice_stays_quarantined(store):
    store.quarantine(1, (b"first", b"fork"))
    store.quarantine(1, (b"second", b"fork"))
    quarantined = store.quarantined()
    assert set(quarantined) == {1}
    evidence = quarantined[1]
    assert isinstance(evidence, tuple) and len(evidence) == 2
    assert all(isinstance(x, bytes) for x in evidence)


def test_quarantined_is_a_copy(store):
    store.quarantine(1, (b"a", b"b"))
    quarantined = store.quarantined()
    quarantined.pop(1)
    quarantined[2] = (b"c", b"d")
    assert store.quarantined() == {1: (b"a", b"b")}


def test_appends_continue_after_quarantine(store):
    # The store is dumb: refusing entries from a quarantined origin is Feeds' job.
    fill(store, 1, 1)
    store.quarantine(1, (b"a", b"b"))
    store.append(1, 2, h(1, 2), d(1, 2))
    assert store.version_vector() == {1: 2}
    assert store.quarantined() == {1: (b"a", b"b")}


__all__ = [
    "StoreFactory", "store_factories", "store_fixture",
    *sorted(name for name in list(globals()) if name.startswith("test_")),
]


# -- durability: flush, discard, and what survives ---------------------------------------------


def test_writes_are_visible_before_a_flush(store):
    fill(store, 1, 2)
    assert store.dirty
    assert store.head(1) == Head(2, h(1, 2))
    store.flush()
    assert not store.dirty
    assert store.read(1, 1) == [d(1, 1), d(1, 2)]


def test_discard_unflushed_forgets_every_write_since_the_last_flush(store):
    fill(store, 1, 2)
    store.put_meta("acks", b"one")
    store.flush()
    before = (observed(store), store.get_meta("acks"))
    fill(store, 1, 3, start=3)
    fill(store, 2, 1)
    store.quarantine(2, (b"x", b"y"))
    store.truncate(1, 1)
    store.put_meta("acks", b"two")
    store.put_meta("other", b"new")
    assert store.dirty
    store.discard_unflushed()
    assert not store.dirty
    assert (observed(store), store.get_meta("acks")) == before
    assert store.get_meta("other") is None
    fill(store, 1, 1, start=3)  # the feed goes on from the durable head
    assert store.head(1) == Head(3, h(1, 3))


def test_discard_with_nothing_unflushed_changes_nothing(store):
    fill(store, 1, 2)
    store.flush()
    before = observed(store)
    store.discard_unflushed()
    assert observed(store) == before


def test_reopened_store_holds_exactly_what_was_flushed(store):
    reopen = getattr(store, "reopen", None)
    if not callable(reopen):
        # Justified skip: a store with no files behind it has nothing to reopen; the memory
        # store's crash semantics are checked by crashed() in tests/gossip/test_store.py.
        pytest.skip("this store keeps nothing beyond the process; crashed() covers the memory store")
    fill(store, 1, 2)
    store.put_meta("acks", b"kept")
    store.flush()
    fill(store, 1, 1, start=3)
    store.put_meta("acks", b"lost")
    again = reopen()
    assert again.head(1) == Head(2, h(1, 2))
    assert again.get_meta("acks") == b"kept"


# -- truncate: a revocation cutoff removes what lies past it ------------------------------------


def test_truncate_removes_entries_past_the_cutoff(store):
    fill(store, 1, 5)
    fill(store, 2, 2)
    assert store.truncate(1, 3) == 2
    assert store.head(1) == Head(3, h(1, 3))
    assert store.read(1, 1) == [d(1, s) for s in range(1, 4)]
    assert store.get(1, 4) is None
    assert store.head(2) == Head(2, h(2, 2))
    fill(store, 1, 1, start=4)  # appends go on from the new head
    assert store.head(1) == Head(4, h(1, 4))


def test_truncate_to_zero_forgets_the_feed(store):
    fill(store, 1, 3)
    assert store.truncate(1, 0) == 3
    assert store.head(1) is None
    assert store.heads().get(1) is None
    assert store.version_vector() == {}
    fill(store, 1, 1)


def test_truncate_at_or_past_the_head_removes_nothing(store):
    fill(store, 1, 3)
    before = observed(store)
    assert store.truncate(1, 3) == 0
    assert store.truncate(1, 10) == 0
    assert store.truncate(9, 0) == 0
    assert observed(store) == before


@pytest.mark.parametrize("cutoff", [-1, "2", None, True])
def test_truncate_with_a_bad_cutoff_raises_and_removes_nothing(store, cutoff):
    fill(store, 1, 3)
    before = observed(store)
    with pytest.raises(StorageError):
        store.truncate(1, cutoff)
    assert observed(store) == before


# -- meta: a small key-value area ---------------------------------------------------------------


def test_meta_round_trips_and_replaces(store):
    assert store.get_meta("acks") is None
    store.put_meta("acks", b"\x00\x01")
    assert store.get_meta("acks") == b"\x00\x01"
    store.put_meta("acks", b"")
    assert store.get_meta("acks") == b""
    store.put_meta("snapshot-at", b"7")
    assert store.get_meta("acks") == b""


def test_meta_value_at_its_size_limit(store):
    store.put_meta("big", bytes(MAX_META_BYTES))
    assert len(store.get_meta("big")) == MAX_META_BYTES
    with pytest.raises(StorageError):
        store.put_meta("big", bytes(MAX_META_BYTES + 1))
    assert len(store.get_meta("big")) == MAX_META_BYTES


@pytest.mark.parametrize("name", ["", "x" * 65, None, 7])
def test_meta_bad_names_raise(store, name):
    with pytest.raises(StorageError):
        store.put_meta(name, b"v")
    with pytest.raises(StorageError):
        store.get_meta(name)


@pytest.mark.parametrize("value", ["text", None, 7, bytearray(b"x")])
def test_meta_bad_values_raise_and_store_nothing(store, value):
    with pytest.raises(StorageError):
        store.put_meta("acks", value)
    assert store.get_meta("acks") is None


# -- snapshots: kept in chunks with the same flush ----------------------------------------------


def test_a_snapshot_round_trips_across_chunks_and_replaces_the_last(store):
    assert store.load_snapshot() is None
    big = bytes(range(256)) * (MAX_META_BYTES // 256) + b"tail"  # just over one chunk
    store.save_snapshot(big)
    assert store.load_snapshot() == big
    store.flush()
    store.save_snapshot(b"small")
    assert store.load_snapshot() == b"small"
    store.discard_unflushed()
    assert store.load_snapshot() == big


def test_an_empty_snapshot_is_a_snapshot(store):
    store.save_snapshot(b"")
    assert store.load_snapshot() == b""


def test_a_damaged_snapshot_is_a_storage_error(store):
    store.save_snapshot(b"state" * 100)
    store.put_meta("snapshot.0", b"other")
    with pytest.raises(StorageError):
        store.load_snapshot()
