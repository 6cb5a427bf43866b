"""Shared builders for the gossip tests: a small network, entries made by hand, store snapshots.

Everything is deterministic: every random byte comes from a seeded ``random.Random``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from crdt_types import DeltaGroup, Replica, Timestamp, canonical
from gossip import (
    DeviceKey,
    Entry,
    FeedStore,
    Keyring,
    MemoryFeedStore,
    import_token,
)
from gossip._entry import ENTRY_VERSION, GENESIS_HASH, seal
from gossip._feeds import Feeds
from gossip.testing import ShopBuilder, seeded

T0 = 1_700_000_000_000  # an arbitrary "now" in ms; tests move it explicitly


def rng(seed: int):
    """A deterministic random-bytes source (``gossip.testing.seeded``)."""
    return seeded(seed)


def stock_group(number: int, ms: int = T0, amount: int = 3, sku: str = "sku") -> tuple[Replica, DeltaGroup]:
    """A one-op delta group written by device ``number`` (and the replica that wrote it)."""
    replica = Replica(number)
    with replica.transaction(Timestamp(ms)) as tx:
        tx.add(("stock", "b1", sku), amount)
    assert tx.delta is not None
    return replica, tx.delta


@dataclass
class Device:
    """One enrolled device: its key, certificate number, keyring (from its token) and feeds."""

    key: DeviceKey
    number: int
    keyring: Keyring
    feeds: Feeds
    replica: Replica = field(init=False)

    def __post_init__(self) -> None:
        self.replica = Replica(self.number)

    @property
    def store(self) -> FeedStore:
        return self.feeds.store

    def write(self, random_bytes, ms: int, amount: int = 1, sku: str = "sku") -> Entry:
        """Commit a stock change locally and append it to this device's feed."""
        with self.replica.transaction(Timestamp(ms)) as tx:
            tx.add(("stock", "b1", sku), amount)
        return self.feeds.append_local(tx.delta, random_bytes=random_bytes)


class Network:
    """An authority plus devices enrolled in it, at the level of feeds (no engines): every
    device gets its own keyring and store. Built on ``gossip.testing.ShopBuilder``."""

    def __init__(self, seed: int = 1, now_ms: int = T0) -> None:
        self.shop = ShopBuilder(seed, now_ms)
        self.random_bytes = self.shop.random_bytes
        self.now_ms = now_ms
        self.authority = self.shop.authority

    def new_key(self) -> DeviceKey:
        return DeviceKey.generate(self.random_bytes)

    def enroll(self, name: str, roles=("cashier",), *, expires_ms: int | None = None,
               key: DeviceKey | None = None) -> tuple[DeviceKey, int]:
        number = self.shop.enroll(name, roles, "b1", expires_ms=expires_ms, key=key)
        return self.shop.keys[name], number

    def device(self, name: str, roles=("cashier",), *, expires_ms: int | None = None,
               store: FeedStore | None = None) -> Device:
        """Enroll a device and build it from a fresh token."""
        key, number = self.enroll(name, roles, expires_ms=expires_ms)
        return self.join(key, number, store=store)

    def join(self, key: DeviceKey, number: int, *, store: FeedStore | None = None) -> Device:
        """The device as it comes up from a token issued now (authority feed seeded into its store)."""
        keyring, cert, entries = import_token(self.authority.token(number), key)
        assert cert.number == number
        store = store if store is not None else MemoryFeedStore()
        for entry in entries:
            store.append(entry.origin, entry.seq, entry.hash, entry.encode())
        return Device(key, number, keyring, Feeds(keyring, store))

    def sync_authority(self, device: Device) -> None:
        """Deliver the authority feed entries the device's store does not yet hold."""
        head = device.store.head(0)
        for entry in self.authority.feed[(head.seq if head else 0):]:
            assert device.feeds.ingest(entry.encode()).new


def make_entry(key: DeviceKey, origin: int, seq: int, prev_hash: bytes, *, epoch: int | None,
               epoch_key: bytes | None, payload: bytes, deps: tuple = (), nonce: bytes = bytes(24)) -> Entry:
    """A correctly sealed and signed entry with arbitrary contents (as a buggy or hostile device could make)."""
    header = [ENTRY_VERSION, origin, seq, prev_hash, epoch, [list(d) for d in deps]]
    body = payload if epoch_key is None else seal(payload, header, epoch_key, nonce)
    unsigned = Entry(origin, seq, prev_hash, epoch, tuple(deps), body, bytes(64))
    return replace(unsigned, signature=key.sign(unsigned.signed_bytes()))


def member_entry(device: Device, seq: int, prev_hash: bytes = GENESIS_HASH, *, obj: Any = None,
                 group: DeltaGroup | None = None, epoch: int | None = None, nonce: bytes = bytes(24)) -> Entry:
    """An entry of ``device``'s feed, sealed under its current epoch, with a group or any payload object."""
    keyring = device.keyring
    epoch = keyring.current_epoch if epoch is None else epoch
    payload = canonical(group.to_wire() if group is not None else obj)
    return make_entry(device.key, device.number, seq, prev_hash, epoch=epoch,
                      epoch_key=keyring.epoch_key(epoch), payload=payload, nonce=nonce)


def resign(entry: Entry, key: DeviceKey) -> Entry:
    """The same entry with its signature replaced by ``key``'s."""
    return replace(entry, signature=key.sign(entry.signed_bytes()))


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def snapshot(store: FeedStore, origins=range(0, 8), max_seq: int = 8) -> tuple:
    """Everything observable about a store, for "nothing was stored" assertions."""
    entries = {(o, s): store.get(o, s) for o in origins for s in range(1, max_seq + 1)}
    return store.version_vector(), store.heads(), store.quarantined(), entries
