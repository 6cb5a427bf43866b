"""A small driver over the public Engine surface with per-device clocks (review helper)."""
from __future__ import annotations
from collections import defaultdict
from gossip import Now, Engine
from gossip.testing import ShopBuilder, T0


class Net:
    def __init__(self, shop: ShopBuilder, names, *, wall_offset=None, mono_base=None, **engine_kw):
        self.shop = shop
        self.wall_offset = dict(wall_offset or {})
        self.mono_base = dict(mono_base or {})
        self.engines: dict[str, Engine] = {}
        self.links: set[frozenset] = set()
        self.alerts = defaultdict(list)
        self.applied = defaultdict(list)
        self.committed = defaultdict(list)
        self.closes = defaultdict(list)
        self.engine_kw = engine_kw
        self.t = T0
        self.hold = set()
        self.stores = {}
        for n in names:
            self.start(n, T0)

    def now(self, name, t):
        return Now(t - T0 + self.mono_base.get(name, 0) + 1_000_000, t + self.wall_offset.get(name, 0))

    def start(self, name, t, **kw):
        for l in list(self.links):
            if name in l:
                self._drop(l, t)
        kw = {**self.engine_kw, **kw}
        self.engines[name] = self.shop.engine(name, now=self.now(name, t), **kw)
        return self.engines[name]

    def _drop(self, link, t):
        self.links.discard(link)
        for n in link:
            (o,) = link - {n}
            if n in self.engines:
                try:
                    self.engines[n].disconnected(o, self.now(n, t))
                except Exception:
                    raise

    def connect(self, a, b, t=None):
        t = self.t if t is None else t
        self.links.add(frozenset((a, b)))
        self.engines[a].connected(b, True, self.now(a, t))
        self.engines[b].connected(a, False, self.now(b, t))
        self.run(t)

    def disconnect(self, a, b, t=None):
        t = self.t if t is None else t
        self._drop(frozenset((a, b)), t)
        self.run(t)

    def poll(self, name, t):
        e = self.engines[name]
        eff = e.poll()
        self.alerts[name] += eff.alerts
        self.applied[name] += eff.applied
        self.committed[name] += eff.committed
        self.closes[name] += eff.closes
        busy = False
        if eff.flush and name not in self.hold:
            self.stores.get(name, None) and self.stores[name].flush() or (name not in self.stores and self.shop.store(name).flush())
            e.flushed(self.now(name, t))
            busy = True
        for c in eff.closes:
            l = frozenset((name, c.peer))
            if l in self.links:
                self.links.discard(l)
                self.engines[c.peer].disconnected(name, self.now(c.peer, t))
                busy = True
        return eff.sends, busy

    def run(self, t=None, max_rounds=5000):
        t = self.t if t is None else t
        self.t = max(self.t, t)
        for _ in range(max_rounds):
            busy = False
            for n in list(self.engines):
                sends, b = self.poll(n, t)
                busy |= b
                for peer, data in sends.items():
                    if data and frozenset((n, peer)) in self.links:
                        self.engines[peer].received(n, data, self.now(peer, t))
                        busy = True
            if not busy:
                return
        raise AssertionError("no quiet")

    def tick(self, t):
        self.t = max(self.t, t)
        for n, e in self.engines.items():
            e.tick(self.now(n, t))
        self.run(t)

    def advance(self, t_end, step=1000):
        t = self.t
        while t < t_end:
            t = min(t + step, t_end)
            self.tick(t)

    def run_deadlines(self, t_end, max_steps=100000):
        """Tick each engine only at its next_deadline (mapped from its mono clock)."""
        steps = 0
        while steps < max_steps:
            steps += 1
            best = None
            for n, e in self.engines.items():
                d = e.next_deadline()
                if d is None:
                    continue
                t = d - self.mono_base.get(n, 0) - 1_000_000 + T0
                if best is None or t < best[0]:
                    best = (t, n)
            if best is None or best[0] > t_end:
                self.t = max(self.t, t_end)
                return
            t, n = best
            t = max(t, self.t)
            self.t = t
            self.engines[n].tick(self.now(n, t))
            self.run(t)
        raise AssertionError("deadline loop did not settle")

    def take_alerts(self, name=None):
        if name is None:
            out = [a for n in self.alerts for a in self.alerts[n]]
            self.alerts.clear()
            return out
        out, self.alerts[name] = self.alerts[name], []
        return out

    def digests(self, names=None):
        return {n: self.engines[n].status().digest for n in (names or self.engines)}
