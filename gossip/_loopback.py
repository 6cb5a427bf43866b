"""Engines wired together in memory: the ConnectionPair of tillmesh (h11 ``tests/helpers``).

A ``Loopback`` holds named engines and the links between them, and shuttles each engine's
outgoing bytes into its peer until nothing moves. There is no socket, no clock and no
thread: time is whatever the caller passes, so tests, the demo and benchmarks are exact and
repeatable. Links can be cut (``disconnect``) and re-made (``connect``) to model partitions.
"""

from __future__ import annotations

from typing import Any, Callable

from crdt_types import InvalidInput

from ._engine import Engine

__all__ = ["Loopback"]

# A run that has not gone quiet after this many rounds is a livelock, not a slow network.
MAX_ROUNDS = 10_000


class Loopback:
    """Named engines and the links between them."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.links: set[frozenset[str]] = set()
        self.tap: Callable[[str, str, bytes], bytes | None] | None = None  # may alter or drop

    def add(self, name: str, engine: Engine) -> Engine:
        if name in self.engines:
            raise InvalidInput(f"an engine named {name!r} is already here")
        self.engines[name] = engine
        return engine

    def replace(self, name: str, engine: Engine, now_ms: int) -> None:
        """Swap in a restarted engine: its links are dropped (sessions do not survive)."""
        for link in [link for link in self.links if name in link]:
            (other,) = link - {name}
            self.disconnect(name, other, now_ms)
        self.engines[name] = engine

    def connect(self, a: str, b: str, now_ms: int) -> None:
        """Open a link, ``a`` initiating, and run until quiet."""
        link = frozenset((a, b))
        if a == b or link in self.links:
            raise InvalidInput(f"cannot link {a!r} and {b!r}")
        self.links.add(link)
        self.engines[a].connected(b, True, now_ms)
        self.engines[b].connected(a, False, now_ms)
        self.run(now_ms)

    def disconnect(self, a: str, b: str, now_ms: int) -> None:
        link = frozenset((a, b))
        if link not in self.links:
            return
        self.links.discard(link)
        self.engines[a].disconnected(b, now_ms)
        self.engines[b].disconnected(a, now_ms)

    def connected(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.links

    def run(self, now_ms: int) -> int:
        """Deliver bytes until no engine has anything to send; returns bytes moved."""
        moved = 0
        for _ in range(MAX_ROUNDS):
            quiet = True
            for name, engine in list(self.engines.items()):
                for peer in engine.peers_to_close():
                    self.disconnect(name, peer, now_ms)
                for link in [link for link in self.links if name in link]:
                    (peer,) = link - {name}
                    data = engine.data_to_send(peer)
                    if not data:
                        continue
                    if self.tap is not None:
                        data = self.tap(name, peer, data)
                        if data is None:
                            self.disconnect(name, peer, now_ms)  # a dropped message breaks the session
                            continue
                    quiet = False
                    moved += len(data)
                    self.engines[peer].received(name, data, now_ms)
            if quiet:
                return moved
        raise RuntimeError(f"loopback did not go quiet after {MAX_ROUNDS} rounds")

    def tick(self, now_ms: int) -> int:
        for engine in self.engines.values():
            engine.tick(now_ms)
        return self.run(now_ms)

    def peer_of(self, engine: Engine) -> Any:  # pragma: no cover - convenience for debugging
        return next(name for name, e in self.engines.items() if e is engine)
