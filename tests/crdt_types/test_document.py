"""Document (pycrdt): concurrent edits on several devices merge with nothing lost, deltas
survive duplication and reordering, and values read back are the plain data written."""

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_types import Document, InvalidInput, MalformedWire, canonical, client_id_for, parse_update

from .strategies import (
    DEVICE_KEY,
    ID_POOLS,
    INT_IDS,
    MIXED_IDS,
    Net,
    assert_merge_laws,
    decode_or_malformed,
    delivery_order,
    merged,
    mutated,
    plain_values,
    programs,
    roundtrip,
)

randoms = st.randoms(use_true_random=False)
# Yrs stores numbers as doubles, so documents hold integers up to 2**53 - 1 (see _document.py).
MAX_DOC_INT = 2**53 - 1


def same_plain(a, b) -> bool:
    """Equal and of the same types all the way down (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_plain(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_plain(a[k], b[k]) for k in a)
    return a == b


def assert_matches_model(doc, log):
    """Lines: every line added and not removed, exactly as written; fields: a written value."""
    added = {e[2]["id"]: e[2] for e in log if e[1] == "line"}
    removed = {e[2] for e in log if e[1] == "remove"}
    value = doc.value
    lines = value["lines"]
    assert sorted(line["id"] for line in lines) == sorted(set(added) - removed)
    for line in lines:
        assert same_plain(line, added[line["id"]])
    written = {}
    for e in log:
        if e[1] == "field":
            written.setdefault(e[2], []).append(e[3])
    assert value["fields"].keys() == written.keys()
    for name, v in value["fields"].items():
        assert any(same_plain(v, w) for w in written[name])


# States are built with deltas delivered in any order, so some copies hold updates still
# waiting for their predecessors: the laws must hold for those too.

@settings(max_examples=40)
@given(ids=st.sampled_from(ID_POOLS), program=programs("doc", 3, max_steps=18))
def test_merge_is_commutative_associative_idempotent(ids, program):
    net = Net("doc", ids[:3], causal=False).run(program)
    x, y, z = net.states
    assert_merge_laws(x, y, z)
    assert_merge_laws(x, Document(), y)
    for d in net.deltas[:4]:
        assert_merge_laws(x, d.state, y)


@settings(max_examples=40)
@given(ids=st.sampled_from(ID_POOLS), program=programs("doc", 3, max_steps=18))
def test_delta_merged_into_the_old_state_is_the_new_state(ids, program):
    net = Net("doc", ids[:3], causal=False, check_deltas=True).run(program)
    assert len(net.deltas) == len(net.log)


@settings(max_examples=40)
@given(ids=st.sampled_from(ID_POOLS), program=programs("doc", 3, max_steps=18))
def test_wire_roundtrip_is_lossless(ids, program):
    net = Net("doc", ids[:3], causal=False).run(program)
    for state in net.states + [d.state for d in net.deltas] + [Document()]:
        for writer in (None, ids[0]):
            back = roundtrip(state, writer=writer)
            assert back == state
            assert back.value == state.value


@settings(max_examples=30)
@given(program=programs("doc", 4, max_steps=18))
def test_writer_id_is_not_on_the_wire(program):
    net = Net("doc", MIXED_IDS, causal=False).run(program)
    writer = MIXED_IDS.index(DEVICE_KEY)
    for d in net.deltas:
        if d.writer == writer:
            encoded = cbor2.dumps(d.state.to_wire(writer=DEVICE_KEY))
            assert DEVICE_KEY not in encoded
            assert Document.from_wire(cbor2.loads(encoded), writer=DEVICE_KEY) == d.state


def test_concurrent_edits_from_two_replicas_are_both_kept():
    till, tablet = Document(), Document()
    d1 = till.add_line("till-a", {"sku": "tea", "qty": 2, "price": 350})
    d2 = till.set_field("till-a", "table", 7)
    e1 = tablet.add_line(DEVICE_KEY, {"sku": "cake", "qty": 1, "price": 420})
    e2 = tablet.set_field(DEVICE_KEY, "guests", 3)
    for d in (e1, e2):
        till.merge(d)
    for d in (d2, d1, d2):  # out of order, and once more
        tablet.merge(d)
    assert till == tablet
    value = till.value
    assert value == tablet.value
    assert value["fields"] == {"table": 7, "guests": 3}
    assert sorted(line["sku"] for line in value["lines"]) == ["cake", "tea"]
    for line in value["lines"]:
        assert all(type(v) is int for k, v in line.items() if k != "sku")


def test_concurrent_writes_to_one_field_pick_the_same_winner_everywhere():
    a, b = Document(), Document()
    da = a.set_field("till-a", "status", "open")
    db = b.set_field("till-b", "status", "paid")
    a.merge(db)
    b.merge(da)
    assert a == b
    assert a.value["fields"]["status"] in ("open", "paid")


@settings(max_examples=40)
@given(
    ids=st.sampled_from(ID_POOLS),
    program=programs("doc", 3, max_steps=18),
    receivers=st.integers(2, 4),
    rnd=randoms,
)
def test_deltas_in_any_order_with_duplicates_converge(ids, program, receivers, rnd):
    net = Net("doc", ids[:3], causal=False).run(program)
    reference = Document()
    for d in net.deltas:  # creation order is a causal order
        reference.merge(d.state)
    assert_matches_model(reference, net.log)
    copies = []
    for _ in range(receivers):
        c = Document()
        for i in delivery_order(len(net.deltas), rnd, causal=False):
            c.merge(net.deltas[i].state)
        copies.append(c)
    net.exchange_all(rnd)
    for c in copies + net.states:
        assert c.value == reference.value
        assert c == reference


def test_a_line_added_after_a_field_is_not_lost_when_deltas_arrive_backwards():
    # The smallest out-of-order case the property above finds, written out.
    writer = Document()
    d1 = writer.add_line("till-a", {"qty": 1})
    d2 = writer.set_field("till-a", "table", 1)
    d3 = writer.add_line("till-a", {"qty": 3})
    reader = Document()
    for d in (d3, d2, d1):
        reader.merge(d)
    assert reader.value == writer.value
    assert reader == writer
    assert reader == reader.copy()


@settings(max_examples=40)
@given(ids=st.sampled_from(ID_POOLS), program=programs("doc", 3, max_steps=18), rnd=randoms)
def test_causal_delivery_converges_to_the_model(ids, program, rnd):
    net = Net("doc", ids[:3], causal=True).run(program)
    net.exchange_all(rnd)
    for state in net.states:
        assert state == net.states[0]
    assert_matches_model(net.states[0], net.log)


@given(value=plain_values(max_int=MAX_DOC_INT), name=st.text(min_size=1, max_size=8))
def test_values_read_back_are_the_plain_data_written(value, name):
    doc = Document()
    doc.set_field(7, name, value)
    doc.add_line(7, {"qty": 3, "price": 1250, "note": value})
    for copy in (doc, roundtrip(doc), merged(Document(), doc)):
        read = copy.value
        assert same_plain(read["fields"][name], value)
        assert same_plain(read["lines"][0], {"qty": 3, "price": 1250, "note": value})


@pytest.mark.parametrize("number", [0, 1, -1, 2**31, 2**32 + 1, MAX_DOC_INT, -MAX_DOC_INT])
def test_integers_stay_exact_integers(number):
    doc = Document()
    doc.set_field(1, "total", number)
    doc.add_line(1, {"qty": number})
    for copy in (doc, roundtrip(doc)):
        assert type(copy.value["fields"]["total"]) is int and copy.value["fields"]["total"] == number
        assert type(copy.value["lines"][0]["qty"]) is int and copy.value["lines"][0]["qty"] == number


@pytest.mark.parametrize("number", [MAX_DOC_INT + 1, -MAX_DOC_INT - 1, 2**62, 2**63 - 1, -(2**63 - 1)])
def test_integers_a_double_cannot_hold_are_refused(number):
    doc = Document()
    doc.add_line(1, {"qty": 1})
    before = doc.fingerprint()
    for call in (lambda: doc.set_field(1, "total", number), lambda: doc.add_line(1, {"qty": number}),
                 lambda: doc.add_line(1, {"notes": [{"n": number}]})):
        with pytest.raises(InvalidInput):
            call()
    assert doc.fingerprint() == before


def test_bytes_read_back_as_bytes():
    doc = Document()
    doc.set_field(1, "token", b"\x00\x01")
    read = doc.value["fields"]["token"]
    assert type(read) is bytes and read == b"\x00\x01"


too_deep = [[[[[[[[[[1]]]]]]]]]]


@pytest.mark.parametrize("call", [
    lambda d: d.set_field(1, "total", 12.5),
    lambda d: d.set_field(1, "total", 12.0),
    lambda d: d.set_field(1, "total", {"net": 1.5}),
    lambda d: d.set_field(1, "", 1),
    lambda d: d.set_field(1, "n" * 65, 1),
    lambda d: d.set_field(1, 5, 1),
    lambda d: d.set_field(1, "note", "x" * 4097),
    lambda d: d.set_field(1, "deep", too_deep),
    lambda d: d.set_field(1, "when", object()),
    lambda d: d.set_field(1.0, "total", 1),
    lambda d: d.set_field(True, "total", 1),
    lambda d: d.set_field("", "total", 1),
    lambda d: d.add_line(1, [1, 2]),
    lambda d: d.add_line(1, "tea"),
    lambda d: d.add_line(1, {"qty": 1.0}),
    lambda d: d.add_line(1, {2: "qty"}),
    lambda d: d.add_line(None, {"qty": 1}),
    lambda d: d.remove_line(1, 5),
    lambda d: d.remove_line(1, -1),
    lambda d: d.remove_line(1, True),
    lambda d: d.remove_line(1, 0.0),
], ids=range(21))
def test_bad_input_is_refused_and_changes_nothing(call):
    doc = Document()
    doc.add_line(1, {"sku": "tea", "qty": 1})
    doc.set_field(1, "table", 4)
    before, fingerprint, wire = doc.copy(), doc.fingerprint(), cbor2.dumps(doc.to_wire())
    with pytest.raises(InvalidInput):
        call(doc)
    assert doc == before and doc.fingerprint() == fingerprint
    assert cbor2.dumps(doc.to_wire()) == wire


VALID_UPDATE = Document().to_wire()[2]
MALFORMED = [
    None, ["doc", 1], ["rec", 1, VALID_UPDATE], ["doc", 2, VALID_UPDATE], ["doc", 1, None],
    ["doc", 1, "update"], ["doc", 1, [1, 2]], ["doc", 1, b"\xff\xff\xff\xff"],
    ["doc", 1, b"\x01\x02garbage"], ["doc", 1, b"\x00" * (64 * 1024 + 1)],
]


@pytest.mark.parametrize("obj", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_wire_is_refused_with_malformed_wire(obj):
    state = Document()
    state.add_line(2, {"qty": 1})
    before = state.fingerprint()
    with pytest.raises(MalformedWire):
        state.merge(Document.from_wire(obj))
    assert state.fingerprint() == before


@settings(max_examples=30)
@given(data=st.data(), program=programs("doc", 2, max_steps=8))
def test_corrupted_update_decodes_or_raises_malformed_wire(data, program):
    net = Net("doc", MIXED_IDS[:2], causal=True).run(program)
    update = bytearray(net.states[0].to_wire()[2])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(update) - 1), st.integers(0, 255)), max_size=3))
    for pos, byte in flips:
        update[pos] = byte
    cut = data.draw(st.integers(0, len(update)))
    obj = data.draw(mutated(["doc", 1, bytes(update[:cut])], junk=st.binary(max_size=16)))
    decoded = decode_or_malformed(Document.from_wire, obj)
    if decoded is not None:
        assert isinstance(decoded.value, dict)


@given(replica=st.one_of(st.integers(0, 2**52 - 1), st.text(min_size=1, max_size=8), st.binary(min_size=1, max_size=32)))
def test_client_ids_of_devices_are_their_numbers_and_names_never_collide_with_them(replica):
    cid = client_id_for(replica)
    assert cid == client_id_for(replica)
    if isinstance(replica, int):
        assert cid == replica
    else:
        assert 2**52 <= cid < 2**53 - 1  # above every device number, below the reader's id


def test_client_ids_of_the_test_replicas_are_distinct():
    ids = set(MIXED_IDS) | set(INT_IDS) | {"till-a", "till-b", DEVICE_KEY}
    assert len({client_id_for(r) for r in ids}) == len(ids)


@pytest.mark.parametrize("name", ["table", "status"])
def test_set_field_then_read_in_a_copy(name):
    doc = Document()
    doc.set_field("till-a", name, "x")
    doc.set_field("till-b", name, "y")  # a second writer on the same copy
    doc.set_field("till-a", name, "z")
    assert doc.value["fields"][name] == "z"
    assert doc.copy().value == doc.value == roundtrip(doc).value
    assert canonical(doc.fingerprint()) == canonical(doc.copy().fingerprint())


def test_deltas_name_their_writer_and_hostile_updates_never_reach_yrs_unbounded():
    doc = Document()
    assert doc.set_field("till-a", "table", 4).writers() == {client_id_for("till-a")}
    assert doc.add_line(DEVICE_KEY, {"qty": 1}).writers() == {client_id_for(DEVICE_KEY)}
    assert doc.remove_line(7, 0).writers() == frozenset()  # deleting another's line is not writing
    assert roundtrip(doc).writers() == doc.writers() == {client_id_for("till-a"), client_id_for(DEVICE_KEY)}
    # Declares a quarter of a billion clients: once cost Yrs half a GiB before it said no.
    with pytest.raises(MalformedWire, match="number of clients"):
        Document.from_wire(["doc", 1, bytes.fromhex("81a8a3773701fd9c0105")])


# --- what the edits write is what from_payload admits -----------------------------------------
#
# from_payload refuses, from an update's bytes alone, items that give an item as their parent,
# roots other than fields and lines, map keys under lines, and content that is not plain data
# (see _check_shape). Everything a document's own edits write must still pass.

def assert_a_documents_shape(data: bytes) -> None:
    info = parse_update(data, trusted=True)
    assert info.roots <= {"fields", "lines"}
    assert info.keyed_roots <= {"fields"}
    assert not info.parent_items
    assert info.contents <= {"any", "string", "binary", "deleted"}


copy_programs = st.lists(
    st.one_of(
        st.tuples(st.just("field"), st.integers(0, 2), st.sampled_from(["table", "status", "note"]),
                  plain_values(max_int=MAX_DOC_INT)),
        st.tuples(st.just("line"), st.integers(0, 2), plain_values(max_int=MAX_DOC_INT)),
        st.tuples(st.just("remove"), st.integers(0, 2), st.integers(0, 100)),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
    ),
    min_size=1, max_size=20,
)


@settings(max_examples=100)
@given(ids=st.sampled_from(ID_POOLS), program=copy_programs)
def test_every_delta_and_state_the_edits_write_passes_from_payload(ids, program):
    copies = [Document() for _ in range(3)]
    for kind, who, *args in program:
        doc, me = copies[who], ids[who]
        if kind == "sync":  # so that later edits follow, overwrite and remove others' items
            doc.merge(copies[args[0]])
            continue
        if kind == "field":
            delta = doc.set_field(me, args[0], args[1])
        elif kind == "line":
            delta = doc.add_line(me, {"by": who, "item": args[0]})
        elif doc.value["lines"]:
            delta = doc.remove_line(me, args[0] % len(doc.value["lines"]))
        else:
            continue
        data = delta.to_wire()[2]
        assert_a_documents_shape(data)
        back = Document.from_payload(data)
        assert back.writers() == delta.writers() and back == delta
    for doc in copies:
        data = doc.to_wire()[2]
        assert_a_documents_shape(data)
        if len(data) <= 64 * 1024:
            assert Document.from_payload(data) == doc


def test_edits_over_another_writers_items_pass_from_payload():
    till, tablet = Document(), Document()
    written = [till.add_line("till-a", {"sku": "tea", "mods": ["oat", {"hot": True}]}),
               till.set_field("till-a", "status", {"open": [1, 2]}),
               till.add_line("till-a", {"sku": "cake"})]
    tablet.merge(till)
    written += [
        tablet.remove_line(DEVICE_KEY, 0),  # another writer's line
        tablet.set_field(DEVICE_KEY, "status", ["paid", {"by": "card"}]),  # over another's value
        tablet.add_line(DEVICE_KEY, {"sku": "soup"}),  # after another's line
    ]
    till.merge(tablet)
    written.append(till.remove_line("till-a", 1))  # the tablet's line
    for delta in written + [till, tablet]:
        data = delta.to_wire()[2]
        assert_a_documents_shape(data)
        assert Document.from_payload(data) == delta
    reader = Document()
    for delta in reversed(written):
        reader.merge(Document.from_payload(delta.to_wire()[2]))
    assert reader == till
    assert reader.value == {"fields": {"status": ["paid", {"by": "card"}]}, "lines": [{"sku": "cake"}]}

