"""Tests for enrollment tokens (``Authority.token`` / ``import_token``): round trip, refusals,
and fuzzing — a token comes from a QR code or a paste, so anything may arrive."""

from __future__ import annotations

import base64
from dataclasses import replace

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from crdt_types import InvalidInput, TillmeshError, canonical
from gossip import (
    AUTHORITY_NUMBER,
    MAX_TOKEN_BYTES,
    TOKEN_PREFIX,
    BadSignature,
    Certificate,
    DeviceKey,
    Entry,
    MalformedData,
    MemoryFeedStore,
    WrongNetwork,
    import_token,
    import_tokens,
)
from gossip._feeds import Feeds
from gossip._identity import sign_record

from .helpers import T0, Network, stock_group

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payload_of(token: str) -> list:
    text = token[len(TOKEN_PREFIX):]
    return cbor2.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def token_of(payload) -> str:
    raw = canonical(payload) if not isinstance(payload, bytes) else payload
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class Setup:
    def __init__(self, seed: int = 5) -> None:
        self.net = Network(seed=seed)
        self.member_key, self.member = self.net.enroll("till-1", ("cashier", "stock"))
        self.relay_key, self.relay = self.net.enroll("cloud", ("relay",))
        self.other_key, self.other = self.net.enroll("till-2")
        self.member_token = self.net.authority.token(self.member)
        self.relay_token = self.net.authority.token(self.relay)


SETUP = Setup()


@pytest.fixture
def setup() -> Setup:
    return Setup()


# -- round trip --------------------------------------------------------------------------------


def test_token_round_trip_gives_a_working_member_keyring(setup):
    token = setup.member_token
    assert token.startswith(TOKEN_PREFIX)
    assert token.isascii() and "=" not in token and "\n" not in token
    keyring, cert, entries = import_token(token, setup.member_key)
    authority = setup.net.authority
    assert cert == authority.keyring.certificates[setup.member]
    assert keyring.number == setup.member and keyring.certificate == cert
    assert keyring.is_member
    assert keyring.network_id == authority.network_id
    assert keyring.network_key == authority.keyring.network_key
    assert keyring.authority_key == authority.key.public
    assert keyring.epoch_key(0) == authority.keyring.epoch_key(0)
    assert keyring.certificates == authority.keyring.certificates
    assert [e.encode() for e in entries] == [e.encode() for e in authority.feed]
    assert all(isinstance(e, Entry) and e.origin == AUTHORITY_NUMBER for e in entries)


def test_imported_keyrings_talk_to_each_other(setup):
    k1, _, entries = import_token(setup.member_token, setup.member_key)
    k2, _, _ = import_token(setup.net.authority.token(setup.other), setup.other_key)
    writer, reader = Feeds(k1, MemoryFeedStore()), Feeds(k2, MemoryFeedStore())
    for entry in entries:  # seeding the store with the returned feed works like ingesting it
        assert reader.ingest(entry.encode()).new
    _, group = stock_group(setup.member)
    entry = writer.append_local(group, random_bytes=setup.net.random_bytes)
    assert reader.ingest(entry.encode()).group == group


def test_relay_token_gives_a_verifier_that_is_not_a_member(setup):
    keyring, cert, _ = import_token(setup.relay_token, setup.relay_key)
    assert cert.is_relay
    assert keyring.is_member is False
    assert keyring.epoch_key(0) is None
    assert keyring.current_epoch == 0
    assert keyring.network_key == setup.net.authority.keyring.network_key  # it may still handshake


def test_token_import_without_a_device_key(setup):
    keyring, cert, _ = import_token(setup.member_token, None)
    assert cert.number == setup.member
    assert keyring.is_member is False  # it cannot open its grants


def test_token_is_deterministic(setup):
    assert setup.net.authority.token(setup.member) == setup.member_token


def test_token_carries_the_authority_feed_so_far(setup):
    setup.net.authority.revoke(setup.other, 0, T0)
    keyring, _, entries = import_token(setup.net.authority.token(setup.member), setup.member_key)
    assert len(entries) == len(setup.net.authority.feed)
    assert keyring.revocations == {setup.other: 0}
    assert keyring.current_epoch == 1 and keyring.is_member


# -- refusals ----------------------------------------------------------------------------------


def test_token_for_another_device_key_is_refused(setup):
    with pytest.raises(WrongNetwork):
        import_token(setup.member_token, setup.other_key)
    with pytest.raises(TillmeshError):
        import_token(setup.member_token, DeviceKey(bytes(32)))


def test_token_for_an_unknown_device(setup):
    with pytest.raises(InvalidInput):
        setup.net.authority.token(99)


