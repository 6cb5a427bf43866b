"""The Yrs update parser: real updates parse and name their writers, hand-encoded bytes
check every limit at its boundary, and nothing untrusted reaches Yrs unbounded. A
document admits only updates of its own shape, judged by their bytes alone, and what it
admits, merged in any order, always reads."""

import subprocess
import sys
from pathlib import Path

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_types import Document, IntegrityError, MalformedWire, TillmeshError, UpdateInfo, client_id_for, parse_update
from crdt_types._yupdate import (
    MAX_ANY_DEPTH,
    MAX_ANY_INT,
    MAX_CLIENT_ID,
    MAX_CLIENTS,
    MAX_CLOCK,
    MAX_DELETE_RANGES,
    MAX_STRUCTS,
    MAX_UPDATE_BYTES,
)

from .strategies import decode_or_malformed, plain_values

REPO = Path(__file__).resolve().parents[2]
# Declares 250,139,649 clients: Yrs reserves about half a GiB before finding the end.
DOS_UPDATE = bytes.fromhex("81a8a3773701fd9c0105")


# --- a lib0 v1 encoder, to write what pycrdt never would ------------------------------------

def uv(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def sv(n: int) -> bytes:
    """lib0 signed varint."""
    negative, n = n < 0, abs(n)
    out = bytearray([(0x80 if n > 0x3F else 0) | (0x40 if negative else 0) | (n & 0x3F)])
    n >>= 6
    while n:
        out.append((0x80 if n > 0x7F else 0) | (n & 0x7F))
        n >>= 7
    return bytes(out)


def s(text) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return uv(len(raw)) + raw


def section(client: int, clock: int, *structs: bytes) -> bytes:
    return uv(len(structs)) + uv(client) + uv(clock) + b"".join(structs)


def ds(*clients) -> bytes:
    out = uv(len(clients))
    for client, ranges in clients:
        out += uv(client) + uv(len(ranges)) + b"".join(uv(c) + uv(n) for c, n in ranges)
    return out


def update(*sections: bytes, delete_set: bytes = b"\x00") -> bytes:
    return uv(len(sections)) + b"".join(sections) + delete_set


def gc(n: int = 1) -> bytes:
    return b"\x00" + uv(n)


def skip(n: int) -> bytes:
    return b"\x0a" + uv(n)


def item(ref: int, content: bytes, *, root=None, sub=None, origin=None, right=None, parent=None, info_extra=0) -> bytes:
    """One item; without an origin its parent is the root ``root``, by default a document's
    own: ``fields`` for an item with a map key ``sub``, ``lines`` for one without."""
    if root is None:
        root = "lines" if sub is None else "fields"
    info = ref | info_extra | (0x80 if origin else 0) | (0x40 if right else 0) | (0x20 if sub is not None else 0)
    out = bytes([info])
    for ident in (origin, right):
        if ident:
            out += uv(ident[0]) + uv(ident[1])
    if not (origin or right):
        out += uv(0) + uv(parent[0]) + uv(parent[1]) if parent else uv(1) + s(root)
        if sub is not None:
            out += s(sub)
    return out + content


def anys(*values: bytes) -> bytes:
    """Content of an Any item (ref 8)."""
    return uv(len(values)) + b"".join(values)


def a_int(n: int) -> bytes:
    return b"\x7d" + sv(n)


def a_str(text: str) -> bytes:
    return b"\x77" + s(text)


def a_array(*values: bytes) -> bytes:
    return b"\x75" + uv(len(values)) + b"".join(values)


def a_map(**entries: bytes) -> bytes:
    return b"\x76" + uv(len(entries)) + b"".join(s(k) + v for k, v in entries.items())


def nested_arrays(levels: int) -> bytes:
    value = a_int(1)
    for _ in range(levels):
        value = a_array(value)
    return value


def one_value(value: bytes, client: int = 5) -> bytes:
    """An update setting root map ``fields`` key ``k`` to one any value."""
    return update(section(client, 0, item(8, anys(value), sub="k")))


def yrs_state(data: bytes) -> dict[int, int]:
    """The state vector Yrs has after applying ``data`` to an empty document."""
    doc = pycrdt.Doc(client_id=2**53 - 1)
    doc.apply_update(data)
    raw, pos, out = doc.get_state(), 0, {}

    def read():
        nonlocal pos
        value = shift = 0
        while True:
            byte = raw[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    for _ in range(read()):
        client = read()
        out[client] = read()
    return out


def refused(data: bytes, *fragments: str) -> str:
    with pytest.raises(MalformedWire) as info:
        parse_update(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    return message


# --- the denial of service that started this -------------------------------------------------

def test_the_ten_byte_update_is_refused_before_yrs_sees_it():
    message = refused(DOS_UPDATE, "number of clients", "250139649", "at byte 0")
    assert "yrs update" in message
    with pytest.raises(MalformedWire, match="number of clients"):
        Document.from_wire(["doc", 1, DOS_UPDATE])


_BUDGET_SCRIPT = r"""
import resource, sys
import pycrdt
from crdt_types import Document, MalformedWire

def address_space():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmSize in /proc/self/status")

limit = address_space() + 256 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
bad = bytes.fromhex(sys.argv[2])
if sys.argv[1] == "yrs":  # the old validation: the bytes straight into Yrs
    try:
        pycrdt.Doc().apply_update(bad)
        print("accepted")
    except BaseException as exc:
        print("yrs refused:", exc)
else:
    try:
        Document.from_wire(["doc", 1, bad])
        print("accepted")
    except MalformedWire as exc:
        print("refused:", exc)
"""


def _run_with_budget(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _BUDGET_SCRIPT, mode, DOS_UPDATE.hex()],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


# Justified skip: the memory cap and the reading of peak memory are Linux interfaces; CI and the
# tills run Linux, so this runs wherever it matters.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_the_ten_byte_update_is_refused_within_a_memory_budget():
    # The control: handed straight to Yrs, the same bytes do not fit in the budget, so the
    # budget is tight enough to tell the old from_payload from the new one.
    old = _run_with_budget("yrs")
    assert old.returncode != 0 or "allocat" in old.stdout, (old.stdout, old.stderr)
    new = _run_with_budget("document")
    assert new.returncode == 0, new.stderr
    assert new.stdout.startswith("refused: "), new.stdout
    assert "number of clients" in new.stdout and "allocat" not in new.stdout


# --- real updates --------------------------------------------------------------------------

writer_ids = st.integers(0, 2**52 - 1)
edits = st.lists(
    st.one_of(
        st.tuples(st.just("field"), st.integers(0, 3), st.sampled_from(["table", "status", "note"]),
                  plain_values(max_int=2**53 - 1)),
        st.tuples(st.just("line"), st.integers(0, 3), plain_values(max_int=2**53 - 1)),
        st.tuples(st.just("remove"), st.integers(0, 3), st.integers(0, 100)),
    ),
    min_size=1, max_size=16,
)


@settings(max_examples=40)
@given(writers=st.lists(writer_ids, min_size=4, max_size=4), program=edits, rnd=st.randoms(use_true_random=False))
def test_every_delta_names_its_writer_and_the_log_names_them_all(writers, program, rnd):
    doc, deltas, wrote = Document(), [], set()
    for kind, who, *args in program:
        writer = writers[who]
        if kind == "field":
            delta = doc.set_field(writer, args[0], args[1])
        elif kind == "line":
            delta = doc.add_line(writer, {"item": args[0]})
        else:
            size = len(doc.value["lines"])
            if not size:
                continue
            delta = doc.remove_line(writer, args[0] % size)
        update_bytes = delta.to_wire()[2]
        info = parse_update(update_bytes)
        expected = set() if kind == "remove" else {client_id_for(writer)}
        assert delta.writers() == info.writers == expected
        assert Document.from_wire(delta.to_wire()).writers() == expected
        wrote |= expected
        deltas.append(delta)
    log = doc.to_wire()[2]
    info = parse_update(log, trusted=True)
    assert doc.writers() == info.writers == wrote
    # The clocks the parser counts (strings in UTF-16 units) are the ones Yrs integrates.
    assert {client: end for client, _, end in info.clock_ranges} == yrs_state(log)
    # Delivered in any order, a copy's log holds pending runs and skips: still the same writers.
    rnd.shuffle(deltas)
    reader = Document()
    for delta in deltas:
        reader.merge(delta)
    assert reader.writers() == wrote
    if len(reader.to_wire()[2]) <= MAX_UPDATE_BYTES:
        assert Document.from_wire(reader.to_wire()).writers() == wrote


def _edit_every_shared_type(doc: pycrdt.Doc, text: str, value) -> None:
    fields = doc.get("fields", type=pycrdt.Map)
    fields["v"] = value
    fields["bytes"] = b"\x00\xff"
    fields["nested"] = pycrdt.Map({"list": pycrdt.Array([1, "two", None])})
    fields["sub"] = pycrdt.Doc()
    body = doc.get("body", type=pycrdt.Text)
    body += text + "😀"
    body.insert(0, "x", {"bold": True})
    body.insert_embed(1, {"image": "tea.png"})
    if len(body) > 3:
        body.format(1, 3, {"italic": True})
        del body[0:2]
    xml = doc.get("xml", type=pycrdt.XmlFragment)
    xml.children.append(pycrdt.XmlElement("p", {"class": "a"}, [pycrdt.XmlText(text)]))
    lines = doc.get("lines", type=pycrdt.Array)
    lines.append(value)
    lines.append(pycrdt.Text("line"))
    del lines[0]


@settings(max_examples=40)
@given(client=st.integers(0, MAX_CLIENT_ID), text=st.text(max_size=8), value=plain_values(max_int=2**53 - 1))
def test_updates_with_every_content_type_parse_and_agree_with_yrs(client, text, value):
    doc = pycrdt.Doc(client_id=client)
    before = doc.get_state()
    _edit_every_shared_type(doc, text, value)
    for data in (doc.get_update(), doc.get_update(before), pycrdt.merge_updates(doc.get_update())):
        info = parse_update(data)
        assert info.writers == {client}
        assert info.deleted_clients <= {client}
        assert {c: end for c, _, end in info.clock_ranges} == yrs_state(data)
        # The parse sees what a document never holds, and accepts it…
        assert {"fields", "lines", "body", "xml"} <= info.roots
        assert info.keyed_roots == {"fields"}
        assert info.parent_items  # children of the nested map, the XML element, the subdoc…
        assert {"type", "doc", "format", "any", "string"} <= info.contents
        assert parse_update(data, trusted=True) == info
        # …but not as a document's delta.
        with pytest.raises(MalformedWire, match="^doc: an item"):
            Document.from_payload(data)


def test_a_forged_update_names_the_client_it_writes_under():
    forged = pycrdt.Doc(client_id=7)
    forged.get("fields", type=pycrdt.Map)["status"] = "paid"
    data = forged.get_update()
    assert parse_update(data).writers == {7}
    # Whoever sends it: the engine compares this with client_id_for(sender) and refuses it.
    delta = Document.from_payload(data)
    assert delta.writers() == {7} != {client_id_for(3)}


def test_two_writers_in_one_update_are_both_named_and_deleting_is_not_writing():
    a, b = Document(), Document()
    a.add_line(3, {"sku": "tea"})
    b.merge(a)
    removal = b.remove_line(9, 0)
    assert removal.writers() == frozenset()
    assert parse_update(removal.to_wire()[2]).deleted_clients == {3}
    b.set_field(9, "status", "open")
    assert b.writers() == {3, 9}
    assert Document.from_wire(b.to_wire()).writers() == {3, 9}


def test_an_empty_document_has_no_writers():
    info = parse_update(Document().to_wire()[2])
    assert info == UpdateInfo(frozenset(), frozenset(), 0, 0, ())
    assert Document().writers() == frozenset()


# --- untrusted bytes -------------------------------------------------------------------------

def _real_update(program, writers) -> bytes:
    doc = Document()
    for kind, who, *args in program:
        if kind == "field":
            doc.set_field(writers[who], args[0], args[1])
        elif kind == "line":
            doc.add_line(writers[who], {"item": args[0]})
        elif doc.value["lines"]:
            doc.remove_line(writers[who], args[0] % len(doc.value["lines"]))
    return doc.to_wire()[2]


def _admitted_consistently(data: bytes) -> None:
    """from_payload admits the bytes or raises MalformedWire; nothing else escapes."""
    decoded = decode_or_malformed(Document.from_payload, data)
    if decoded is not None:
        assert decoded.writers() == parse_update(data).writers
        assert isinstance(decoded.value, dict)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 6)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
)


def _mutate(data: bytes, steps) -> bytes:
    out = bytearray(data)
    for kind, at, *args in steps:
        at = at % (len(out) + 1)
        if kind == "insert":
            out[at:at] = args[0]
        elif kind == "truncate":
            del out[at:]
        elif not out or at == len(out):
            continue
        elif kind == "flip":
            out[at] ^= 1 << args[0]
        elif kind == "set":
            out[at] = args[0]
        else:
            del out[at:at + args[0]]
    return bytes(out)


@settings(max_examples=200)
@given(data=st.one_of(st.binary(max_size=64), st.binary(max_size=512)))
def test_random_bytes_are_refused_with_malformed_wire_only(data):
    _admitted_consistently(data)


@settings(max_examples=200)
@given(writers=st.lists(writer_ids, min_size=4, max_size=4), program=edits,
       steps=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_real_updates_decode_or_raise_malformed_wire(writers, program, steps):
    _admitted_consistently(_mutate(_real_update(program, writers), steps))


@settings(max_examples=100)
@given(text=st.text(max_size=8), value=plain_values(max_int=2**53 - 1), steps=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_updates_of_every_content_type_decode_or_raise_malformed_wire(text, value, steps):
    doc = pycrdt.Doc(client_id=11)
    _edit_every_shared_type(doc, text, value)
    _admitted_consistently(_mutate(doc.get_update(), steps))


# --- hand-encoded: every content type, as Yrs reads it ---------------------------------------

VALID = {
    "gc": (update(section(4, 0, gc(3))), 3),
    "deleted": (update(section(4, 0, item(1, uv(5)))), 5),
    "binary": (update(section(4, 0, item(3, s(b"\x00\x01"), sub="k"))), 1),
    "string utf-16": (update(section(4, 0, item(4, s("a😀é")))), 4),
    "string then origin": (update(section(4, 0, item(4, s("ab")), item(4, s("c"), origin=(4, 1)))), 3),
    "right origin": (update(section(4, 0, item(4, s("ab")), item(4, s("c"), right=(4, 0)))), 3),
    "embed": (update(section(4, 0, item(5, s('{"image": [1, 2]}')))), 1),
    "format": (update(section(4, 0, item(6, s("bold") + s("true")))), 1),
    "type array": (update(section(4, 0, item(7, b"\x00", sub="a"))), 1),
    "type map with a child": (update(section(4, 0, item(7, b"\x01", sub="m"), item(8, anys(a_int(1)), parent=(4, 0), sub="x"))), 2),
    "type text": (update(section(4, 0, item(7, b"\x02", sub="a"))), 1),
    "type xml element": (update(section(4, 0, item(7, b"\x03" + s("p"), sub="a"))), 1),
    "type xml fragment": (update(section(4, 0, item(7, b"\x04", sub="a"))), 1),
    "type xml text": (update(section(4, 0, item(7, b"\x06", sub="a"))), 1),
    "type subdoc": (update(section(4, 0, item(7, b"\x09", sub="a"))), 1),
    "type undefined": (update(section(4, 0, item(7, b"\x0f", sub="a"))), 1),
    "any scalars": (update(section(4, 0, item(8, anys(
        b"\x7f", b"\x7e", b"\x79", b"\x78", a_int(-3), b"\x7c\x3f\x80\x00\x00",
        b"\x7b" + bytes(8), b"\x7a" + bytes(8), a_str("é"), b"\x74" + s(b"\x01"))))), 10),
    "any containers": (update(section(4, 0, item(8, anys(a_map(a=a_array(a_int(1), a_map()), b=a_str("x")), a_array()), sub="k"))), 2),
    "subdocument": (update(section(4, 0, item(9, s("guid-1") + a_map(gc=b"\x78", autoLoad=b"\x79"), sub="d"))), 1),
    "delete set": (update(section(4, 0, item(4, s("abc"))), delete_set=ds((4, [(1, 1)]))), 3),
}


# Well-formed, but not what a document holds: from_payload refuses these (see below).
NOT_DOCUMENT_CONTENT = {
    **{name: "a nested shared type" for name in VALID if name.startswith("type ")},
    "type map with a child": "as its parent",  # the first reason found
    "embed": "embed content", "format": "format content", "subdocument": "a subdocument",
}


@pytest.mark.parametrize("name", list(VALID))
def test_hand_encoded_content_parses_with_the_clock_yrs_counts(name):
    data, length = VALID[name]
    info = parse_update(data)
    assert info.writers == {4}
    assert info.clock_ranges == ((4, 0, length),)
    assert yrs_state(data) == {4: length}
    if name in NOT_DOCUMENT_CONTENT:
        with pytest.raises(MalformedWire, match=NOT_DOCUMENT_CONTENT[name]):
            Document.from_payload(data)
    else:
        assert Document.from_payload(data).writers() == {4}


def test_skip_blocks_belong_to_their_section_and_yrs_holds_what_follows():
    data = update(section(4, 0, skip(2), item(4, s("ab"))))
    assert parse_update(data).clock_ranges == ((4, 0, 4),)
    assert yrs_state(data).get(4, 0) == 0  # clocks 0 and 1 are still missing
    assert Document.from_payload(data).writers() == {4}


def test_empty_content_takes_no_clock_as_in_yrs():
    # Yrs writes an empty string when an edit splits a surrogate pair, and drops it on reading.
    data = update(section(4, 0, item(4, s("ab")), item(4, s(""), origin=(4, 1)), item(8, anys()), item(1, uv(0)),
                          item(4, s("c"), origin=(4, 1))))
    assert parse_update(data).clock_ranges == ((4, 0, 3),)
    assert yrs_state(data) == {4: 3}
    assert Document.from_payload(data).writers() == {4}
    # Nothing but empty content: Yrs reads no struct of client 4, so it is not admitted.
    nothing = update(section(4, 0, item(4, s(""))))
    assert parse_update(nothing).writers == {4}
    assert yrs_state(nothing) == {}
    with pytest.raises(MalformedWire, match="Yrs reads"):
        Document.from_payload(nothing)


def test_the_parent_sub_bit_of_an_item_with_an_origin_carries_no_key():
    # Yrs sets the bit from the item's map key but writes the key only without origins.
    data = update(section(4, 0, item(8, anys(a_int(1)), sub="k"), item(8, anys(a_int(2)), origin=(4, 0), info_extra=0x20)))
    assert parse_update(data).clock_ranges == ((4, 0, 2),)
    assert yrs_state(data) == {4: 2}


# --- hand-encoded: what is refused, and where ------------------------------------------------

REFUSED = {
    "truncated": (update(section(4, 0, item(4, s("abc"))))[:-3], "3 bytes declared, 1 left"),
    "truncated varint": (uv(1) + uv(1) + uv(4) + uv(0) + b"\x00\x80", "GC length: unexpected end"),
    "trailing bytes": (update() + b"\x00", "trailing bytes"),
    "empty section": (uv(2) + uv(0) + uv(4) + uv(0) + section(5, 0, gc(), gc()) + b"\x00", "no structs"),
    "zero gc": (update(section(4, 0, gc(0))), "zero length"),
    "zero skip": (update(section(4, 0, skip(0))), "zero length"),
    "legacy json": (update(section(4, 0, item(2, uv(1) + s("1") + s("2")))), "JSON content"),
    "move": (update(section(4, 0, item(11, b"\x00\x01\x00"))), "move content"),
    "content ref 0 with flags": (update(section(4, 0, item(0, b"", sub="k"))), "content ref 0"),
    "content ref 12": (update(section(4, 0, item(12, b""))), "content ref 12"),
    "info bit 4": (update(section(4, 0, item(8, anys(a_int(1)), info_extra=0x10))), "bit 4"),
    "parent info 2": (update(section(4, 0, b"\x08" + uv(2) + uv(1) + uv(0) + anys(a_int(1)))), "parent info 2"),
    "xml hook": (update(section(4, 0, item(7, b"\x05", sub="a"))), "XmlHook"),
    "weak link": (update(section(4, 0, item(7, b"\x07", sub="a"))), "weak link"),
    "type ref 8": (update(section(4, 0, item(7, b"\x08", sub="a"))), "unknown type ref 8"),
    "any tag 115": (one_value(b"\x73"), "unknown any tag 115"),
    "bad utf-8": (update(section(4, 0, item(4, s(b"\xff")))), "not UTF-8"),
    "utf-8 surrogate": (update(section(4, 0, item(4, s(b"\xed\xa0\x80")))), "not UTF-8"),
    "bad utf-8 key": (update(section(4, 0, item(8, anys(a_int(1)), sub=b"\xc3"))), "not UTF-8"),
    "embed not json": (update(section(4, 0, item(5, s("{")))), "not JSON"),
    "embed nan": (update(section(4, 0, item(5, s("NaN")))), "not JSON"),
    "overlong varint": (uv(1) + b"\x81\x00" + uv(4) + uv(0) + gc() + b"\x00", "redundant trailing zero"),
    "overlong signed varint": (one_value(b"\x7d\x81\x00"), "redundant trailing zero"),
    "u32 too wide": (b"\xff\xff\xff\xff\x1f" + b"\x00", "above the limit of 4294967295"),
    "u32 too long": (b"\x80\x80\x80\x80\x80\x01", "longer than 5 bytes"),
    "empty delete-set client": (update(delete_set=ds((4, []), (5, [(0, 1), (2, 1)]))), "no ranges"),
    "zero deleted range": (update(delete_set=ds((4, [(0, 0)]))), "zero length"),
    "count beyond the bytes": (update(section(4, 0, item(8, uv(10) + a_int(1) + a_int(2)))), "bytes left hold at most"),
    "string beyond the bytes": (update(section(4, 0, item(4, uv(50) + b"abc"))), "50 bytes declared"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_hand_encoded_refusals_name_what_and_where(name):
    data, fragment = REFUSED[name]
    message = refused(data, fragment)
    assert " at byte " in message
    with pytest.raises(MalformedWire):
        Document.from_payload(data)


def test_yrs_reads_legacy_json_content_one_string_long():
    # Why JSON content is refused: Yrs does not read back what it writes.
    one = update(section(4, 0, item(2, uv(1) + s("1"))))
    with pytest.raises(ValueError):
        pycrdt.Doc().apply_update(one)
    assert yrs_state(update(section(4, 0, item(2, uv(1) + s("1") + s("2"))))) == {4: 2}


def test_offsets_point_at_the_bad_part():
    head = update(section(4, 0, item(4, s("ok"))))[:-1]  # without the delete set
    data = uv(2) + head[1:] + section(5, 0, gc(0)) + b"\x00"
    gc_at = len(uv(2) + head[1:]) + 3  # struct count, client, clock
    assert f"at byte {gc_at + 1}" in refused(data, "GC length: zero length")


# --- every limit at its boundary -------------------------------------------------------------

def test_max_update_bytes():
    def of_size(size: int) -> bytes:
        for n in range(size, 0, -1):
            data = update(section(4, 0, item(4, s("a" * n))))
            if len(data) == size:
                return data
        raise AssertionError(size)

    assert parse_update(of_size(MAX_UPDATE_BYTES)).clock_ranges[0][2] > 60000
    assert Document.from_payload(of_size(MAX_UPDATE_BYTES)).writers() == {4}
    refused(of_size(MAX_UPDATE_BYTES + 1), f"the limit is {MAX_UPDATE_BYTES}")
    assert parse_update(of_size(MAX_UPDATE_BYTES + 1), trusted=True).writers == {4}


def test_max_clients():
    def clients(n: int) -> bytes:
        return update(*(section(c, 0, gc()) for c in range(1, n + 1)))

    assert parse_update(clients(MAX_CLIENTS)).writers == set(range(1, MAX_CLIENTS + 1))
    assert Document.from_payload(clients(MAX_CLIENTS)).writers() == set(range(1, MAX_CLIENTS + 1))
    refused(clients(MAX_CLIENTS + 1), "number of clients", f"the limit is {MAX_CLIENTS}")


def test_max_delete_set_clients():
    def clients(n: int) -> bytes:
        return update(delete_set=ds(*((c, [(0, 1)]) for c in range(1, n + 1))))

    assert parse_update(clients(MAX_CLIENTS)).deleted_clients == set(range(1, MAX_CLIENTS + 1))
    Document.from_payload(clients(MAX_CLIENTS))
    refused(clients(MAX_CLIENTS + 1), "number of delete-set clients", f"the limit is {MAX_CLIENTS}")


def test_max_structs_in_one_section_and_over_several():
    assert parse_update(update(section(4, 0, *[gc()] * MAX_STRUCTS))).struct_count == MAX_STRUCTS
    assert Document.from_payload(update(section(4, 0, *[gc()] * MAX_STRUCTS))).writers() == {4}
    refused(update(section(4, 0, *[gc()] * (MAX_STRUCTS + 1))), "number of structs", f"the limit is {MAX_STRUCTS}")
    half = MAX_STRUCTS // 2
    assert parse_update(update(section(4, 0, *[gc()] * half), section(5, 0, *[gc()] * half))).struct_count == MAX_STRUCTS
    refused(update(section(4, 0, *[gc()] * half), section(5, 0, *[gc()] * (half + 1))),
            f"after {half} before it", f"the limit is {MAX_STRUCTS}")


def test_max_delete_ranges():
    def ranges(n: int) -> bytes:
        return update(delete_set=ds((4, [(0, 1)] * n)))

    assert parse_update(ranges(MAX_DELETE_RANGES)).delete_range_count == MAX_DELETE_RANGES
    Document.from_payload(ranges(MAX_DELETE_RANGES))
    refused(ranges(MAX_DELETE_RANGES + 1), "number of deleted ranges", f"the limit is {MAX_DELETE_RANGES}")
    half = MAX_DELETE_RANGES // 2
    refused(update(delete_set=ds((4, [(0, 1)] * half), (5, [(0, 1)] * (half + 1)))), f"after {half} before it")


@pytest.mark.parametrize("where", ["section", "origin", "parent", "delete set"])
def test_max_client_id(where):
    def with_client(c: int) -> bytes:
        if where == "section":
            return update(section(c, 0, gc()))
        if where == "origin":
            return update(section(4, 0, item(4, s("a"), origin=(c, 0))))
        if where == "parent":
            return update(section(4, 0, item(4, s("a"), parent=(c, 0))))
        return update(delete_set=ds((c, [(0, 1)])))

    assert parse_update(with_client(MAX_CLIENT_ID))
    if where == "parent":  # well-formed, but never a document's (see the shape tests)
        with pytest.raises(MalformedWire, match="as its parent"):
            Document.from_payload(with_client(MAX_CLIENT_ID))
    else:
        Document.from_payload(with_client(MAX_CLIENT_ID))
    refused(with_client(MAX_CLIENT_ID + 1), f"above the limit of {MAX_CLIENT_ID}")


def test_a_client_id_above_53_bits_would_alias_another_in_yrs():
    # Why MAX_CLIENT_ID: Yrs drops the high bits, so this would be written as client 7.
    alias = update(section(2**53 + 7, 0, item(8, anys(a_int(1)), sub="k")))
    assert yrs_state(alias) == {7: 1}
    refused(alias, "client id")


def test_max_clock():
    assert parse_update(update(section(4, MAX_CLOCK - 1, gc()))).clock_ranges == ((4, MAX_CLOCK - 1, MAX_CLOCK),)
    Document.from_payload(update(section(4, MAX_CLOCK - 1, gc())))
    refused(update(section(4, MAX_CLOCK - 1, gc(2))), f"ends at clock {MAX_CLOCK + 1}")
    refused(update(section(4, MAX_CLOCK, gc())), f"ends at clock {MAX_CLOCK + 1}")
    refused(update(section(4, MAX_CLOCK + 1, gc())), "starting clock", f"above the limit of {MAX_CLOCK}")
    refused(update(section(4, 0, gc(MAX_CLOCK), gc())), f"ends at clock {MAX_CLOCK + 1}")
    parse_update(update(section(4, 0, item(4, s("a"), origin=(5, MAX_CLOCK)))))
    refused(update(section(4, 0, item(4, s("a"), origin=(5, MAX_CLOCK + 1)))), "origin clock")
    parse_update(update(delete_set=ds((4, [(MAX_CLOCK - 1, 1)]))))
    refused(update(delete_set=ds((4, [(MAX_CLOCK - 1, 2)]))), f"ends at clock {MAX_CLOCK + 1}")


def test_max_any_depth():
    parse_update(one_value(nested_arrays(MAX_ANY_DEPTH)))
    Document.from_payload(one_value(nested_arrays(MAX_ANY_DEPTH)))
    refused(one_value(nested_arrays(MAX_ANY_DEPTH + 1)), f"nested deeper than {MAX_ANY_DEPTH}")
    deep_map = a_int(1)
    for _ in range(MAX_ANY_DEPTH + 1):
        deep_map = a_map(k=deep_map)
    refused(one_value(deep_map), f"nested deeper than {MAX_ANY_DEPTH}")


def test_max_any_depth_of_embedded_json():
    def embed(levels: int) -> bytes:
        return update(section(4, 0, item(5, s("[" * levels + "]" * levels))))

    assert parse_update(embed(MAX_ANY_DEPTH)).contents == {"embed"}
    with pytest.raises(MalformedWire, match="embed content"):  # well-formed, never a document's
        Document.from_payload(embed(MAX_ANY_DEPTH))
    refused(embed(MAX_ANY_DEPTH + 1), f"nested deeper than {MAX_ANY_DEPTH}")
    refused(embed(20_000), "embed content: not JSON")  # too deep even for json.loads


@pytest.mark.parametrize("sign", [1, -1])
def test_max_any_int(sign):
    assert len(sv(MAX_ANY_INT)) == 8
    parse_update(one_value(a_int(sign * MAX_ANY_INT)))
    assert Document.from_payload(one_value(a_int(sign * MAX_ANY_INT))).writers() == {5}
    refused(one_value(a_int(sign * (MAX_ANY_INT + 1))), f"above the limit of {MAX_ANY_INT}")
    refused(one_value(b"\x7d" + b"\xff" * 8 + b"\x01"), "longer than 8 bytes")


def test_varints_are_read_to_their_widths():
    # A client id takes at most 8 bytes (53 bits), a clock or count at most 5 (32 bits).
    assert len(uv(MAX_CLIENT_ID)) == 8
    parse_update(update(section(MAX_CLIENT_ID, 0, gc())))
    refused(uv(1) + uv(1) + b"\xff" * 8 + b"\x01" + uv(0) + gc() + b"\x00", "client id", "longer than 8 bytes")
    refused(uv(1) + uv(1) + uv(4) + uv(0) + b"\x00" + b"\x80" * 5 + b"\x01" + b"\x00", "GC length", "longer than 5 bytes")


# --- a document's shape, judged by the bytes alone -------------------------------------------
#
# Yrs refuses some items only late: one that gives another client's plain item as its parent
# waits harmlessly in an empty document, and breaks every read of a state that holds that
# item. from_payload therefore refuses, from the update alone, whatever a document's own
# edits never write; the same bytes get the same verdict on every replica, in any order.

def test_the_parse_records_how_each_item_gives_its_parent_and_what_it_holds():
    data = update(
        section(4, 0,
                item(8, anys(a_int(1)), sub="k"),  # fields, key k
                item(8, anys(a_int(2))),  # lines
                item(8, anys(a_int(3)), parent=(7, 3), sub="x"),
                item(4, s("ab"), parent=(7, 4)),
                item(7, b"\x01", root="t", sub="m"),
                item(3, s(b"\x00"), origin=(4, 0), info_extra=0x20),
                item(1, uv(2), right=(4, 1))),
        section(9, 5, item(9, s("guid") + a_map(), root="lines")),
    )
    info = parse_update(data)
    assert info.roots == {"fields", "lines", "t"}
    assert info.keyed_roots == {"fields", "t"}
    assert info.parent_items == {(7, 3), (7, 4)}
    assert info.implied_parents == 2
    assert info.contents == {"any", "string", "type", "binary", "deleted", "doc"}
    assert parse_update(data, trusted=True) == info


def test_what_a_document_writes_has_a_documents_shape():
    doc = Document()
    deltas = [doc.set_field(1, "status", "open"), doc.add_line(2, {"sku": "tea", "notes": [{"n": 1}]}),
              doc.set_field(2, "status", {"paid": [1, b"\x00", None]}), doc.remove_line(1, 0)]
    for data in [d.to_wire()[2] for d in deltas] + [doc.to_wire()[2]]:
        info = parse_update(data)
        assert info.roots <= {"fields", "lines"} and info.keyed_roots <= {"fields"}
        assert not info.parent_items and info.contents <= {"any", "deleted"}
        Document.from_payload(data)


def _shaped(*structs: bytes, client: int = 4) -> bytes:
    return update(section(client, 0, *structs))


SHAPE_REFUSED = {
    "parent: another's item, by key": (_shaped(item(8, anys(a_str("x")), parent=(3, 0), sub="k")),
                                       "gives item 3:0 as its parent"),
    "parent: another's item, no key": (_shaped(item(8, anys(a_int(1)), parent=(3, 0))), "gives item 3:0 as its parent"),
    "parent: its own nested map": (_shaped(item(7, b"\x01", sub="m"), item(8, anys(a_int(1)), parent=(4, 0), sub="x")),
                                   "gives item 4:0 as its parent"),
    "parent: deleted content's item": (_shaped(item(1, uv(1), parent=(4, 0))), "gives item 4:0 as its parent"),
    "root t": (_shaped(item(8, anys(a_int(1)), root="t", sub="k")), "gives root 't'"),
    "root with no name": (_shaped(item(8, anys(a_int(1)), root="")), "gives root ''"),
    "root Fields": (_shaped(item(8, anys(a_int(1)), root="Fields", sub="k")), "gives root 'Fields'"),
    "root body, behind good items": (update(section(4, 0, item(8, anys(a_int(1)), sub="k")),
                                            section(5, 0, item(4, s("x")), item(4, s("y"), root="body"))),
                                     "gives root 'body'"),
    "a key under lines": (_shaped(item(8, anys(a_int(1)), root="lines", sub="k")), "map key under 'lines'"),
    "nested map in fields": (_shaped(item(7, b"\x01", sub="m")), "a nested shared type"),
    "nested array in lines": (_shaped(item(7, b"\x00")), "a nested shared type"),
    "nested text after an origin": (_shaped(item(8, anys(a_int(1))), item(7, b"\x02", origin=(4, 0))),
                                    "a nested shared type"),
    "xml element in fields": (_shaped(item(7, b"\x03" + s("p"), sub="x")), "a nested shared type"),
    "subdocument in fields": (_shaped(item(9, s("guid") + a_map(), sub="d")), "a subdocument"),
    "format under a field's key": (_shaped(item(6, s("bold") + s("true"), sub="status")), "format content"),
    "embed in lines": (_shaped(item(5, s("{}"))), "embed content"),
}


@pytest.mark.parametrize("name", list(SHAPE_REFUSED))
def test_updates_of_another_shape_are_refused_from_their_bytes(name):
    data, fragment = SHAPE_REFUSED[name]
    # Well-formed: the parse, and the document's own (trusted) log parse, accept them.
    assert parse_update(data).writers
    assert Document._from_update(data).writers() == parse_update(data, trusted=True).writers
    with pytest.raises(MalformedWire, match=fragment) as info:
        Document.from_payload(data)
    assert str(info.value).startswith("doc: an item ")
    with pytest.raises(MalformedWire, match=fragment):
        Document.from_wire(["doc", 1, data])


def test_a_format_item_under_a_key_would_break_the_read():
    # Why format content is refused too: pycrdt cannot read a map whose value is one.
    data, _ = SHAPE_REFUSED["format under a field's key"]
    state = Document()
    state.merge(Document._from_update(data))
    with pytest.raises(IntegrityError, match="KeyError"):
        state.value


def test_the_documents_own_log_parse_stays_permissive():
    # A log is what this process's Yrs wrote; writers() reads it whatever its shape.
    doc = Document()

    def nest(fields, lines):
        fields["nested"] = pycrdt.Map()

    delta = doc.change(5, nest)
    assert delta.writers() == {5} and doc.writers() == {5}
    with pytest.raises(MalformedWire, match="a nested shared type"):
        Document.from_payload(delta.to_wire()[2])


def _status_open() -> Document:
    state = Document()
    state.set_field(3, "status", "open")  # item 3:0, plain data
    return state


def _attack_hand_encoded() -> bytes:
    return update(section(4, 0, item(8, anys(a_str("x")), parent=(3, 0), sub="k")))


def _attack_by_pycrdt() -> bytes:
    # Client 3 makes "status" a nested map in the attacker's own world; client 4 writes
    # into it. Client 4's update names 3:0 as its parent, which in a real order is "open".
    three = pycrdt.Doc(client_id=3)
    three.get("fields", type=pycrdt.Map)["status"] = pycrdt.Map()
    four = pycrdt.Doc(client_id=4)
    four.apply_update(three.get_update())
    before = four.get_state()
    four.get("fields", type=pycrdt.Map)["status"]["k"] = "x"
    return four.get_update(before)


@pytest.mark.parametrize("attack", [_attack_hand_encoded, _attack_by_pycrdt], ids=["hand-encoded", "pycrdt"])
def test_an_item_parented_on_another_writers_plain_item_is_refused(attack):
    data = attack()
    info = parse_update(data)
    assert info.writers == {4} and info.parent_items == {(3, 0)} and info.keyed_roots == frozenset()
    # The bytes are real. The pre-fix check, Yrs applying them to an empty document, let
    # them through: there the item only waits for 3:0…
    pycrdt.Doc(client_id=2**53 - 1).apply_update(data)
    # …but then the pre-fix read, Yrs rebuilding the view from the merged log, fails with a
    # bare RuntimeError for good, whichever of the two arrived first.
    for log in (pycrdt.merge_updates(_status_open().to_wire()[2], data),
                pycrdt.merge_updates(data, _status_open().to_wire()[2])):
        with pytest.raises(RuntimeError, match="must be deleted or shared ref type"):
            pycrdt.Doc(client_id=2**53 - 1).apply_update(log)
    # Now: refused from the bytes alone, before any state sees them.
    state = _status_open()
    with pytest.raises(MalformedWire, match="gives item 3:0 as its parent"):
        state.merge(Document.from_payload(data))
    assert state.value == {"fields": {"status": "open"}, "lines": []}
    with pytest.raises(MalformedWire, match="gives item 3:0 as its parent"):
        Document.from_wire(["doc", 1, data])
    # And as a last line, a state that holds them anyway (merged past from_payload) fails
    # with tillmesh's error, not Yrs's.
    broken = _status_open()
    broken.merge(Document._from_update(data))
    with pytest.raises(IntegrityError, match="must be deleted or shared ref type"):
        broken.value
    with pytest.raises(IntegrityError):
        broken.fingerprint()


# Admitted deltas, merged in any order, always leave a readable state. Three sources: real
# deltas of several writers on their own copies (concurrent edits, removals of each other's
# lines, dict and list values); byte mutations of them that from_payload admits; and
# hand-built items that a malicious writer could send, with origins, right origins, roots,
# keys and delete ranges pointing anywhere in the real history, under its own client id or
# reusing the clocks of a real writer's.

copy_edits = st.lists(
    st.one_of(
        st.tuples(st.just("field"), st.integers(0, 2), st.sampled_from(["table", "status"]),
                  plain_values(max_int=2**53 - 1)),
        st.tuples(st.just("line"), st.integers(0, 2), plain_values(max_int=2**53 - 1)),
        st.tuples(st.just("remove"), st.integers(0, 2), st.integers(0, 100)),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
    ),
    min_size=1, max_size=14,
)


def _real_deltas(program, writers) -> list[bytes]:
    """The deltas of three copies, each written by its own writer, synced now and then."""
    copies, deltas, seen = [Document() for _ in range(3)], [], [[] for _ in range(3)]
    for kind, who, *args in program:
        doc, me = copies[who], writers[who]
        if kind == "sync":
            for d in seen[args[0]]:
                doc.merge(Document._from_update(d))
            seen[who] += seen[args[0]]
            continue
        if kind == "field":
            delta = doc.set_field(me, args[0], args[1])
        elif kind == "line":
            delta = doc.add_line(me, {"item": args[0]})
        elif doc.value["lines"]:
            delta = doc.remove_line(me, args[0] % len(doc.value["lines"]))
        else:
            continue
        deltas.append(delta.to_wire()[2])
        seen[who].append(deltas[-1])
    return deltas


_ATTACKER = 99


def _ids(draw, known: list[tuple[int, int]]):
    """An id written in the real history, or near it (the attacker's own included)."""
    clients = sorted({_ATTACKER} | {client for client, _ in known})
    return draw(st.one_of(st.sampled_from(known), st.tuples(st.sampled_from(clients), st.integers(0, 12))))


@st.composite
def crafted_delta(draw, deltas: list[bytes]) -> bytes:
    """A hand-built delta of a document's shape, aimed at the ids of the real deltas."""
    known = [(client, clock) for d in deltas for client, first, end in parse_update(d).clock_ranges
             for clock in range(first, end)] or [(_ATTACKER, 0)]
    client = draw(st.sampled_from(sorted({_ATTACKER} | {k[0] for k in known})))
    structs = []
    for _ in range(draw(st.integers(1, 4))):
        content = draw(st.sampled_from([
            (8, anys(a_int(1))), (8, anys(a_map(k=a_str("v")), a_int(2))), (4, s("ab")), (4, s("")),
            (3, s(b"\x01")), (1, uv(2)), (8, anys(b"\x7f")), (8, anys(b"\x7c\x3f\x80\x00\x00")),
        ]))
        how = draw(st.sampled_from(["field", "unkeyed field", "line", "origin", "right", "both", "origin+bit"]))
        if how == "field":
            structs.append(item(*content, sub=draw(st.sampled_from(["status", "table", "k"]))))
        elif how == "unkeyed field":
            structs.append(item(*content, root="fields"))
        elif how == "line":
            structs.append(item(*content))
        elif how == "origin":
            structs.append(item(*content, origin=_ids(draw, known)))
        elif how == "origin+bit":
            structs.append(item(*content, origin=_ids(draw, known), info_extra=0x20))
        elif how == "right":
            structs.append(item(*content, right=_ids(draw, known)))
        else:
            structs.append(item(*content, origin=_ids(draw, known), right=_ids(draw, known)))
    if draw(st.booleans()):
        structs.insert(0, draw(st.sampled_from([gc(1), skip(1)])))
    deletes = draw(st.lists(st.tuples(st.sampled_from(known), st.integers(1, 3)), max_size=2))
    delete_set = ds(*((c, [(k, n)]) for (c, k), n in dict(deletes).items())) if deletes else b"\x00"
    start = draw(st.integers(0, 12))
    return update(section(client, start, *structs), delete_set=delete_set)


def _equivocates(deltas: list[bytes]) -> bool:
    """Two different deltas write the same clock of one client: Yrs keeps whichever it
    folds first, so the order decides (a writer lying about its history, not a shape)."""
    written: dict[int, list[tuple[int, int, bytes]]] = {}
    for d in set(deltas):
        for client, first, end in parse_update(d).clock_ranges:
            for other_first, other_end, other in written.get(client, []):
                if other != d and first < other_end and other_first < end:
                    return True
            written.setdefault(client, []).append((first, end, d))
    return False


def _admitted(data: bytes) -> bool:
    try:
        Document.from_payload(data)
    except MalformedWire:
        return False
    return True


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data(), writers=st.lists(writer_ids, min_size=3, max_size=3, unique=True), program=copy_edits,
       rnd=st.randoms(use_true_random=False))
def test_admitted_deltas_in_any_order_always_leave_a_readable_state(data, writers, program, rnd):
    real = _real_deltas(program, writers)
    mutated = [_mutate(d, data.draw(st.lists(mutation, min_size=1, max_size=3))) for d in real[:4]]
    crafted = data.draw(st.lists(crafted_delta(real), max_size=4))
    assert all(map(_admitted, real))
    admitted = real + [d for d in mutated + crafted if _admitted(d)]
    orders = [list(admitted), admitted[::-1]]
    rnd.shuffle(orders[0])
    fingerprints = []
    for order in orders:
        state = Document()
        for d in order:
            state.merge(Document.from_payload(d))
            try:  # anything else than a TillmeshError would fail the test as it is
                value = state.value
                state.fingerprint()
            except TillmeshError as exc:
                raise AssertionError(f"an admitted delta broke the state: {exc}") from exc
            assert set(value) == {"fields", "lines"}
        fingerprints.append(state.fingerprint())
    # The same set of deltas, in any order, is the same state (unless a writer equivocates).
    if not _equivocates(admitted):
        assert fingerprints[0] == fingerprints[1]

