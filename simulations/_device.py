"""One simulated device: the runtime's job, done in virtual time.

A ``Device`` drives its engine exactly as ``node.runtime`` drives a real one: the five
inputs (``connected``, ``received``, ``disconnected``, ``tick``, ``commit``), then
``poll()`` and acting on every effect: bytes to its connections, closes, a flush of its
store (taking ``flush_ms`` of virtual time, then ``flushed``), and a timer at
``next_deadline()``. It dials its targets with exponential backoff and jitter, and it can
crash (losing what its store had not flushed) and restart over what is left.

The engine can be any object with the engine's surface: the baselines of
``simulations.baselines`` are driven by the same code.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from gossip import Now

from ._loop import US_PER_MS, US_PER_S, Loop
from ._network import End, Network

__all__ = ["Clock", "Device", "Observer", "DialPolicy", "STABLE_CONNECTION_US"]

STABLE_CONNECTION_US = 10 * US_PER_S  # a connection this old resets the dial backoff


class Clock:
    """A device's clocks: monotonic time is virtual time; wall time adds a skew and a drift."""

    __slots__ = ("epoch_ms", "skew_ms", "drift_ppm", "_last_ms", "_last")

    def __init__(self, epoch_ms: int, skew_ms: int = 0, drift_ppm: float = 0.0) -> None:
        self.epoch_ms, self.skew_ms, self.drift_ppm = epoch_ms, skew_ms, drift_ppm
        self._last_ms, self._last = -1, Now(0, 0)

    def at(self, now_us: int) -> Now:
        ms = now_us // US_PER_MS
        if self._last_ms == ms:  # many inputs in one millisecond: one Now
            return self._last
        now = Now(ms, self.epoch_ms + ms + self.skew_ms + int(self.drift_ppm * ms / 1_000_000))
        self._last_ms, self._last = ms, now
        return now


class DialPolicy:
    """Reconnect backoff: ``base_ms`` doubling up to ``cap_ms``, times a jitter in [0.5, 1.5)."""

    __slots__ = ("base_ms", "cap_ms")

    def __init__(self, base_ms: int = 500, cap_ms: int = 30_000) -> None:
        self.base_ms, self.cap_ms = base_ms, cap_ms

    def delay_us(self, attempt: int, rng: random.Random) -> int:
        return int(min(self.cap_ms, self.base_ms * 2 ** min(attempt, 20)) * (0.5 + rng.random()) * US_PER_MS)


class Observer:
    """What a device reports as it runs (the metrics collector implements it)."""

    def committed(self, device: "Device", committed: Any, now_us: int) -> None: ...
    def acknowledged(self, device: "Device", committed: Any, now_us: int) -> None: ...
    def applied(self, device: "Device", change: Any, via: str | None, now_us: int) -> None: ...
    def alert(self, device: "Device", alert: Any, now_us: int) -> None: ...
    def link_closed(self, device: "Device", end: End, sent: int, payload: int) -> None: ...


