"""Tests for gossip/_feeds.py and gossip/_entry.py: what ingest accepts, what it refuses, and
that a refusal stores nothing.

Two nodes are wired together directly (``reader.feeds.ingest(writer_entry.encode())``):
no sockets, no sleeps.
"""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from crdt_types import InvalidInput, Replica, TillmeshError, Timestamp, canonical
from gossip import (
    AUTHORITY_NUMBER,
    MAX_ENTRY_BYTES,
    BadSignature,
    ChainBroken,
    DecryptionError,
    Entry,
    EpochUnavailable,
    ForkDetected,
    Keyring,
    MalformedData,
    MemoryFeedStore,
    Quarantined,
    Revoked,
    SeqGap,
    UnknownOrigin,
)
from gossip._entry import ENTRY_VERSION, GENESIS_HASH, MAX_DEPS
from gossip._feeds import Feeds, Ingested

from .helpers import T0, Device, Network, flip, make_entry, member_entry, resign, rng, snapshot, stock_group

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class World:
    """An authority, two member tills, a relay, and a writer's first three entries."""

    def __init__(self, seed: int = 7, expires_ms: int | None = None) -> None:
        self.net = Network(seed=seed)
        self.writer = self.net.device("till-1", expires_ms=expires_ms)
        self.reader = self.net.device("till-2")
        self.relay = self.net.device("cloud", ("relay",))
        self.random_bytes = rng(seed + 1000)
        self.entries = [self.writer.write(self.random_bytes, T0 + i, amount=i + 1) for i in range(3)]
        self.encoded = [e.encode() for e in self.entries]

    @property
    def origin(self) -> int:
        return self.writer.number


@pytest.fixture
def world() -> World:
    return World()


def refused(feeds: Feeds, data, error: type, now_ms: int = T0):
    """Ingest must raise ``error`` and change nothing observable in the store."""
    before = snapshot(feeds.store)
    with pytest.raises(error) as info:
        feeds.ingest(data)
    assert snapshot(feeds.store) == before
    return info.value


# -- the happy path ----------------------------------------------------------------------------


def test_member_ingests_and_opens_the_same_group(world):
    replica = Replica(world.reader.number)
    for i, data in enumerate(world.encoded):
        result = world.reader.feeds.ingest(data)
        assert isinstance(result, Ingested)
        assert result.new
        assert result.entry == world.entries[i]
        assert result.group is not None and result.group.writer == world.origin
        replica.merge(result.group)
    assert replica.digest() == world.writer.replica.digest()
    assert replica.value(("stock", "b1", "sku")) == 1 + 2 + 3
    assert world.reader.store.version_vector()[world.origin] == 3
    assert world.reader.store.read(world.origin, 1) == world.encoded


def test_opened_group_equals_the_written_group_for_every_type():
    net = Network(seed=3)
    writer, reader = net.device("till-1", ("cashier", "manager")), net.device("till-2")
    replica = Replica(writer.number)
    with replica.transaction(Timestamp(T0, 2)) as tx:
        tx.add(("stock", "b1", "sku-1"), -2)
        tx.set(("price", "sku-1"), 1299)
        tx.set(("member", "m1", "name"), "Ada")
        tx.increment(("member", "m1", "balance"), 5000)
        tx.decrement(("member", "m1", "balance"), 1200)
        tx.record(("sale", "s-1"), {"lines": [["sku-1", 2, 1299]], "total": 2598})
        tx.set_field(("order", "o-1"), "table", "7")
    entry = writer.feeds.append_local(tx.delta, deps={5: 3, 2: 1}, random_bytes=net.random_bytes)
    assert entry.deps == ((2, 1), (5, 3))
    result = reader.feeds.ingest(entry.encode())
    assert result.group == tx.delta
    other = Replica(reader.number)
    other.merge(result.group)
    assert other.digest() == replica.digest()
    assert reader.feeds.open(entry) == tx.delta


def test_writer_store_holds_its_own_entries(world):
    store = world.writer.store
    assert store.version_vector()[world.origin] == 3
    assert store.read(world.origin, 1) == world.encoded
    assert [e.seq for e in world.entries] == [1, 2, 3]
    assert world.entries[0].prev_hash == GENESIS_HASH
    assert world.entries[1].prev_hash == world.entries[0].hash
    assert store.head(world.origin).hash == world.entries[2].hash


