"""``tillmesh demo``: a small chain on the real replication engine, in one process.

Three tills share the central branch's LAN; one of them sits in the basement and loses its
link. A second branch has its own till, and a blind relay anchor in the cloud links the
branches: it verifies, stores and forwards entries it cannot read. Everyone sells, a member
tops up in the north branch and is charged in the central one once escrow rights have come
through the relay, the basement comes back, and every till ends with the same state.

Everything runs on ``gossip.Loopback`` with virtual time: the output is the same on every
run and no clock or socket is involved.
"""

from __future__ import annotations

from typing import TextIO

from crdt_types import InsufficientRights
from gossip import Engine
from gossip.testing import ShopBuilder

from .pos import POS_ESCROW, POS_POLICY

START_MS = 1_800_000_000_000  # virtual time
ALICE = ("member", "alice", "balance")
COFFEE = "coffee-250g"
DEVICES = [  # name, branch, roles
    ("till-1", "central", ["manager"]),
    ("till-2", "central", ["cashier"]),
    ("basement", "central", ["cashier"]),
    ("north-1", "north", ["manager"]),
    ("anchor", "cloud", ["relay"]),
]


class Shop:
    """The chain: an authority, the devices' engines and the links between them."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.now = START_MS
        self.builder = ShopBuilder(2026, START_MS, policy=POS_POLICY, escrow=POS_ESCROW)
        for name, branch, roles in DEVICES:
            # Each device comes up from its enrollment token, as an installer would paste it in.
            self.builder.enroll(name, roles, branch)
        self.net = self.builder.loopback()
        self.members = [name for name, _, roles in DEVICES if "relay" not in roles]

    def engine(self, name: str) -> Engine:
        return self.net.engines[name]

    def later(self, ms: int = 1_000) -> None:
        """Let ``ms`` of virtual time pass, in 100 ms steps (timers, anti-entropy)."""
        for _ in range(ms // 100):
            self.now += 100
            self.net.tick(self.now)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")

    def commit(self, name: str, ops: list[tuple]) -> None:
        self.engine(name).commit(ops, self.now)
        self.net.run(self.now)

    def sell(self, name: str, sale_id: str, sku: str, qty: int, price: int, member: bool = False) -> bool:
        branch = dict((n, b) for n, b, _ in DEVICES)[name]
        ops = [("record", ("sale", sale_id), {"till": name, "sku": sku, "qty": qty, "total": qty * price}),
               ("add", ("stock", branch, sku), -qty)]
        if member:
            ops.append(("decrement", ALICE, qty * price))
        try:
            self.commit(name, ops)
            return True
        except InsufficientRights as refused:
            self.say(f"  {name}: charge of {qty * price} to alice refused, too few rights on this till: {refused}")
            return False

    def table(self, title: str) -> None:
        self.say(f"\n{title}")
        number = self.builder.numbers
        rows = {
            "stock central coffee": lambda e, n: e.value(("stock", "central", COFFEE)),
            "stock north coffee": lambda e, n: e.value(("stock", "north", COFFEE)),
            "coffee price": lambda e, n: e.value(("price", COFFEE)),
            "alice balance": lambda e, n: e.value(ALICE),
            "alice rights here": lambda e, n: e.rights(ALICE),
            "digest": lambda e, n: e.status().digest.hex()[:10],
        }
        names = [name for name, _, _ in DEVICES]
        self.say("".ljust(22) + "".join(n.rjust(12) for n in names))
        for label, read in rows.items():
            cells = []
            for name in names:
                engine = self.engine(name)
                cells.append("(blind)" if not engine.is_member else str(read(engine, number[name])))
            self.say(label.ljust(22) + "".join(c.rjust(12) for c in cells))
        self.say("entries held".ljust(22) + "".join(
            str(sum(self.engine(n).status().vector.values())).rjust(12) for n in names))

    def traffic(self) -> None:
        self.say("\nbytes sent (entry payload / protocol metadata) and where each device's own entries are held:")
        for name, _, _ in DEVICES:
            status = self.engine(name).status()
            payload = sum(p.payload_bytes_sent for p in status.peers)
            metadata = sum(p.metadata_bytes_sent for p in status.peers)
            acks = status.acks.as_dict() if status.is_member else {}
            ack_text = ", ".join(f"{k} {v}" for k, v in acks.items()) if acks else "no entries of its own"
            self.say(f"  {name:<9} payload {payload:>7}  metadata {metadata:>7}   own entries: {ack_text}")

    def converged(self) -> bool:
        return len({self.engine(name).status().digest for name in self.members}) == 1


def run(out: TextIO) -> bool:
    """Run the demo, writing to ``out``; returns True when every member converged."""
    shop = Shop(out)
    net = shop.net
    for a, b in [("till-1", "till-2"), ("till-1", "basement"), ("till-2", "basement"),
                 ("till-1", "anchor"), ("till-2", "anchor"), ("basement", "anchor"), ("north-1", "anchor")]:
        net.connect(a, b, shop.now)
    shop.say("A chain of two branches: till-1, till-2 and the basement till on the central LAN,")
    shop.say("north-1 in the north branch, and a relay anchor in the cloud that cannot read entries.")

    shop.say("\nMorning: managers set prices and receive stock.")
    shop.commit("till-1", [("set", ("price", COFFEE), 899), ("add", ("stock", "central", COFFEE), 40)])
    shop.commit("north-1", [("add", ("stock", "north", COFFEE), 25)])
    shop.later(2_000)

    shop.say("\nThe basement till loses its link. Everyone keeps selling:")
    for peer in ("till-1", "till-2", "anchor"):
        net.disconnect("basement", peer, shop.now)
    shop.sell("till-1", "C1-0001", COFFEE, 2, 899)
    shop.sell("till-2", "C2-0001", COFFEE, 1, 899)
    shop.sell("basement", "CB-0001", COFFEE, 3, 899)
    shop.sell("north-1", "N1-0001", COFFEE, 1, 899)
    shop.say("  four sales on four tills, one of them offline")

    shop.say("\nAlice tops up 5000 at north-1; the rights to spend it are north-1's.")
    shop.commit("north-1", [("increment", ALICE, 5_000)])
    shop.later(1_000)
    shop.say("Alice buys coffee at till-2 and pays from her balance:")
    if not shop.sell("till-2", "C2-0002", COFFEE, 1, 899, member=True):
        shop.engine("till-2").request_rights(ALICE, 899, shop.now)
        net.run(shop.now)
        shop.say("  till-2 asks for rights; north-1 answers with a transfer through the anchor")
        shop.later(1_000)
        if shop.sell("till-2", "C2-0002", COFFEE, 1, 899, member=True):
            shop.say("  till-2 charges alice 899 once the rights have arrived")
    shop.say("In the basement, alice tries to pay too:")
    shop.sell("basement", "CB-0002", COFFEE, 1, 899, member=True)
    shop.later(6_000)
    shop.table("Before the basement comes back:")

    shop.say("\nThe basement link returns.")
    for peer in ("till-1", "till-2", "anchor"):
        net.connect("basement", peer, shop.now)
    shop.later(6_000)  # one anti-entropy round (EngineConfig.have_interval_ms) and then some
    shop.table("After:")
    shop.traffic()
    alerts = shop.net.take_alerts()
    shop.say(f"\nincidents: {len(alerts)}" + "".join(f"\n  {a.kind.value}: {a.detail}" for a in alerts))
    converged = shop.converged()
    shop.say(f"\nconverged: {'yes' if converged else 'no'}")
    return converged
