"""Runs the FeedStore conformance suite over gossip's own implementations (``store_factories``).

node/ runs the same suite for its SQLite store; see ``feedstore_conformance.py``.
"""

from __future__ import annotations

from .feedstore_conformance import *  # noqa: F401,F403  (the conformance test functions)
from .feedstore_conformance import store_factories, store_fixture

store = store_fixture(store_factories)


def test_every_registered_factory_is_exercised():
    assert "memory" in store_factories
    assert all(callable(factory) for factory in store_factories.values())