def test_entry_encode_decode_round_trip(world):
    for entry, data in zip(world.entries, world.encoded):
        assert Entry.decode(data) == entry
        assert Entry.decode(data).encode() == data
        assert Entry.decode(bytearray(data)) == entry
        assert Entry.decode(memoryview(data)) == entry


def test_same_entry_twice_is_a_no_op(world):
    feeds = world.reader.feeds
    assert feeds.ingest(world.encoded[0]).new
    before = snapshot(feeds.store)
    again = feeds.ingest(world.encoded[0])
    assert again.new is False
    assert again.group is None
    assert again.entry == world.entries[0]
    assert snapshot(feeds.store) == before
    # an old duplicate, behind the head, is also a no-op
    feeds.ingest(world.encoded[1])
    feeds.ingest(world.encoded[2])
    assert feeds.ingest(world.encoded[0]).new is False
    assert feeds.store.quarantined() == {}


def test_own_entries_echoed_back_are_no_ops(world):
    for data in world.encoded:
        assert world.writer.feeds.ingest(data).new is False


# -- refusals: tampering -----------------------------------------------------------------------


def test_flipped_byte_in_body_is_bad_signature(world):
    data = world.encoded[0]
    at = data.index(world.entries[0].body) + 30
    refused(world.reader.feeds, flip(data, at), BadSignature)
    refused(world.relay.feeds, flip(data, at), BadSignature)


@pytest.mark.parametrize("offset", [0, 17, 31])
def test_flipped_byte_in_header_is_bad_signature(world, offset):
    second = world.encoded[1]
    world.reader.feeds.ingest(world.encoded[0])
    at = second.index(world.entries[1].prev_hash) + offset
    refused(world.reader.feeds, flip(second, at), BadSignature)


@pytest.mark.parametrize("field,value", [("seq", 2), ("epoch", 1), ("deps", ((3, 1),))])
def test_altered_header_field_is_bad_signature(world, field, value):
    altered = replace(world.entries[0], **{field: value}).encode()
    error = refused(world.reader.feeds, altered, BadSignature)
    assert isinstance(error, TillmeshError)


@pytest.mark.parametrize("offset", [0, 31, 63])
def test_flipped_byte_in_signature_is_bad_signature(world, offset):
    data = world.encoded[0]
    at = data.index(world.entries[0].signature) + offset
    refused(world.reader.feeds, flip(data, at), BadSignature)


def test_signature_by_another_device_is_bad_signature(world):
    forged = resign(world.entries[0], world.reader.key)
    refused(world.reader.feeds, forged.encode(), BadSignature)
    refused(world.relay.feeds, forged.encode(), BadSignature)
    # nor may the authority sign for a device
    refused(world.reader.feeds, resign(world.entries[0], world.net.authority.key).encode(), BadSignature)


def test_entry_for_the_authority_feed_signed_by_a_device_is_bad_signature(world):
    fake = make_entry(world.writer.key, AUTHORITY_NUMBER, len(world.net.authority.feed) + 1,
                      world.net.authority.feed[-1].hash, epoch=None, epoch_key=None, payload=canonical([]))
    refused(world.reader.feeds, fake.encode(), BadSignature)


# -- refusals: position in the feed -------------------------------------------------------------


def test_seq_gap(world):
    refused(world.reader.feeds, world.encoded[1], SeqGap)
    refused(world.reader.feeds, world.encoded[2], SeqGap)
    world.reader.feeds.ingest(world.encoded[0])
    refused(world.reader.feeds, world.encoded[2], SeqGap)
    assert world.reader.feeds.ingest(world.encoded[1]).new


def test_wrong_prev_hash_is_chain_broken(world):
    world.reader.feeds.ingest(world.encoded[0])
    _, group = stock_group(world.origin)
    for prev in (GENESIS_HASH, b"\x01" * 32, world.entries[1].hash):
        entry = member_entry(world.writer, 2, prev, group=group)
        refused(world.reader.feeds, entry.encode(), ChainBroken)
    # a first entry must chain to the genesis hash
    refused(world.relay.feeds, member_entry(world.writer, 1, b"\x02" * 32, group=group).encode(), ChainBroken)


