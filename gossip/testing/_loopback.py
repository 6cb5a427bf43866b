"""Engines wired together in memory: the ConnectionPair of tillmesh (h11 ``tests/helpers``).

A ``Loopback`` holds named engines and the links between them and drives them exactly as a
socket runtime would, through the five inputs and ``poll()``: it delivers each engine's
outgoing bytes to its peer, closes links an engine asks to close, flushes stores when asked
and reports the flush back (group commit), until nothing moves. There is no socket, no clock
and no thread: time is whatever the caller passes, so tests, the demo and benchmarks are
exact and repeatable. Links can be cut (``disconnect``) and re-made (``connect``) to model
partitions; what every engine reported is kept in ``alerts``, ``applied``, ``committed``,
``closes`` and ``acks`` per name.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from crdt_types import InvalidInput

from .._engine import Engine
from .._events import Now

__all__ = ["Loopback", "MAX_ROUNDS"]

# A run that has not gone quiet after this many rounds is a livelock, not a slow network.
MAX_ROUNDS = 10_000


class Loopback:
    """Named engines, the links between them, and what each engine reported."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.stores: dict[str, Any] = {}
        self.links: set[frozenset[str]] = set()
        self.tap: Callable[[str, str, bytes], bytes | None] | None = None  # may alter or drop
        self.alerts: dict[str, list] = defaultdict(list)
        self.applied: dict[str, list] = defaultdict(list)
        self.committed: dict[str, list] = defaultdict(list)
        self.closes: dict[str, list] = defaultdict(list)
        self.acks: dict[str, list] = defaultdict(list)
        self.flushes: dict[str, int] = defaultdict(int)

    def add(self, name: str, engine: Engine, store: Any = None) -> Engine:
        """Wire ``engine`` in as ``name``; ``store`` is its FeedStore, flushed when the engine
        asks (the one it was built over, by default)."""
        if name in self.engines:
            raise InvalidInput(f"an engine named {name!r} is already here")
        self.engines[name] = engine
        self.stores[name] = store if store is not None else engine._store
        return engine

    def replace(self, name: str, engine: Engine, now: Now | int, store: Any = None) -> None:
        """Swap in a restarted engine: its links are dropped (sessions do not survive)."""
        for link in [link for link in self.links if name in link]:
            (other,) = link - {name}
            self.disconnect(name, other, now)
        self.engines[name] = engine
        self.stores[name] = store if store is not None else engine._store

    def connect(self, a: str, b: str, now: Now | int) -> None:
        """Open a link, ``a`` initiating, and run until quiet."""
        link = frozenset((a, b))
        if a == b or link in self.links:
            raise InvalidInput(f"cannot link {a!r} and {b!r}")
        self.links.add(link)
        self.engines[a].connected(b, True, now)
        self.engines[b].connected(a, False, now)
        self.run(now)

    def disconnect(self, a: str, b: str, now: Now | int) -> None:
        """Cut a link: both engines see their transport end."""
        link = frozenset((a, b))
        if link not in self.links:
            return
        self.links.discard(link)
        self.engines[a].disconnected(b, now)
        self.engines[b].disconnected(a, now)

    def connected(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.links

    def poll(self, name: str, now: Now | int) -> tuple[dict[Any, bytes], bool]:
        """One poll of ``name``: act on everything but the sends, which are returned with
        whether anything else happened (a close or a flush may set off more)."""
        engine = self.engines[name]
        effects = engine.poll()
        self.alerts[name] += effects.alerts
        self.applied[name] += effects.applied
        self.committed[name] += effects.committed
        self.acks[name] += effects.acks
        for close in effects.closes:
            self.closes[name].append(close)
            if close.peer in self.engines:
                self.disconnect(name, close.peer, now)
        if effects.flush:
            self.stores[name].flush()
            self.flushes[name] += 1
            engine.flushed(now)
        return effects.sends, bool(effects.closes or effects.flush)

    def run(self, now: Now | int) -> int:
        """Deliver bytes until no engine has anything to do; returns bytes moved."""
        moved = 0
        for _ in range(MAX_ROUNDS):
            quiet = True
            for name in list(self.engines):
                sends, acted = self.poll(name, now)
                quiet = quiet and not acted
                for peer, data in sends.items():
                    if not self.connected(name, peer):
                        continue
                    if self.tap is not None:
                        data = self.tap(name, peer, data)
                        if data is None:
                            self.disconnect(name, peer, now)  # a dropped message breaks the session
                            continue
                    quiet = False
                    moved += len(data)
                    self.engines[peer].received(name, data, now)
            if quiet:
                return moved
        raise RuntimeError(f"loopback did not go quiet after {MAX_ROUNDS} rounds")

    def tick(self, now: Now | int) -> int:
        for engine in self.engines.values():
            engine.tick(now)
        return self.run(now)

    def take_alerts(self, name: str | None = None) -> list:
        """The alerts reported so far (by ``name``, or by everyone), forgetting them."""
        names = [name] if name is not None else list(self.alerts)
        out = []
        for n in names:
            out += self.alerts.pop(n, [])
        return out
