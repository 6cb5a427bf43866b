"""Revocation cutoffs only ever tighten.

The authority may revoke a device more than once (a second, later look at the logs; an admin
retrying). Each revocation names the last seq of the device's feed still accepted. A keyring
keeps, per revoked device, the MINIMUM of every cutoff it has seen: a later revocation with a
higher cutoff must not re-admit entries an earlier one refused, on any keyring, however it
learnt the revocations (the authority's own, a fresh token, a token from before that then
applies the authority feed entry by entry, or a bare verifier replaying the feed).

Only names exported by the top-level ``gossip`` package are used (Authority, DeviceKey,
Keyring, Revoked, import_token).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import Authority, DeviceKey, Keyring, Revoked, import_token

T0 = 1_700_000_000_000


def seeded(seed: int):
    """A deterministic random-bytes source (kept here: ``gossip.seeded`` moved to ``gossip.testing``)."""
    return random.Random(seed).randbytes


class World:
    """An authority with two tills; ``victim`` gets revoked, ``bystander`` does not."""

    def __init__(self, seed: int = 7) -> None:
        random_bytes = seeded(seed)
        self.authority = Authority.create(random_bytes, T0)
        self.keys = {}
        for name in ("victim", "bystander"):
            key = DeviceKey.generate(random_bytes)
            cert = self.authority.enroll(key.public, name=name, branch="b1", roles=("cashier",), now_ms=T0)
            self.keys[name] = (key, cert.number)
        self.victim = self.keys["victim"][1]
        self.bystander = self.keys["bystander"][1]
        # A device that came up before any revocation; it later applies the new feed entries.
        self.early, _, entries = import_token(self.authority.token(self.bystander), self.keys["bystander"][0])
        self.early_head = len(entries)
        assert self.early.revocations == {}

    def revoke_all(self, cutoffs) -> None:
        for i, cutoff in enumerate(cutoffs):
            self.authority.revoke(self.victim, cutoff, T0 + 1 + i)

    def keyrings(self) -> dict[str, Keyring]:
        """Every way a keyring can learn the revocations, built after ``revoke_all``."""
        authority = self.authority
        for entry in authority.feed[self.early_head:]:  # only what it has not applied yet
            self.early.apply_control_entry(entry)
        self.early_head = len(authority.feed)
        replayed = Keyring(authority.keyring.authority_key, authority.keyring.network_key)
        for entry in authority.feed:
            replayed.apply_control_entry(entry)
        return {
            "authority": authority.keyring,
            "victim token": import_token(authority.token(self.victim), self.keys["victim"][0])[0],
            "bystander token": import_token(authority.token(self.bystander), self.keys["bystander"][0])[0],
            "early token + feed entries in order": self.early,
            "verifier replaying the feed": replayed,
        }


def accepts(keyring: Keyring, origin: int, seq: int) -> bool:
    """Whether ``keyring`` takes entry ``seq`` of ``origin`` (refusing only with ``Revoked``)."""
    try:
        keyring.check_origin(origin, seq)
    except Revoked:
        return False
    return True


@pytest.mark.parametrize("cutoffs", [(5, 9), (9, 5)], ids=["looser-second", "tighter-second"])
def test_a_second_revocation_keeps_the_tighter_cutoff(cutoffs):
    world = World()
    world.revoke_all(cutoffs)
    for how, keyring in world.keyrings().items():
        assert keyring.revocations == {world.victim: 5}, how


@pytest.mark.parametrize("cutoffs", [(5, 9), (9, 5)], ids=["looser-second", "tighter-second"])
def test_entries_past_the_tighter_cutoff_are_refused(cutoffs):
    world = World()
    world.revoke_all(cutoffs)
    for how, keyring in world.keyrings().items():
        assert [seq for seq in range(1, 12) if accepts(keyring, world.victim, seq)] == [1, 2, 3, 4, 5], how
        with pytest.raises(Revoked):
            keyring.check_origin(world.victim, 6)
        # Revoking one device leaves the others' feeds alone.
        assert accepts(keyring, world.bystander, 10**6), how


def test_the_first_cutoff_is_applied_before_the_second_arrives():
    # An entry refused under the first revocation stays refused once the looser one lands.
    world = World()
    world.revoke_all([5])
    first = world.keyrings()
    assert all(k.revocations == {world.victim: 5} for k in first.values())
    assert not any(accepts(k, world.victim, 6) for k in first.values())
    world.revoke_all([9])
    for how, keyring in world.keyrings().items():
        assert keyring.revocations == {world.victim: 5}, how
        assert not accepts(keyring, world.victim, 6), how
        assert accepts(keyring, world.victim, 5), how


cutoffs = st.lists(st.one_of(st.integers(0, 12), st.integers(0, 2**40)), min_size=1, max_size=5)


@given(cutoffs=cutoffs)
def test_the_cutoff_kept_is_the_minimum_of_all_published(cutoffs):
    world = World()
    world.revoke_all(cutoffs)
    lowest = min(cutoffs)
    for how, keyring in world.keyrings().items():
        assert keyring.revocations == {world.victim: lowest}, (how, cutoffs)
        if lowest >= 1:  # seqs start at 1; cutoff 0 refuses the whole feed
            assert accepts(keyring, world.victim, lowest), (how, cutoffs)
        assert not accepts(keyring, world.victim, lowest + 1), (how, cutoffs)
        assert not accepts(keyring, world.victim, max(cutoffs) + 1), (how, cutoffs)