def test_unknown_origin(world):
    stranger = world.net.new_key()
    _, group = stock_group(42)
    entry = make_entry(stranger, 42, 1, GENESIS_HASH, epoch=0, epoch_key=world.writer.keyring.epoch_key(0),
                       payload=canonical(group.to_wire()))
    refused(world.reader.feeds, entry.encode(), UnknownOrigin)
    refused(world.relay.feeds, entry.encode(), UnknownOrigin)


def test_device_enrolled_later_is_unknown_until_its_certificate_arrives(world):
    late = world.net.device("till-late")
    entry = late.write(world.random_bytes, T0)
    refused(world.reader.feeds, entry.encode(), UnknownOrigin)
    world.net.sync_authority(world.reader)
    assert world.reader.feeds.ingest(entry.encode()).new


def test_origin_revoked_before_that_seq(world):
    world.net.authority.revoke(world.origin, 1, T0 + 50)
    world.net.sync_authority(world.reader)
    world.net.sync_authority(world.relay)
    for device in (world.reader, world.relay):
        assert device.feeds.ingest(world.encoded[0]).new  # within the cutoff
        error = refused(device.feeds, world.encoded[1], Revoked, T0 + 60)
        assert str(world.origin) in str(error)
        refused(device.feeds, world.encoded[2], Revoked, T0 + 60)


def test_origin_revoked_with_cutoff_zero_has_nothing_accepted(world):
    world.net.authority.revoke(world.origin, 0, T0 + 50)
    world.net.sync_authority(world.reader)
    refused(world.reader.feeds, world.encoded[0], Revoked, T0 + 60)


def test_an_expired_certificate_does_not_void_its_entries():
    # Validity is a function of the entry and the authority feed only: entries written
    # before an expiry and synced after it are taken in everywhere (defect 4 of the review).
    world = World(seed=8, expires_ms=T0 + 1000)
    assert world.reader.feeds.ingest(world.encoded[0]).new
    assert world.relay.feeds.ingest(world.encoded[0]).new


# -- refusals: size and shape ------------------------------------------------------------------


def _sized_entry(world: World, size: int) -> bytes:
    """An encoded entry of exactly ``size`` bytes (the body padded to fit)."""
    base = world.entries[0]
    entry = replace(base, body=b"")
    for _ in range(3):  # the body's length prefix grows with the body
        entry = replace(base, body=bytes(max(0, size - len(entry.encode()) + len(entry.body))))
    data = entry.encode()
    assert len(data) == size
    return data


def test_entry_size_boundary(world):
    at_limit = _sized_entry(world, MAX_ENTRY_BYTES)
    assert len(Entry.decode(at_limit).body) > MAX_ENTRY_BYTES - 200  # the limit itself is allowed
    refused(world.reader.feeds, at_limit, BadSignature)  # ...and then goes on to be verified
    over = _sized_entry(world, MAX_ENTRY_BYTES + 1)
    with pytest.raises(MalformedData):
        Entry.decode(over)
    refused(world.reader.feeds, over, MalformedData)
    refused(world.relay.feeds, over, MalformedData)


def test_oversized_entry_properly_signed_is_malformed(world):
    entry = member_entry(world.writer, 1, obj=[1, 0, [[[1, "b1", "s"], 1, "x" * MAX_ENTRY_BYTES]]])
    data = entry.encode()
    assert len(data) > MAX_ENTRY_BYTES
    refused(world.reader.feeds, data, MalformedData)


def test_append_local_refuses_an_oversized_group(world):
    replica = Replica(world.writer.number)
    with replica.transaction(Timestamp(T0)) as tx:
        for i in range(5):
            tx.record(("sale", f"s-{i}"), {"note": "n" * 4000, "lines": ["l" * 4000] * 3})
    before = snapshot(world.writer.store)
    with pytest.raises(InvalidInput):
        world.writer.feeds.append_local(tx.delta, random_bytes=world.random_bytes)
    assert snapshot(world.writer.store) == before


@pytest.mark.parametrize("cut", [1, 2, 10, 64, 100])
def test_truncated_entry_is_malformed(world, cut):
    refused(world.reader.feeds, world.encoded[0][:-cut], MalformedData)
    refused(world.reader.feeds, world.encoded[0][:cut], MalformedData)


