"""One shop builder for tests, the demo, benchmarks and simulations.

An authority, the devices it enrolled (each with its key, token, keyring and a store seeded
with the authority feed from its token), and engines built over those stores. A second
``engine(name)`` for a device is a restart over the same store. Every random byte comes
from ``seeded(seed)``; every time is a virtual millisecond passed in.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from crdt_types import DEFAULT_SCHEMA, HLC, Schema

from .._config import EngineConfig
from .._engine import Engine
from .._enrollment import Authority, import_token
from .._escrow import EscrowKeys
from .._events import Now
from .._identity import DeviceKey
from .._keyring import Keyring
from .._policy import ALLOW_ALL, Policy
from .._store import FeedStore, MemoryFeedStore
from ._loopback import Loopback

__all__ = ["ShopBuilder", "seeded", "T0"]

T0 = 1_800_000_000_000  # a virtual "now" in ms (January 2027); tests move it explicitly


def seeded(seed: int) -> Callable[[int], bytes]:
    """A deterministic random-bytes source, for tests and simulations only."""
    return random.Random(seed).randbytes


class ShopBuilder:
    """An authority and its enrolled devices; builds (and rebuilds) an engine per device.

    Args:
        seed: the one seed every random byte derives from.
        now_ms: the virtual time of creation and enrollment.
        policy, schema, escrow, config: what every engine gets unless told otherwise.
    """

    def __init__(self, seed: int = 1, now_ms: int = T0, *, policy: Policy = ALLOW_ALL,
                 schema: Schema = DEFAULT_SCHEMA, escrow: EscrowKeys | None = None,
                 config: EngineConfig = EngineConfig()) -> None:
        self.random_bytes = seeded(seed)
        self.now_ms = now_ms
        self.policy, self.schema, self.escrow, self.config = policy, schema, escrow, config
        self.authority = Authority.create(self.random_bytes, now_ms)
        self.keys: dict[str, DeviceKey] = {}
        self.numbers: dict[str, int] = {}
        self.stores: dict[str, FeedStore] = {}

    def enroll(self, name: str, roles: tuple[str, ...] | list[str] = ("cashier",), branch: str = "central", *,
               expires_ms: int | None = None, key: DeviceKey | None = None) -> int:
        """Enroll a device (with a fresh key unless given); returns its number."""
        key = key or DeviceKey.generate(self.random_bytes)
        cert = self.authority.enroll(key.public, name=name, branch=branch, roles=tuple(roles),
                                     now_ms=self.now_ms, expires_ms=expires_ms)
        self.keys[name] = key
        self.numbers[name] = cert.number
        return cert.number

    def name_of(self, number: int) -> str:
        return next(name for name, n in self.numbers.items() if n == number)

    def token(self, name: str) -> str:
        return self.authority.token(self.numbers[name])

    def keyring(self, name: str) -> Keyring:
        """The device's keyring as it comes up from a token issued now."""
        keyring, _, _ = import_token(self.token(name), self.keys[name])
        return keyring

    def store(self, name: str) -> FeedStore:
        """The device's store, created on first use and seeded (durably) with its token's feed."""
        store = self.stores.get(name)
        if store is None:
            _, _, feed = import_token(self.token(name), self.keys[name])
            store = self.stores[name] = MemoryFeedStore()
            for entry in feed:
                store.append(entry.origin, entry.seq, entry.hash, entry.encode())
            store.flush()
        return store

    def engine(self, name: str, *, now: Now | int | None = None, hlc: HLC | None = None,
               keyring: Keyring | None = None, **overrides: Any) -> Engine:
        """An engine for ``name`` over its kept store: a restart when one was built before.

        The keyring comes from a fresh token unless given: a restarted device must learn
        later authority entries from its store, not from the token.
        """
        settings = {"policy": self.policy, "schema": self.schema, "escrow": self.escrow, "config": self.config}
        settings.update(overrides)
        store = self.store(name)
        if keyring is None:
            # A fresh token knows authority entries (a new epoch, later devices) the store may
            # lack; a device keeps them with its feeds, so that it can forward them too.
            keyring, _, feed = import_token(self.token(name), self.keys[name])
            head = store.head(0)
            for entry in feed[head.seq if head else 0:]:
                store.append(entry.origin, entry.seq, entry.hash, entry.encode())
            store.flush()
        return Engine(keyring, store, random_bytes=self.random_bytes,
                      now=self.now_ms if now is None else now, hlc=hlc, **settings)

    def crash(self, name: str) -> None:
        """What a crash leaves of the device's store: only what was flushed."""
        self.stores[name] = self.stores[name].crashed()

    def loopback(self, names: list[str] | None = None, **overrides: Any) -> Loopback:
        """A Loopback holding an engine for each of ``names`` (default: every device)."""
        net = Loopback()
        for name in names if names is not None else list(self.numbers):
            net.add(name, self.engine(name, **overrides))
        return net

    def publish(self, net: Loopback, name: str, now: Now | int) -> None:
        """Hand the authority feed's newer entries (revocations, enrollments) to ``name``,
        as an admin would through a manager's device; gossip carries them on."""
        net.engines[name].import_entries([entry.encode() for entry in self.authority.feed], now)
        net.run(now)
