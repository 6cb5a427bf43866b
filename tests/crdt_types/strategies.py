"""Shared strategies and a tiny replica network for the crdt_types property tests.

The network (``Net``) is the h11 ``ConnectionPair`` idea applied to CRDTs: N replicas of one
type, each writing to its own state, with every delta kept so that a test can deliver any
of them to any replica, in causal order or in any order, any number of times. Tests then
compare the replicas with each other and with a trivial sequential model built from
``net.log`` (the operations that succeeded, in the order they ran).

Every random choice is drawn by hypothesis (programs, ``st.randoms()``), so failures shrink
and replay from the printed seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import cbor2
from hypothesis import strategies as st

from crdt_types import (
    HLC,
    MAX_TOTAL,
    BoundedCounter,
    Document,
    InsufficientRights,
    LWWRegister,
    MalformedWire,
    PNCounter,
    Record,
    Timestamp,
)

# A device's replica id is its 32-byte Ed25519 public key; these stand in for real keys.
DEVICE_KEY = hashlib.sha256(b"tillmesh test device key").digest()
OTHER_KEY = hashlib.sha256(b"tillmesh another device").digest()

INT_IDS = (0, 7, 300, 2**40)
STR_IDS = ("backoffice", "tablet", "till-a", "till-b")
BYTES_IDS = (DEVICE_KEY, OTHER_KEY, b"\x01", b"\xff" * 8)
# Mixed on purpose: the types must order and encode ids of every kind the same way everywhere.
MIXED_IDS = (3, "till-b", DEVICE_KEY, 0)
ID_POOLS = (MIXED_IDS, INT_IDS, STR_IDS, BYTES_IDS)

CLASSES = {
    "pn": PNCounter,
    "lww": LWWRegister,
    "bc": BoundedCounter,
    "rec": Record,
    "doc": Document,
}

# --- plain data ---------------------------------------------------------------------------

small_ints = st.integers(-(10**6), 10**6)
any_ints = st.one_of(small_ints, st.integers(-MAX_TOTAL, MAX_TOTAL))
short_text = st.text(max_size=6)


def plain_values(*, with_bytes: bool = True, max_int: int = MAX_TOTAL, max_leaves: int = 6) -> st.SearchStrategy:
    """Register / record / document values: None, bool, int, str, bytes, lists, str-keyed maps."""
    ints = st.one_of(small_ints, st.integers(-max_int, max_int), st.sampled_from([-max_int, max_int]))
    scalars = [st.none(), st.booleans(), ints, short_text]
    if with_bytes:
        scalars.append(st.binary(max_size=6))
    return st.recursive(
        st.one_of(*scalars),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.text(max_size=4), inner, max_size=3),
        ),
        max_leaves=max_leaves,
    )


# Anything a CBOR decoder may hand back, floats and odd nestings included (for wire fuzzing).
cbor_junk = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=False),
        st.text(max_size=6), st.binary(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(-3, 3)), inner, max_size=3),
    ),
    max_leaves=8,
)


# --- operations per type ------------------------------------------------------------------

pn_ops = st.integers(-50, 50).filter(bool)
# (physical ms handed to the writer's HLC, value); few distinct times so stamps often tie.
lww_ops = st.tuples(st.integers(0, 30), plain_values())
# Spends and grants come as a fixed amount (often refused: checks InsufficientRights) or as a
# percentage of the spender's current rights (mostly accepted: builds deep escrow histories).
# push: the grantee asked for the rights and gets the grant (and what led to it) at once.
bc_ops = st.one_of(
    st.tuples(st.just("inc"), st.integers(1, 20)),
    st.tuples(st.just("dec"), st.integers(1, 10)),
    st.tuples(st.just("xfer"), st.integers(0, 3), st.integers(1, 10), st.booleans()),
    st.tuples(st.just("dec%"), st.integers(1, 100)),
    st.tuples(st.just("xfer%"), st.integers(0, 3), st.integers(1, 100), st.booleans()),
)
# A small space of sales so that the same record is written twice and ids collide.
records = st.fixed_dictionaries({
    "till": st.sampled_from(["a", "b"]),
    "total": st.integers(0, 3),
    "lines": st.lists(st.integers(0, 2), max_size=2),
})
rec_ops = records
doc_ops = st.one_of(
    st.tuples(st.just("line"), st.integers(1, 5), st.sampled_from(["tea", "cake", "soup"])),
    st.tuples(st.just("field"), st.sampled_from(["table", "status", "guests"]),
              st.one_of(st.integers(-(2**40), 2**40), short_text, st.booleans())),
    st.tuples(st.just("remove"), st.integers(0, 50)),
)
OPS = {"pn": pn_ops, "lww": lww_ops, "bc": bc_ops, "rec": rec_ops, "doc": doc_ops}


def programs(kind: str, n: int, *, max_steps: int = 24) -> st.SearchStrategy:
    """A list of steps.

    ``("op", replica, op)``: a local write; ``("deliver", pick, replica)``: one delta to one
    replica; ``("sync", source, replica, backwards)``: every delta ``source`` holds and
    ``replica`` lacks (a partial anti-entropy round), oldest first or, when the network may
    reorder, possibly newest first, which is the most hostile order.
    """
    replica = st.integers(0, n - 1)
    op = st.tuples(st.just("op"), replica, OPS[kind])
    step = st.one_of(
        op,
        op,  # as likely as both kinds of delivery together
        st.tuples(st.just("deliver"), st.integers(0, 10**6), replica),
        st.tuples(st.just("sync"), replica, replica, st.booleans()),
    )
    steps = st.lists(step, min_size=max_steps // 3, max_size=max_steps)
    if kind != "bc":
        return steps
    # Escrow histories only get interesting once replicas hold rights: start with an
    # increment on every replica (the amounts, and everything after, are drawn).
    prologue = st.tuples(*[st.tuples(st.just("op"), st.just(r), st.tuples(st.just("inc"), st.integers(1, 30)))
                           for r in range(n)])
    return st.builds(lambda first, rest: list(first) + rest, prologue, steps)


# --- the network --------------------------------------------------------------------------

@dataclass
class Delta:
    index: int
    writer: int  # replica index
    state: Any
    deps: frozenset  # every delta the writer had produced or merged when it wrote this one


@dataclass
class Net:
    """N replicas of one CRDT type plus every delta they ever produced."""

    kind: str
    ids: tuple
    causal: bool = True
    check_deltas: bool = False
    after_merge: Callable[[Any], None] | None = None
    states: list = field(init=False)
    seen: list = field(init=False)
    deltas: list = field(init=False, default_factory=list)
    log: list = field(init=False, default_factory=list)
    clocks: list = field(init=False)
    refused: int = field(init=False, default=0)
    _next_line: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        cls = CLASSES[self.kind]
        self.states = [cls() for _ in self.ids]
        self.seen = [set() for _ in self.ids]
        self.clocks = [HLC() for _ in self.ids]

    @property
    def n(self) -> int:
        return len(self.ids)

    def run(self, program) -> "Net":
        for step in program:
            if step[0] == "op":
                self.op(step[1] % self.n, step[2])
            elif step[0] == "deliver":
                self.deliver_pick(step[1], step[2] % self.n)
            else:
                self.sync(step[1] % self.n, step[2] % self.n, backwards=step[3])
        return self

    # -- writing --

    def op(self, r: int, op: Any) -> Delta | None:
        state = self.states[r]
        before = state.copy()
        delta = getattr(self, f"_op_{self.kind}")(r, op)
        if delta is None:
            assert state == before, "a refused operation changed the state"
            self.refused += 1
            return None
        if self.check_deltas:
            # The delta joined into the state before the mutation is the state after it.
            rebuilt = before.copy()
            rebuilt.merge(delta)
            assert rebuilt == state, (self.kind, op, rebuilt, state)
        d = Delta(len(self.deltas), r, delta, frozenset(self.seen[r]))
        self.deltas.append(d)
        self.seen[r].add(d.index)
        if self.kind == "bc" and op[0].startswith("xfer") and op[3]:
            self.sync(r, self.ids.index(self.log[-1][3]))
        return d

    def _op_pn(self, r: int, amount: int) -> Any:
        delta = self.states[r].add(self.ids[r], amount)
        self.log.append((r, amount))
        return delta

    def _op_lww(self, r: int, op: tuple) -> Any:
        physical, value = op
        hlc = self.clocks[r].now(physical)
        delta = self.states[r].set(value, hlc, self.ids[r])
        self.log.append((r, hlc, self.ids[r], value))
        return delta

    def _op_bc(self, r: int, op: tuple) -> Any:
        state, me = self.states[r], self.ids[r]
        if op[0] == "inc":
            delta = state.increment(me, op[1])
            self.log.append((r, "inc", op[1]))
            return delta
        rights = state.rights(me)
        if op[0].startswith("dec"):
            amount = op[1] if op[0] == "dec" else max(1, rights * op[1] // 100)
            call = lambda: state.decrement(me, amount)  # noqa: E731
            entry = (r, "dec", amount)
        else:
            dst = self.ids[(r + 1 + op[1] % (self.n - 1)) % self.n]
            amount = op[2] if op[0] == "xfer" else max(1, rights * op[2] // 100)
            call = lambda: state.transfer(me, dst, amount)  # noqa: E731
            entry = (r, "xfer", amount, dst)
        allowed = amount <= rights
        try:
            delta = call()
        except InsufficientRights as exc:
            assert not allowed, f"refused {op} although {me!r} holds {state.rights(me)} rights"
            assert exc.needed == amount and exc.available == state.rights(me)
            return None
        assert allowed, f"accepted {op} beyond the rights of {me!r}"
        self.log.append(entry)
        return delta

    def _op_rec(self, r: int, record: Any) -> Any:
        delta = self.states[r].write(record)
        self.log.append((r, record))
        return delta

    def _op_doc(self, r: int, op: tuple) -> Any:
        doc, me = self.states[r], self.ids[r]
        if op[0] == "line":
            line = {"id": self._next_line, "qty": op[1], "sku": op[2]}
            self._next_line += 1
            self.log.append((r, "line", line))
            return doc.add_line(me, line)
        if op[0] == "field":
            self.log.append((r, "field", op[1], op[2]))
            return doc.set_field(me, op[1], op[2])
        lines = doc.value["lines"]
        if not lines:
            return None
        index = op[1] % len(lines)
        self.log.append((r, "remove", lines[index]["id"]))
        return doc.remove_line(me, index)

    # -- delivering --

    def deliverable(self, r: int) -> list[Delta]:
        """Deltas replica ``r`` may receive next: any at all, or (causal) those whose past it holds."""
        if not self.causal:
            return self.deltas
        seen = self.seen[r]
        return [d for d in self.deltas if d.index not in seen and d.deps <= seen]

    def deliver_pick(self, pick: int, r: int) -> None:
        candidates = self.deliverable(r)
        if candidates:
            self.deliver(candidates[pick % len(candidates)], r)

    def sync(self, source: int, r: int, *, backwards: bool = False) -> None:
        missing = sorted(self.seen[source] - self.seen[r])
        if backwards and not self.causal:
            missing.reverse()
        for i in missing:
            self.deliver(self.deltas[i], r)

    def deliver(self, d: Delta, r: int) -> None:
        self.states[r].merge(d.state)
        self.seen[r].add(d.index)
        if self.after_merge is not None:
            self.after_merge(self.states[r])

    def exchange_all(self, rnd) -> None:
        """Deliver every delta to every replica: in creation order (causal) or shuffled, duplicated."""
        for r in range(self.n):
            for i in delivery_order(len(self.deltas), rnd, causal=self.causal):
                self.deliver(self.deltas[i], r)


def delivery_order(count: int, rnd, *, causal: bool) -> list[int]:
    """Indexes of ``count`` deltas to deliver: creation order is causal; otherwise any order,
    with some deltas delivered twice."""
    order = list(range(count))
    if causal or not count:
        return order
    order += [rnd.randrange(count) for _ in range(rnd.randint(0, count))]
    rnd.shuffle(order)
    return order


# --- generic checks -------------------------------------------------------------------------

def merged(*states: Any) -> Any:
    """A fresh copy of the first state with the others merged in, left to right."""
    out = states[0].copy()
    for s in states[1:]:
        out.merge(s)
    return out


def assert_merge_laws(x: Any, y: Any, z: Any) -> None:
    """Commutative, associative, idempotent, and merge does not touch its argument."""
    y_before = y.copy()
    assert merged(x, y) == merged(y, x)
    assert y == y_before
    assert merged(merged(x, y), z) == merged(x, merged(y, z))
    assert merged(x, x) == x
    itself = x.copy()
    itself.merge(itself)
    assert itself == x
    # Joining is also an upper bound: merging a state already included changes nothing.
    xy = merged(x, y)
    assert merged(xy, x) == xy and merged(xy, y) == xy


def roundtrip(obj: Any, *, writer: Any = None) -> Any:
    """to_wire -> CBOR bytes -> from_wire, as a peer would see it."""
    data = cbor2.dumps(obj.to_wire(writer=writer))
    return type(obj).from_wire(cbor2.loads(data), writer=writer)


def replace_at(obj: Any, path: tuple, new: Any) -> Any:
    """A copy of the nested lists ``obj`` with the element at ``path`` replaced."""
    if not path:
        return new
    items = list(obj)
    items[path[0]] = replace_at(items[path[0]], path[1:], new)
    return items


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every position inside nested lists (the root included)."""
    out = [prefix]
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            out.extend(paths(item, prefix + (i,)))
    return out