@pytest.mark.parametrize("garbage", [
    b"", b"\x00", b"\xff", b"\x9f", b"garbage", bytes(100), b"\xa0",
    cbor2.dumps([]), cbor2.dumps([1] * 8), cbor2.dumps({"origin": 1}),
    cbor2.dumps(1.5), cbor2.dumps(2**70),
    b"\x81" * 5000 + b"\x00",            # deeply nested arrays
    b"\xc1\x00",                          # a CBOR semantic tag (epoch time)
])
def test_garbage_is_malformed(world, garbage):
    refused(world.reader.feeds, garbage, MalformedData)
    with pytest.raises(MalformedData):
        Entry.decode(garbage)


@pytest.mark.parametrize("data", [None, "text", 12, [1, 2]])
def test_non_bytes_is_malformed(world, data):
    refused(world.reader.feeds, data, MalformedData)


def test_trailing_bytes_are_malformed(world):
    refused(world.reader.feeds, world.encoded[0] + b"\x00", MalformedData)
    refused(world.reader.feeds, world.encoded[0] + world.encoded[1], MalformedData)


def test_non_canonical_encoding_is_malformed(world):
    # the same entry, with its version written as a two-byte integer instead of one byte
    data = world.encoded[0]
    assert data[:2] == bytes([0x88, ENTRY_VERSION])
    long_form = data[:1] + bytes([0x18, ENTRY_VERSION]) + data[2:]
    assert cbor2.loads(long_form) == cbor2.loads(data)
    refused(world.reader.feeds, long_form, MalformedData)


def _fields(world: World) -> list:
    return cbor2.loads(world.encoded[0])


@pytest.mark.parametrize("index,value", [
    (0, 2), (0, "1"), (1, -1), (1, 2**21), (1, True), (2, 0), (2, 2**60), (2, "1"),
    (3, bytes(31)), (3, None), (4, -1), (4, "0"), (4, 2**21),
    (5, [[1]]), (5, [[2, 0]]), (5, [[2, 1], [1, 1]]), (5, [[1, 1], [1, 2]]), (5, [[1, 1], [1, 1]]),
    (5, [[i, 1] for i in range(MAX_DEPS + 1)]), (5, {}),
    (6, "body"), (6, bytes(39)), (7, bytes(63)), (7, None),
])
def test_malformed_fields(world, index, value):
    fields = _fields(world)
    fields[index] = value
    data = canonical(fields)
    refused(world.reader.feeds, data, MalformedData)


def test_max_deps_is_allowed(world):
    fields = _fields(world)
    fields[5] = [[i, 1] for i in range(MAX_DEPS)]
    entry = Entry.decode(canonical(fields))
    assert len(entry.deps) == MAX_DEPS


# -- refusals: contents (signed by a certified device, but wrong inside) --------------------------


def test_unsealed_device_entry_is_refused_by_members(world):
    _, group = stock_group(world.origin)
    entry = make_entry(world.writer.key, world.origin, 1, GENESIS_HASH, epoch=None, epoch_key=None,
                       payload=canonical(group.to_wire()))
    refused(world.reader.feeds, entry.encode(), MalformedData)


def test_body_sealed_under_the_wrong_key_is_a_decryption_error(world):
    _, group = stock_group(world.origin)
    entry = make_entry(world.writer.key, world.origin, 1, GENESIS_HASH, epoch=0, epoch_key=bytes(32),
                       payload=canonical(group.to_wire()))
    refused(world.reader.feeds, entry.encode(), DecryptionError)


@pytest.mark.parametrize("obj", [
    None, 1, [], [1, 0], [1, -1, []], [1, 0, [[["nope"], 1, 1]]], [0, 0, []], [1, 0, [[[1, "b1", "s"], -3, 1]]],
])
def test_body_that_is_not_a_delta_group_is_malformed(world, obj):
    # (a newer format version, key kind or type code is not malformed: see the test below)
    entry = member_entry(world.writer, 1, obj=obj)
    refused(world.reader.feeds, entry.encode(), MalformedData)


def test_body_that_is_not_cbor_is_malformed(world):
    keyring = world.writer.keyring
    entry = make_entry(world.writer.key, world.origin, 1, GENESIS_HASH, epoch=0, epoch_key=keyring.epoch_key(0),
                       payload=b"\xff\xfe not cbor")
    refused(world.reader.feeds, entry.encode(), MalformedData)


