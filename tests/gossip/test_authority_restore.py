"""``Authority.restore``: an admin machine rebuilds its authority from keys + feed, and a
feed that is not this authority's (tampered, reordered, another network's) is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crdt_types import InvalidInput
from gossip import (
    Authority,
    BadSignature,
    DeviceKey,
    MalformedData,
    WrongNetwork,
    import_token,
)
from gossip.testing import seeded

from .helpers import T0


def built(seed: int = 7) -> tuple[Authority, bytes]:
    random_bytes = seeded(seed)
    authority = Authority.create(random_bytes, T0)
    for i, roles in enumerate([("cashier",), ("manager",), ("relay",)], start=1):
        authority.enroll(DeviceKey.generate(random_bytes).public, name=f"d{i}", branch="b1", roles=roles, now_ms=T0)
    authority.revoke(1, 5, T0 + 1)
    return authority, authority.keyring.network_key


def test_restore_rebuilds_the_same_authority_and_it_keeps_publishing_on_the_same_chain():
    original, network_key = built()
    restored = Authority.restore(original.key, network_key, seeded(99), [e.encode() for e in original.feed])
    assert restored.network_id == original.network_id
    assert [e.hash for e in restored.feed] == [e.hash for e in original.feed]
    assert restored.current_epoch == original.current_epoch == 1
    assert restored._epoch_data_keys == original._epoch_data_keys
    assert restored.keyring.revocations == {1: 5}
    # Entry objects are taken too.
    assert Authority.restore(original.key, network_key, seeded(1), original.feed).feed == restored.feed

    device = DeviceKey.generate(seeded(5))
    cert = restored.enroll(device.public, name="d4", branch="b1", roles=("cashier",), now_ms=T0 + 2)
    assert cert.number == 4
    keyring, got, entries = import_token(restored.token(4), device)
    assert got == cert and len(entries) == len(restored.feed)
    # The new device can read every epoch, including those rolled before the restore.
    assert all(keyring.epoch_key(e) == original._epoch_data_keys[e] for e in (0, 1))
    assert restored.revoke(2, 0, T0 + 3) == 2


def test_restore_refuses_another_network_feed():
    original, network_key = built()
    other, _ = built(seed=8)
    with pytest.raises(WrongNetwork):
        Authority.restore(original.key, network_key, seeded(1), other.feed)


def test_restore_refuses_a_tampered_reordered_or_empty_feed():
    original, network_key = built()
    feed = list(original.feed)
    forged = replace(feed[3], signature=bytes(64))
    with pytest.raises(BadSignature):
        Authority.restore(original.key, network_key, seeded(1), feed[:3] + [forged] + feed[4:])
    with pytest.raises(MalformedData):
        Authority.restore(original.key, network_key, seeded(1), [feed[0], feed[2], feed[1], *feed[3:]])
    with pytest.raises(MalformedData):
        Authority.restore(original.key, network_key, seeded(1), [])
    with pytest.raises(MalformedData):
        Authority.restore(original.key, network_key, seeded(1), [b"\xff not an entry"])


def test_restore_refuses_a_feed_without_every_epoch_grant_to_itself():
    original, network_key = built()
    # Entry 1 is the authority's certificate; entry 2 its epoch-0 grant. Without the grant no
    # epoch key can be recovered.
    with pytest.raises(MalformedData, match="epoch"):
        Authority.restore(original.key, network_key, seeded(1), original.feed[:1])


def test_restore_refuses_bad_keys():
    original, network_key = built()
    with pytest.raises(InvalidInput):
        Authority.restore(original.key.seed, network_key, seeded(1), original.feed)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Authority.restore(original.key, network_key[:16], seeded(1), original.feed)
    with pytest.raises(InvalidInput):
        Authority.restore(original.key, network_key, seeded(1), original.feed[0].encode())  # type: ignore[arg-type]