@st.composite
def mutated(draw, wire: Any, *, junk: st.SearchStrategy = cbor_junk) -> Any:
    """``wire`` with one element (or the whole thing) replaced, dropped or duplicated."""
    path = draw(st.sampled_from(paths(wire)))
    how = draw(st.sampled_from(["replace", "drop", "dup"]) if path else st.just("replace"))
    if how == "replace":
        return replace_at(wire, path, draw(junk))
    parent_path, i = path[:-1], path[-1]
    parent = list(_get(wire, parent_path))
    if how == "drop":
        del parent[i]
    else:
        parent.insert(i, parent[i])
    return replace_at(wire, parent_path, parent)


def _get(obj: Any, path: tuple) -> Any:
    for i in path:
        obj = obj[i]
    return obj


def decode_or_malformed(decode: Callable[[Any], Any], obj: Any) -> Any:
    """Decoding untrusted data either works or raises ``MalformedWire``; nothing else escapes."""
    try:
        return decode(obj)
    except MalformedWire:
        return None


def check_mutated_wire(kind: str, decode: Callable[[Any], Any], data: Any, program: Any, *, commutes: bool = True) -> None:
    """A mutated wire form of a real state decodes to a value that round-trips (and, where
    ``commutes``, merges in either order alike) or is refused with ``MalformedWire``."""
    net = Net(kind, MIXED_IDS[:3], causal=False).run(program)
    wire = cbor2.loads(cbor2.dumps(net.states[0].to_wire()))
    decoded = decode_or_malformed(decode, data.draw(mutated(wire)))
    if decoded is not None:
        assert roundtrip(decoded) == decoded
        if commutes:
            assert merged(net.states[1], decoded) == merged(decoded, net.states[1])


