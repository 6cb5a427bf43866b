"""Runs the FeedStore conformance suite over gossip's own implementations (``store_factories``).

node/ runs the same suite for its SQLite store; see ``gossip.testing.feedstore_conformance``.
"""

from __future__ import annotations

from gossip import Head, MemoryFeedStore

from gossip.testing.feedstore_conformance import *  # noqa: F401,F403  (the conformance test functions)
from gossip.testing.feedstore_conformance import store_factories, store_fixture

store = store_fixture(store_factories)


def test_every_registered_factory_is_exercised():
    assert "memory" in store_factories
    assert all(callable(factory) for factory in store_factories.values())


def test_a_crashed_memory_store_keeps_exactly_what_was_flushed():
    from gossip.testing.feedstore_conformance import d, fill, h

    store = MemoryFeedStore()
    fill(store, 1, 2)
    store.put_meta("acks", b"kept")
    store.flush()
    fill(store, 1, 2, start=3)
    store.truncate(1, 1)
    store.put_meta("acks", b"lost")
    after = store.crashed()
    assert after.head(1) == Head(2, h(1, 2))
    assert after.read(1, 1) == [d(1, 1), d(1, 2)]
    assert after.get_meta("acks") == b"kept"
    assert not after.dirty
    assert store.head(1) == Head(1, h(1, 1))  # the running store is untouched