@pytest.mark.parametrize("token", [
    None, 5, b"tillmesh1:AAAA", "", "tillmesh1", "tillmesh2:AAAA", TOKEN_PREFIX,
    TOKEN_PREFIX + "!!!!", TOKEN_PREFIX + "é", TOKEN_PREFIX + "A", TOKEN_PREFIX + "AAAA",
    " " + TOKEN_PREFIX + "AAAA",
])
def test_not_a_token(token):
    with pytest.raises(MalformedData):
        import_token(token, None)


def test_token_size_limit():
    with pytest.raises(MalformedData):
        import_token(TOKEN_PREFIX + "A" * (MAX_TOKEN_BYTES * 4 // 3 + 8), None)


def _mutate_payload(setup: Setup, index: int, value) -> str:
    payload = payload_of(setup.member_token)
    payload[index] = value
    return token_of(payload)


@pytest.mark.parametrize("index,value", [
    (0, 2), (1, bytes(31)), (2, bytes(33)), (2, None), (3, []), (3, ["cert"]), (4, "feed"), (4, {}),
])
def test_malformed_token_fields(setup, index, value):
    with pytest.raises(MalformedData):
        import_token(_mutate_payload(setup, index, value), setup.member_key)


def test_token_with_wrong_shape():
    for payload in ([], [1], [1, bytes(32), bytes(32), [], [], None], {"v": 1}, 1):
        with pytest.raises(MalformedData):
            import_token(token_of(payload), None)


def test_token_with_another_networks_authority_key(setup):
    other = Network(seed=6)
    token = _mutate_payload(setup, 1, other.authority.key.public)
    with pytest.raises(WrongNetwork):
        import_token(token, setup.member_key)


def test_token_with_a_forged_certificate(setup):
    payload = payload_of(setup.member_token)
    cert = setup.net.authority.keyring.certificates[setup.member]
    payload[3] = sign_record(cert, setup.member_key).to_wire()
    with pytest.raises(BadSignature):
        import_token(token_of(payload), setup.member_key)


def test_token_with_a_certificate_that_the_feed_does_not_contain(setup):
    # a genuine, authority-signed certificate — but the feed in the token is cut before it
    payload = payload_of(setup.member_token)
    payload[4] = payload[4][:2]
    with pytest.raises(MalformedData):
        import_token(token_of(payload), setup.member_key)


def test_token_with_a_reordered_or_forged_feed(setup):
    payload = payload_of(setup.member_token)
    feed = payload[4]
    for bad_feed in (feed[1:], [feed[1], feed[0], *feed[2:]], [*feed, feed[-1]], [b"junk"], [1]):
        payload[4] = bad_feed
        with pytest.raises(TillmeshError):
            import_token(token_of(payload), setup.member_key)
    entry = Entry.decode(feed[2])
    payload[4] = [*feed[:2], replace(entry, signature=setup.member_key.sign(entry.signed_bytes())).encode(), *feed[3:]]
    with pytest.raises(BadSignature):
        import_token(token_of(payload), setup.member_key)


@pytest.mark.parametrize("roles", [[["cashier"]], [{"r": 1}], ["cashier", ["stock"]]])
def test_token_with_unhashable_roles_is_malformed(setup, roles):
    payload = payload_of(setup.member_token)
    payload[3][7] = roles
    with pytest.raises(MalformedData):
        import_token(token_of(payload), setup.member_key)


def test_token_with_a_non_certificate_record(setup):
    payload = payload_of(setup.member_token)
    grant = cbor2.loads(Entry.decode(payload[4][1]).body)
    payload[3] = grant
    with pytest.raises(MalformedData):
        import_token(token_of(payload), setup.member_key)


# -- fuzzing -----------------------------------------------------------------------------------


def _import(token, device):
    try:
        return import_token(token, device)
    except TillmeshError:
        return None


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_arbitrary_strings(text):
    assert _import(text, None) is None
    assert _import(TOKEN_PREFIX + text, SETUP.member_key) is None


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_payload_bytes(raw):
    result = _import(token_of(raw), SETUP.member_key)
    assert result is None or isinstance(result[1], Certificate)


@FUZZ
@given(index=st.integers(min_value=0),
       char=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .é"))
def test_fuzz_mutated_token_text(index, char):
    token = SETUP.member_token
    index %= len(token)
    mutated = token[:index] + char + token[index + 1:]
    result = _import(mutated, SETUP.member_key)
    if result is not None:
        keyring, cert, _ = result
        assert cert.device_key == SETUP.member_key.public
        assert keyring.network_id == SETUP.net.authority.network_id


@FUZZ
@given(index=st.integers(min_value=0), value=st.integers(0, 255), cut=st.booleans())
def test_fuzz_mutated_token_payload(index, value, cut):
    text = SETUP.member_token[len(TOKEN_PREFIX):]
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    index %= len(raw)
    if cut:
        raw = raw[:index]
    else:
        raw[index] = value
    result = _import(token_of(bytes(raw)), SETUP.member_key)
    if result is not None:
        keyring, cert, _ = result
        assert cert == SETUP.net.authority.keyring.certificates[SETUP.member]
        assert keyring.is_member


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**64, max_value=2**64)
    | st.text(max_size=8) | st.binary(max_size=8) | st.sampled_from(["cashier", "relay", "cert", 1]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12,
)


@FUZZ
@given(index=st.integers(0, 10), value=cbor_values)
def test_fuzz_certificate_fields_in_a_token(index, value):
    # every field of the certificate replaced by an arbitrary CBOR value: refused with a
    # typed error (the signature no longer matches, when the shape survives at all)
    payload = payload_of(SETUP.member_token)
    payload[3][index] = value
    result = _import(token_of(payload), SETUP.member_key)
    if result is not None:
        assert result[1] == SETUP.net.authority.keyring.certificates[SETUP.member]


@FUZZ
@given(index=st.integers(0, 4), value=cbor_values)
def test_fuzz_token_fields(index, value):
    payload = payload_of(SETUP.member_token)
    payload[index] = value
    result = _import(token_of(payload), SETUP.member_key)
    if result is not None:
        assert result[1] == SETUP.net.authority.keyring.certificates[SETUP.member]


# -- many tokens at once (import_tokens) ---------------------------------------------------


def _state(keyring) -> tuple:
    epochs = range((keyring.current_epoch or 0) + 1)
    return (keyring.number, keyring.device.public if keyring.device else None, keyring.certificates,
            keyring.revocations, keyring.current_epoch, keyring.authority_seq, keyring.is_member,
            [keyring.epoch_key(e) for e in epochs], keyring.network_key, keyring.network_id)


class RevokedSetup(Setup):
    """Three devices, then the third revoked: two epochs, the second not granted to it."""

    def __init__(self) -> None:
        super().__init__(seed=9)
        self.net.authority.revoke(self.other, 0, T0)
        self.pairs = [(self.net.authority.token(n), key) for n, key in
                      ((self.member, self.member_key), (self.relay, self.relay_key), (self.other, self.other_key))]


REVOKED = RevokedSetup()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=6))
def test_import_tokens_gives_what_import_token_gives(order):
    pairs = [REVOKED.pairs[i] for i in order]
    together = import_tokens(pairs)
    assert len(together) == len(pairs)
    for (token, key), (keyring, cert, entries) in zip(pairs, together):
        alone_keyring, alone_cert, alone_entries = import_token(token, key)
        assert _state(keyring) == _state(alone_keyring)
        assert cert == alone_cert
        assert [e.encode() for e in entries] == [e.encode() for e in alone_entries]
    revoked = [k for (_, key), (k, _, _) in zip(pairs, together) if key is REVOKED.other_key]
    assert all(k.epoch_key(1) is None and k.epoch_key(0) is not None for k in revoked)