# --- arbitrary states, as a peer could send them ------------------------------------------
#
# Honest histories only ever produce states where one writer's slots grow together, so a
# merge that is wrong for "crossing" states (one side larger in p, the other in n) passes
# every property built on them. These strategies build states directly from the wire form:
# any valid slot values, in any combination, small numbers often so that slots collide.

wire_totals = st.one_of(st.integers(0, 6), st.integers(0, MAX_TOTAL), st.just(MAX_TOTAL))
positive_wire_totals = st.one_of(st.integers(1, 6), st.integers(1, MAX_TOTAL), st.just(MAX_TOTAL))


def pn_wire_states(ids: tuple) -> st.SearchStrategy:
    """``["pn", 1, [[replica, p, n], ...]]`` with any p, n >= 0 per replica, never (0, 0)."""
    slot = st.tuples(wire_totals, wire_totals).filter(lambda pn: pn != (0, 0))
    slots = st.dictionaries(st.sampled_from(ids), slot, max_size=len(ids))
    return slots.map(lambda rows: ["pn", 1, [[r, p, n] for r, (p, n) in rows.items()]])


def bc_wire_states(ids: tuple) -> st.SearchStrategy:
    """``["bc", 1, [P, D, T]]`` with any positive totals in any slots (no honest history needed)."""
    slots = st.dictionaries(st.sampled_from(ids), positive_wire_totals, max_size=len(ids))
    pairs = [(s, d) for s in ids for d in ids if s != d]
    transfers = st.dictionaries(st.sampled_from(pairs), positive_wire_totals, max_size=len(pairs))
    return st.builds(
        lambda p, d, t: ["bc", 1, [[[r, v] for r, v in p.items()], [[r, v] for r, v in d.items()],
                                   [[src, dst, v] for (src, dst), v in t.items()]]],
        slots, slots, transfers,
    )


# Few distinct stamps so that ties on the stamp (and on stamp and replica) are common.
wire_stamps = st.one_of(
    st.builds(Timestamp, st.integers(0, 3), st.integers(0, 2)),
    st.builds(Timestamp, st.integers(0, 2**48 - 1), st.integers(0, 2**16 - 1)),
)


def lww_wire_states(ids: tuple) -> st.SearchStrategy:
    """``["lww", 1, null]`` or ``["lww", 1, [hlc, replica, value]]`` with any stamp, replica, value."""
    written = st.builds(lambda hlc, r, v: ["lww", 1, [hlc.pack(), r, v]],
                        wire_stamps, st.sampled_from(ids), plain_values(max_leaves=3))
    return st.one_of(st.just(["lww", 1, None]), written, written)
