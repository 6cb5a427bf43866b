"""Raw links between engines with explicit handles, for duplicate-connection tests."""
from collections import defaultdict


class Raw:
    def __init__(self, shop, engines):
        self.shop = shop
        self.engines = engines  # name -> engine
        self.wires = {}  # (name, handle) -> (peer_name, peer_handle)
        self.closes = defaultdict(list)
        self.alerts = defaultdict(list)
        self.committed = defaultdict(list)

    def dial(self, a, ha, b, hb, t, run=True):
        self.wires[(a, ha)] = (b, hb)
        self.wires[(b, hb)] = (a, ha)
        self.engines[a].connected(ha, True, t)
        self.engines[b].connected(hb, False, t)
        if run:
            self.run(t)

    def cut(self, a, ha, t):
        other = self.wires.pop((a, ha), None)
        if other:
            self.wires.pop(other, None)
            self.engines[other[0]].disconnected(other[1], t)
        self.engines[a].disconnected(ha, t)

    def step(self, name, t):
        e = self.engines[name]
        eff = e.poll()
        self.closes[name] += eff.closes
        self.alerts[name] += eff.alerts
        self.committed[name] += eff.committed
        busy = False
        if eff.flush:
            self.shop.store(name).flush()
            e.flushed(t)
            busy = True
        out = []
        for h, data in eff.sends.items():
            if data and (name, h) in self.wires:
                out.append((self.wires[(name, h)], data))
        for c in eff.closes:
            if (name, c.peer) in self.wires:
                # deliver pending bytes first, then close
                pass
        for (pn, ph), data in out:
            self.engines[pn].received(ph, data, t)
            busy = True
        for c in eff.closes:
            other = self.wires.pop((name, c.peer), None)
            if other:
                self.wires.pop(other, None)
                self.engines[other[0]].disconnected(other[1], t)
                busy = True
        return busy

    def run(self, t, max_rounds=5000):
        for _ in range(max_rounds):
            busy = False
            for n in list(self.engines):
                busy |= self.step(n, t)
            if not busy:
                return
        raise AssertionError("no quiet")

    def tick(self, t):
        for e in self.engines.values():
            e.tick(t)
        self.run(t)