def test_entry_sealed_under_an_epoch_the_member_does_not_hold():
    world = World(seed=9)
    # till-3 is revoked, which rolls epoch 1; the writer learns it, the reader has not yet
    _, victim = world.net.enroll("till-3")
    world.net.authority.revoke(victim, 0, T0)
    world.net.sync_authority(world.writer)
    entry = world.writer.write(world.random_bytes, T0 + 100)
    assert entry.epoch == 1
    world.reader.feeds.ingest(world.encoded[0])
    world.reader.feeds.ingest(world.encoded[1])
    world.reader.feeds.ingest(world.encoded[2])
    refused(world.reader.feeds, entry.encode(), EpochUnavailable)
    with pytest.raises(EpochUnavailable):
        world.reader.feeds.open(entry)
    world.net.sync_authority(world.reader)  # once the grant arrives, it goes through
    assert world.reader.feeds.ingest(entry.encode()).new


def test_revoked_member_cannot_read_the_new_epoch():
    world = World(seed=10)
    world.net.authority.revoke(world.reader.number, 10, T0)
    world.net.sync_authority(world.writer)
    world.net.sync_authority(world.reader)
    entry = world.writer.write(world.random_bytes, T0 + 100)
    for data in world.encoded:
        assert world.reader.feeds.ingest(data).new  # epoch 0: it had that key
    refused(world.reader.feeds, entry.encode(), EpochUnavailable)


def test_device_enrolled_later_reads_feeds_written_before_a_roll():
    # DESIGN: "Each epoch's key is sealed to every member device". Entries written under
    # epoch 0 stay in the feed forever; a till enrolled after epoch 1 must be able to
    # ingest them, or it can never sync the feeds of its peers past them.
    world = World(seed=12)
    _, victim = world.net.enroll("till-3")
    world.net.authority.revoke(victim, 0, T0)
    late = world.net.device("till-late")
    assert late.keyring.is_member
    for data in world.encoded:
        assert late.feeds.ingest(data).new


# -- forks -------------------------------------------------------------------------------------


def forked(world: World) -> tuple[Device, list[bytes], list[bytes]]:
    """The writer's key on two stores: two valid, different feeds for the same origin."""
    twin = Device(world.writer.key, world.origin, world.writer.keyring,
                  Feeds(world.writer.keyring, MemoryFeedStore()))
    other = [twin.write(world.random_bytes, T0 + i, amount=10 + i).encode() for i in range(3)]
    return twin, world.encoded, other


def test_fork_is_detected_with_evidence_and_quarantines_the_origin(world):
    _, ours, theirs = forked(world)
    feeds = world.reader.feeds
    assert feeds.ingest(ours[0]).new
    with pytest.raises(ForkDetected) as info:
        feeds.ingest(theirs[0])
    error = info.value
    assert (error.origin, error.seq) == (world.origin, 1)
    assert error.evidence == (ours[0], theirs[0])
    assert Entry.decode(error.evidence[0]).seq == Entry.decode(error.evidence[1]).seq == 1
    assert feeds.store.quarantined() == {world.origin: (ours[0], theirs[0])}
    assert feeds.store.get(world.origin, 1) == ours[0]  # the first one seen stays
    assert feeds.store.version_vector()[world.origin] == 1
    # later entries from either branch are refused, the same entry too
    refused(feeds, ours[1], Quarantined)
    refused(feeds, theirs[1], Quarantined)
    refused(feeds, ours[0], Quarantined)
    # other origins are unaffected
    other = world.reader.write(world.random_bytes, T0)
    assert feeds.store.get(world.reader.number, 1) == other.encode()


def test_fork_behind_the_head_is_detected(world):
    _, ours, theirs = forked(world)
    feeds = world.relay.feeds  # relays detect forks too: no data key needed
    for data in ours:
        feeds.ingest(data)
    with pytest.raises(ForkDetected) as info:
        feeds.ingest(theirs[0])
    assert info.value.seq == 1
    assert info.value.evidence == (ours[0], theirs[0])
    assert world.origin in feeds.store.quarantined()
    assert feeds.store.read(world.origin, 1) == ours


def test_tampered_copy_at_a_held_seq_is_not_a_fork(world):
    # only a *validly signed* different entry is a fork: anyone could forge the other kind
    feeds = world.reader.feeds
    feeds.ingest(world.encoded[0])
    at = world.encoded[0].index(world.entries[0].body)
    refused(feeds, flip(world.encoded[0], at), BadSignature)
    refused(feeds, resign(world.entries[0], world.reader.key).encode(), BadSignature)
    assert feeds.store.quarantined() == {}


