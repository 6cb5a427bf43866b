"""``tillmesh demo``: three tills of one shop, apart and then together.

Until the network layer runs, the tills are replicas in one process and "the network" is
handing each till the delta groups the others produced. What it shows is the contract the
network will rely on: writes never wait, an overdraft is refused offline by the escrow
counter, and every till converges to the same state once the deltas are exchanged.
"""

from __future__ import annotations

from typing import Callable, TextIO

from crdt_types import HLC, DeltaGroup, InsufficientRights, Replica

BRANCH = "central"
SKUS = ("coffee-250g", "croissant")
MEMBER = ("member", "alice", "balance")
PRICE = ("price", "coffee-250g")


class Till:
    """A replica with a clock and an outbox of the delta groups it produced."""

    def __init__(self, name: str, number: int) -> None:
        self.name = name
        self.replica = Replica(number)
        self.clock = HLC()
        self.outbox: list[DeltaGroup] = []

    def write(self, now_ms: int, body: Callable) -> DeltaGroup:
        with self.replica.transaction(self.clock.now(now_ms)) as tx:
            body(tx)
        self.outbox.append(tx.delta)
        return tx.delta

    def view(self) -> dict[str, object]:
        r = self.replica
        return {
            "stock coffee": r.value(("stock", BRANCH, SKUS[0])),
            "stock croissant": r.value(("stock", BRANCH, SKUS[1])),
            "coffee price": r.value(PRICE),
            "alice balance": r.value(MEMBER),
            "alice rights here": r.state(MEMBER).rights(r.replica_id),
            "sales seen": sum(1 for key in r.keys() if key[0] == "sale"),
            "digest": r.digest().hex()[:12],
        }


def sell(till: Till, now_ms: int, sale_id: str, lines: list[tuple[str, int, int]], member_charge: int = 0) -> None:
    def body(tx) -> None:
        total = sum(qty * price for _, qty, price in lines)
        tx.record(("sale", sale_id), {"till": till.name, "lines": [list(line) for line in lines], "total": total})
        for sku, qty, _ in lines:
            tx.add(("stock", BRANCH, sku), -qty)
        if member_charge:
            tx.decrement(MEMBER, member_charge)

    till.write(now_ms, body)


def print_table(out: TextIO, title: str, tills: list[Till]) -> None:
    views = [t.view() for t in tills]
    rows = list(views[0])
    width = max(len(r) for r in rows) + 2
    out.write(f"\n{title}\n")
    out.write("".ljust(width) + "".join(t.name.rjust(14) for t in tills) + "\n")
    for row in rows:
        out.write(row.ljust(width) + "".join(str(v[row]).rjust(14) for v in views) + "\n")


def run(out: TextIO) -> bool:
    """Run the demo, writing to ``out``; returns True when the tills converged."""
    till1, till2, till3 = tills = [Till("till-1", 1), Till("till-2", 2), Till("till-3", 3)]
    t = 1_800_000_000_000  # virtual milliseconds; nothing here reads a clock

    out.write("Three tills share a shop. Morning stock and prices reach all of them.\n")
    till1.write(t, lambda tx: (tx.add(("stock", BRANCH, SKUS[0]), 40), tx.add(("stock", BRANCH, SKUS[1]), 60),
                               tx.set(PRICE, 899), tx.set(("price", SKUS[1]), 250)))
    exchange(tills)

    out.write("\nThe network drops. Every till keeps selling on its own:\n")
    sell(till1, t + 1_000, "S-1-0001", [(SKUS[0], 2, 899), (SKUS[1], 3, 250)])
    sell(till2, t + 1_100, "S-2-0001", [(SKUS[1], 5, 250)])
    sell(till3, t + 1_200, "S-3-0001", [(SKUS[0], 1, 899)])
    out.write("  till-1, till-2, till-3 each record a sale and decrement stock\n")
    till2.write(t + 2_000, lambda tx: tx.set(PRICE, 949))
    out.write("  till-2 (the manager's) raises the coffee price to 949\n")
    till3.write(t + 3_000, lambda tx: tx.increment(MEMBER, 2_000))
    out.write("  alice tops up 2000 at till-3\n")
    sell(till3, t + 3_500, "S-3-0002", [(SKUS[0], 1, 899)], member_charge=899)
    out.write("  alice pays 899 from her balance at till-3 (till-3 holds the rights)\n")
    try:
        sell(till1, t + 4_000, "S-1-0002", [(SKUS[0], 1, 899)], member_charge=899)
        out.write("  !! till-1 charged alice without rights\n")
    except InsufficientRights as refused:
        out.write(f"  till-1 refuses to charge alice offline: {refused}\n")
    print_table(out, "Before the exchange (each till sees only itself):", tills)

    out.write("\nThe network returns; each till receives the others' deltas (twice, out of order).\n")
    exchange(tills, reverse=True)
    exchange(tills)
    print_table(out, "After the exchange:", tills)

    converged = len({t.replica.digest() for t in tills}) == 1
    out.write(f"\nconverged: {'yes' if converged else 'no'}\n")
    return converged


def exchange(tills: list[Till], *, reverse: bool = False) -> None:
    for receiver in tills:
        for sender in tills:
            if sender is receiver:
                continue
            for group in reversed(sender.outbox) if reverse else sender.outbox:
                receiver.replica.merge(group)