class Device:
    """A device in the simulation: its engine, store, clock, connections and dialers.

    Args:
        name, number, branch, roles: who it is.
        make_engine: ``make_engine(store, now) -> engine``; called at start and at every
            restart, over the store that survived.
        store: its FeedStore (anything with ``flush`` and ``crashed``).
        clock: its clocks.
        flush_ms: how long a flush takes (virtual time).
        engine_time: a list of one float, to which the wall time of every engine call is
            added (the simulator's own cost is what is left); None: not measured.
    """

    def __init__(self, *, loop: Loop, network: Network, observer: Observer, rng: random.Random, name: str,
                 number: int, branch: str, roles: tuple[str, ...], make_engine: Callable[[Any, Now], Any],
                 store: Any, clock: Clock, flush_ms: float = 1.0, dial_policy: DialPolicy | None = None,
                 timer=None) -> None:
        self.loop, self.network, self.observer, self.rng = loop, network, observer, rng
        self.name, self.number, self.branch, self.roles = name, number, branch, roles
        self.is_anchor = "relay" in roles
        self.make_engine, self.store, self.clock = make_engine, store, clock
        self.flush_us = int(flush_ms * US_PER_MS)
        self.dial_policy = dial_policy or DialPolicy()
        self.timer = timer  # a perf_counter, when engine time is measured
        self.engine_seconds = 0.0
        self.targets: list[str] = []  # devices this one dials
        self.ends: dict[str, End] = {}  # peer name -> live connection
        self.attempts: dict[str, int] = {}
        self.dialling: set[str] = set()
        self.up = False
        self.left = False  # left the network for good
        self.epoch = 0  # bumped at every crash: stale callbacks check it
        self.engine: Any = None
        self._flushing = False
        self._timer_at: int | None = None

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Boot (or reboot) over the store: a new engine, then dial every target."""
        if self.up or self.left:
            return
        self.up = True
        self.epoch += 1
        self.engine = self._call(self.make_engine, self.store, self.now())
        self.network.trace.event(self.loop.now, "start", self.name)
        self.pump()
        for target in self.targets:
            self._dial(target, self.epoch)

    def crash(self) -> None:
        """Power off now: connections break, unflushed writes are lost, the engine is gone."""
        if not self.up:
            return
        self.up = False
        self.epoch += 1
        self.network.trace.event(self.loop.now, "crash", self.name)
        self.network.drop_device(self.name)
        self.ends.clear()
        self.dialling.clear()
        self.store = self.store.crashed()
        self.engine = None
        self._flushing = False
        self._timer_at = None

    def leave(self) -> None:
        """Switched off for good (it keeps its place in the metrics)."""
        self.crash()
        self.left = True

    def now(self) -> Now:
        return self.clock.at(self.loop.now)

    # -- what the world does to it ------------------------------------------------------------

    def commit(self, ops: list[tuple]) -> Any:
        """A local transaction; raises what ``Engine.commit`` raises (nothing is written then)."""
        committed = self._call(self.engine.commit, ops, self.now())
        self.observer.committed(self, committed, self.loop.now)
        self.pump()
        return committed

    def request_rights(self, key: tuple, amount: int) -> Any:
        committed = self._call(self.engine.request_rights, key, amount, self.now())
        self.observer.committed(self, committed, self.loop.now)
        self.pump()
        return committed

    def import_entries(self, entries: list[bytes]) -> None:
        self._call(self.engine.import_entries, entries, self.now())
        self.pump()

    def value(self, key: tuple) -> Any:
        return self._call(self.engine.value, key)

    def status(self) -> Any:
        return self._call(self.engine.status)

    # -- the network's callbacks ----------------------------------------------------------------

    def on_connected(self, end: End, initiator: bool) -> None:
        if not self.up:
            return
        self.dialling.discard(end.peer)
        old = self.ends.get(end.peer)
        if old is not None:  # one connection per peer; the newer one wins
            self.network.close(old)
        self.ends[end.peer] = end
        self._call(self.engine.connected, end, initiator, self.now())
        self.pump()

    def on_data(self, end: End, data: bytes) -> None:
        # With ``pump``, the hot path of every run: kept flat.
        if not self.up or self.ends.get(end.peer) is not end:
            return
        now = self.clock.at(self.loop.now)
        if self.timer is None:
            self.engine.received(end, data, now)
        else:
            self._call(self.engine.received, end, data, now)
        self.pump(end.conn.spec.kind)

    def on_closed(self, end: End) -> None:
        if not self.up:
            return
        if self.ends.get(end.peer) is end:
            del self.ends[end.peer]
        sent = payload = 0
        for peer in self._call(self.engine.status).peers:
            if peer.handle is end:
                sent, payload = peer.bytes_sent, peer.payload_bytes_sent
        self.observer.link_closed(self, end, sent, payload)
        self._call(self.engine.disconnected, end, self.now())
        self.pump()
        if end.peer in self.targets and end.peer not in self.ends:
            # A connection that lasted starts the backoff afresh; one that ends at once (a
            # peer that refuses us: revoked, say) backs off further, as the runtime does.
            lasted = self.loop.now - end.conn.opened_us >= STABLE_CONNECTION_US
            self.attempts[end.peer] = 1 if lasted else self.attempts.get(end.peer, 0) + 1
            self.loop.after(self.dial_policy.delay_us(self.attempts[end.peer], self.rng), self._dial, end.peer,
                            self.epoch)

    # -- the runtime's work ---------------------------------------------------------------------

    def pump(self, via: str | None = None) -> None:
        """Poll the engine, act on every effect, set the timer. ``via``: the link kind of
        the bytes just taken in, if any (what changes they applied arrived over).

        One poll is enough: nothing done here calls back into the engine (closes and
        flushes come back through the loop as inputs of their own)."""
        if not self.up:
            return
        engine, loop = self.engine, self.loop
        effects = engine.poll() if self.timer is None else self._call(engine.poll)
        if effects.sends:
            send = self.network.send
            for end, data in effects.sends.items():
                send(end, data)
        if effects.closes:
            for close in effects.closes:
                self.network.close(close.peer)
        if effects.alerts:
            for alert in effects.alerts:
                self.observer.alert(self, alert, loop.now)
        if effects.applied:
            applied = self.observer.applied
            for change in effects.applied:
                applied(self, change, via, loop.now)
        if effects.committed:
            for committed in effects.committed:
                self.observer.acknowledged(self, committed, loop.now)
        if effects.flush and not self._flushing:
            self._flushing = True
            loop.after(self.flush_us, self._flush_done, self.epoch)
        # The timer at next_deadline(), at least 0.1 ms on (a deadline already past runs next).
        deadline = engine.next_deadline() if self.timer is None else self._call(engine.next_deadline)
        if deadline is not None:
            at = deadline * US_PER_MS
            soonest = loop.now + US_PER_MS // 10
            if at < soonest:
                at = soonest
            if self._timer_at is None or at < self._timer_at:
                self._timer_at = at
                loop.at(at, self._fire, at, self.epoch)

    def _flush_done(self, epoch: int) -> None:
        if epoch != self.epoch:
            return  # crashed while flushing: the write never happened
        self.store.flush()
        self._flushing = False
        self._call(self.engine.flushed, self.now())
        self.pump()

    def _fire(self, at: int, epoch: int) -> None:
        if epoch != self.epoch or self._timer_at != at:
            return  # a later timer replaced this one, or the device rebooted
        self._timer_at = None
        self._call(self.engine.tick, self.now())
        self.pump()

    def _dial(self, target: str, epoch: int) -> None:
        if epoch != self.epoch or not self.up or target in self.ends or target in self.dialling:
            return
        self.dialling.add(target)
        self.network.dial(self.name, target, lambda: self._dial_failed(target, epoch))

    def _dial_failed(self, target: str, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self.dialling.discard(target)
        self.attempts[target] = self.attempts.get(target, 0) + 1
        self.loop.after(self.dial_policy.delay_us(self.attempts[target], self.rng), self._dial, target, epoch)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        timer = self.timer
        if timer is None:
            return fn(*args)
        start = timer()
        try:
            return fn(*args)
        finally:
            self.engine_seconds += timer() - start