def test_a_copy_of_a_held_entry_is_not_verified_again(world, monkeypatch):
    # Byte for byte what the store holds was verified when it was stored: a redundant copy
    # (a peer forwarding what we have) costs a lookup, not a signature check. A different
    # entry at that seq is still verified before it can count as a fork.
    import gossip._feeds as feeds_module

    feeds = world.reader.feeds
    feeds.ingest(world.encoded[0])
    checked = []
    real = feeds_module.verify_signature
    monkeypatch.setattr(feeds_module, "verify_signature", lambda *a: (checked.append(a[3]), real(*a))[1])
    assert feeds.ingest(world.encoded[0]).new is False
    assert checked == []
    refused(feeds, flip(world.encoded[0], world.encoded[0].index(world.entries[0].body)), BadSignature)
    assert len(checked) == 1 and feeds.store.quarantined() == {}


def test_fork_error_is_an_integrity_error(world):
    _, ours, theirs = forked(world)
    world.reader.feeds.ingest(ours[0])
    with pytest.raises(TillmeshError):
        world.reader.feeds.ingest(theirs[0])


# -- relays ------------------------------------------------------------------------------------


def test_relay_verifies_and_stores_but_cannot_open(world):
    relay = world.relay
    assert not relay.keyring.is_member
    for data in world.encoded:
        result = relay.feeds.ingest(data)
        assert result.new and result.group is None
    assert relay.store.read(world.origin, 1) == world.encoded
    for entry in world.entries:
        with pytest.raises(EpochUnavailable):
            relay.feeds.open(entry)
    # no plaintext anywhere in what it stores
    plaintext = canonical(stock_group(world.origin, T0, 1)[1].to_wire())
    assert all(plaintext not in data for data in relay.store.read(world.origin, 1))
    assert all(b"sku" not in data for data in relay.store.read(world.origin, 1))
    # and a member fed by the relay gets everything
    for data in relay.store.read(world.origin, 1):
        world.reader.feeds.ingest(data)
    replica = Replica(world.reader.number)
    for data in world.reader.store.read(world.origin, 1):
        replica.merge(world.reader.feeds.open(Entry.decode(data)))
    assert replica.digest() == world.writer.replica.digest()


def test_relay_cannot_write(world):
    _, group = stock_group(world.relay.number)
    with pytest.raises(InvalidInput):
        world.relay.feeds.append_local(group, random_bytes=world.random_bytes)
    assert world.relay.store.head(world.relay.number) is None


def test_append_local_refuses_a_group_of_another_writer(world):
    _, group = stock_group(world.reader.number)
    before = snapshot(world.writer.store)
    with pytest.raises(InvalidInput):
        world.writer.feeds.append_local(group, random_bytes=world.random_bytes)
    assert snapshot(world.writer.store) == before


@pytest.mark.parametrize("deps", [{2: 0}, {2: -1}, {2**30: 1}, {"x": 1}, {2: 1, "x": 2}])
def test_append_local_refuses_bad_deps_as_invalid_input(world, deps):
    # bad deps are the caller's fault: InvalidInput, not a MalformedData about our own entry
    _, group = stock_group(world.origin)
    before = snapshot(world.writer.store)
    with pytest.raises(InvalidInput):
        world.writer.feeds.append_local(group, deps=deps, random_bytes=world.random_bytes)
    assert snapshot(world.writer.store) == before


def test_verifier_without_device_key_stores_without_opening(world):
    keyring = Keyring(world.net.authority.key.public, world.writer.keyring.network_key)
    feeds = Feeds(keyring, MemoryFeedStore())
    for entry in world.net.authority.feed:
        feeds.ingest(entry.encode())
    for data in world.encoded:
        assert feeds.ingest(data).group is None
    assert feeds.store.version_vector()[world.origin] == 3


# -- fuzzing -----------------------------------------------------------------------------------


FUZZ_WORLD = World(seed=77)