def test_import_tokens_verifies_a_feed_they_share_once(monkeypatch):
    import gossip._feeds as feeds

    checked = []
    real = feeds.verify_signature
    monkeypatch.setattr(feeds, "verify_signature", lambda *a: (checked.append(a[3]), real(*a))[1])
    import_tokens(REVOKED.pairs)
    assert len(checked) == len(REVOKED.net.authority.feed)
    checked.clear()
    for token, key in REVOKED.pairs:
        import_token(token, key)
    assert len(checked) == 3 * len(REVOKED.net.authority.feed)


def test_import_tokens_refuses_a_forged_token_after_good_ones(setup):
    good = [(setup.member_token, setup.member_key), (setup.relay_token, setup.relay_key)]
    payload = payload_of(setup.net.authority.token(setup.other))
    feed = payload[4]
    entry = Entry.decode(feed[2])
    payload[4] = [*feed[:2], replace(entry, signature=setup.member_key.sign(entry.signed_bytes())).encode(), *feed[3:]]
    with pytest.raises(BadSignature):  # a feed that differs in one byte is verified afresh
        import_tokens([*good, (token_of(payload), setup.other_key)])
    payload = payload_of(setup.net.authority.token(setup.other))
    cert = setup.net.authority.keyring.certificates[setup.other]
    payload[3] = sign_record(cert, setup.member_key).to_wire()
    with pytest.raises(BadSignature):  # the same feed, but the token's own certificate forged
        import_tokens([*good, (token_of(payload), setup.other_key)])
    with pytest.raises(WrongNetwork):
        import_tokens([*good, (setup.member_token, setup.other_key)])


def test_keyring_copy_is_independent_and_enrolled_as_needs_a_verifier(setup):
    keyring, _, _ = import_token(setup.member_token, setup.member_key)
    twin = keyring.copy()
    assert _state(twin) == _state(keyring)
    twin.certificates.clear()
    twin.revocations[99] = 1
    assert keyring.certificates and 99 not in keyring.revocations
    with pytest.raises(InvalidInput):
        keyring.enrolled_as(setup.other_key, setup.other, ())
