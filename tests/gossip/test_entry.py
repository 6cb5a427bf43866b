"""Entry encodings assembled by hand must equal their definitions."""

from gossip import Entry
from gossip._codec import signable


def test_entry_signed_bytes_are_the_signable_form():
    entry = Entry(3, 7, bytes(32), 0, ((1, 2),), bytes(range(60)), bytes(64))
    assert entry.signed_bytes() == signable(b"tillmesh/v1/entry", [entry.header(), entry.body])


def test_a_decoded_entry_keeps_the_exact_bytes_it_came_from():
    entry = Entry(3, 7, bytes(32), 0, ((1, 2),), bytes(range(60)), bytes(64))
    data = entry.encode()
    again = Entry.decode(data)
    assert again == entry and again.encode() == data and again.hash == entry.hash