def _fresh_reader() -> Feeds:
    """A member that holds the authority feed and the writer's first entry (seq 2 comes next)."""
    keyring = FUZZ_WORLD.reader.keyring
    store = MemoryFeedStore()
    for entry in FUZZ_WORLD.net.authority.feed:
        store.append(entry.origin, entry.seq, entry.hash, entry.encode())
    feeds = Feeds(keyring, store)
    feeds.ingest(FUZZ_WORLD.encoded[0])
    return feeds


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_entry_decode_arbitrary_bytes(data):
    try:
        entry = Entry.decode(data)
    except TillmeshError:
        return
    assert entry.encode() == data


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_ingest_arbitrary_bytes(data):
    feeds = _fresh_reader()
    before = snapshot(feeds.store)
    try:
        feeds.ingest(data)
    except TillmeshError:
        assert snapshot(feeds.store) == before
        return
    raise AssertionError("arbitrary bytes were accepted as an entry")


@FUZZ
@given(index=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255),
       which=st.sampled_from([0, 1]))
def test_fuzz_ingest_single_byte_mutations(index, value, which):
    original = FUZZ_WORLD.encoded[which]  # seq 1 is held (duplicate/fork path), seq 2 is next
    index %= len(original)
    mutated = bytearray(original)
    mutated[index] = value
    mutated = bytes(mutated)
    try:
        Entry.decode(mutated)
    except TillmeshError:
        pass
    feeds = _fresh_reader()
    before = snapshot(feeds.store)
    try:
        result = feeds.ingest(mutated)
    except TillmeshError:
        assert snapshot(feeds.store) == before
        return
    # only the untouched entry may go through
    assert mutated == original
    assert result.entry == FUZZ_WORLD.entries[which]
    assert feeds.store.quarantined() == {}


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
                min_size=2, max_size=6))
def test_fuzz_ingest_multi_byte_mutations(changes):
    original = FUZZ_WORLD.encoded[1]
    mutated = bytearray(original)
    for index, value in changes:
        mutated[index % len(original)] = value
    feeds = _fresh_reader()
    before = snapshot(feeds.store)
    try:
        feeds.ingest(bytes(mutated))
    except TillmeshError:
        assert snapshot(feeds.store) == before
        return
    assert bytes(mutated) == original


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**64, max_value=2**64)
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers(0, 9), children, max_size=3),
    max_leaves=20,
)


@FUZZ
@given(obj=cbor_values)
def test_fuzz_sealed_and_signed_payloads(obj):
    # a certified device (buggy or hostile) may put anything in a correctly sealed body:
    # ingest accepts a valid delta group, stores one it cannot read yet (ops of a newer
    # version) marked as such, or refuses with a typed error, nothing else
    feeds = _fresh_reader()
    before = snapshot(feeds.store)
    writer = FUZZ_WORLD.writer
    entry = member_entry(writer, 2, FUZZ_WORLD.entries[0].hash, obj=obj)
    try:
        result = feeds.ingest(entry.encode())
    except TillmeshError:
        assert snapshot(feeds.store) == before
        return
    assert result.new
    if result.unknown_ops:
        assert result.group is None
        return
    assert result.group is not None
    Replica(FUZZ_WORLD.reader.number).merge(result.group)


@FUZZ
@given(group=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-50, 50).filter(bool)),
                      min_size=1, max_size=5, unique_by=lambda t: t[0]))
def test_fuzz_round_trip_groups(group):
    replica = Replica(FUZZ_WORLD.writer.number)
    with replica.transaction(Timestamp(T0)) as tx:
        for sku, amount in group:
            tx.add(("stock", "b1", sku), amount)
    entry = member_entry(FUZZ_WORLD.writer, 2, FUZZ_WORLD.entries[0].hash, group=tx.delta)
    result = _fresh_reader().ingest(entry.encode())
    assert result.group == tx.delta
    other = Replica(FUZZ_WORLD.reader.number)
    other.merge(result.group)
    assert other.digest() == replica.digest()


@pytest.mark.parametrize("obj", [
    [2, 0, []],  # a newer delta-group format
    [1, 0, [[[1, "b1", "s"], 99, 1]]],  # a CRDT type this version does not know
    [1, 0, [[[77, "b1"], 1, [1, 0]]]],  # a key kind this version's schema does not have
    [1, 0, [[[1, "b1", "s", "x"], 1, [1, 0]]]],  # a known kind in a shape this version lacks
])
def test_a_body_with_ops_this_version_does_not_know_is_stored_and_marked(world, obj):
    entry = member_entry(world.writer, 1, obj=obj)
    result = world.reader.feeds.ingest(entry.encode())
    assert result.new and result.unknown_ops and result.group is None
    assert world.reader.store.get(world.writer.number, 1) == entry.encode()
