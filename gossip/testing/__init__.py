"""Test support that ships with gossip, as ``trio.testing`` does with trio.

- ``Loopback``: engines wired in memory, driven through the same inputs and ``poll()`` a
  socket runtime uses;
- ``ShopBuilder`` and ``seeded``: one deterministic shop (authority, devices, stores);
- ``feedstore_conformance``: the suite every ``FeedStore`` implementation must pass
  (a pytest module: import it from a test module, see its docstring).
"""

from ._loopback import MAX_ROUNDS, Loopback
from ._shop import T0, ShopBuilder, seeded

__all__ = ["Loopback", "MAX_ROUNDS", "ShopBuilder", "T0", "seeded"]
