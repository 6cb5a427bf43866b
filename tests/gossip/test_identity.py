"""Tests for gossip/_identity.py and the Keyring/Authority of gossip/_keyring.py.

Network ids, certificates (sign, verify, expiry, wire form), key derivation, secrets kept out
of reprs, epoch key grants, and revocation rolling a new epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from nacl.bindings import (
    crypto_scalarmult_base,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
    crypto_sign_seed_keypair,
)
from nacl.signing import SigningKey

from crdt_types import InvalidInput, TillmeshError
from gossip import (
    AUTHORITY_NUMBER,
    Authority,
    BadSignature,
    Certificate,
    CertificateError,
    CertificateExpired,
    DecryptionError,
    DeviceKey,
    Keyring,
    MalformedData,
    MemoryFeedStore,
    Revocation,
    Revoked,
    UnknownOrigin,
    WrongNetwork,
    import_token,
    network_id_for,
)
from gossip._feeds import Feeds
from gossip._identity import EpochKeyGrant, record_from_wire
from gossip._codec import decode
from gossip._identity import sign_record

from .helpers import T0, Network, rng


def control_records(authority: Authority) -> list:
    return [record_from_wire(decode(e.body, limit=4096, what="record")) for e in authority.feed]


def grants(authority: Authority) -> list[EpochKeyGrant]:
    return [r for r in control_records(authority) if isinstance(r, EpochKeyGrant)]


@pytest.fixture
def net() -> Network:
    return Network(seed=11)


# -- network id --------------------------------------------------------------------------------


def test_network_id_is_derived_from_the_authority_key(net):
    authority = net.authority
    expected = hashlib.blake2b(authority.key.public, digest_size=16, person=b"tillmesh-net-id").digest()
    assert authority.network_id == network_id_for(authority.key.public) == expected
    assert len(authority.network_id) == 16
    assert authority.keyring.network_id == authority.network_id
    assert Keyring(authority.key.public, bytes(32)).network_id == authority.network_id


def test_network_ids_differ_between_authorities():
    a = Authority.create(rng(1), T0)
    b = Authority.create(rng(2), T0)
    assert a.network_id != b.network_id
    assert network_id_for(a.key.public) != network_id_for(b.key.public)


def test_create_is_deterministic_given_the_random_source():
    a = Authority.create(rng(5), T0)
    b = Authority.create(rng(5), T0)
    assert a.key.public == b.key.public
    assert a.keyring.network_key == b.keyring.network_key
    assert [e.encode() for e in a.feed] == [e.encode() for e in b.feed]


def test_a_new_network_has_the_authority_certificate_and_epoch_0(net):
    authority = net.authority
    assert authority.current_epoch == 0
    cert = authority.keyring.certificates[AUTHORITY_NUMBER]
    assert cert.device_key == authority.key.public
    assert authority.keyring.is_member
    assert authority.keyring.current_epoch == 0
    assert [type(r) for r in control_records(authority)] == [Certificate, EpochKeyGrant]


# -- certificates ------------------------------------------------------------------------------


def test_enrolled_certificate_verifies(net):
    key, number = net.enroll("till-1", ("stock", "cashier"))
    cert = net.authority.keyring.certificates[number]
    assert cert.number == number == 1
    assert cert.device_key == key.public
    assert cert.roles == ("cashier", "stock")  # canonical order
    assert cert.network_id == net.authority.network_id
    assert len(cert.signature) == 64
    cert.verify(net.authority.key.public, net.authority.network_id)


def test_certificate_signed_by_another_key_is_bad_signature(net):
    key, number = net.enroll("till-1")
    cert = net.authority.keyring.certificates[number]
    impostor = DeviceKey(bytes(range(32)))
    forged = sign_record(cert, impostor)
    assert forged.signature != cert.signature
    with pytest.raises(BadSignature):
        forged.verify(net.authority.key.public, net.authority.network_id)
    # and the genuine one does not verify under the impostor's key either
    with pytest.raises(BadSignature):
        cert.verify(impostor.public, net.authority.network_id)


@pytest.mark.parametrize("change", [
    {"name": "other"}, {"branch": "b2"}, {"roles": ("manager",)}, {"number": 9},
    {"issued_ms": T0 + 1}, {"expires_ms": T0 + 10}, {"device_key": bytes(32)},
])
def test_altered_certificate_is_bad_signature(net, change):
    _, number = net.enroll("till-1")
    cert = replace(net.authority.keyring.certificates[number], **change)
    with pytest.raises(BadSignature):
        cert.verify(net.authority.key.public, net.authority.network_id)


def test_certificate_of_another_network_is_wrong_network(net):
    _, number = net.enroll("till-1")
    cert = net.authority.keyring.certificates[number]
    other = Authority.create(rng(99), T0)
    with pytest.raises(WrongNetwork):
        cert.verify(other.key.public, other.network_id)
    with pytest.raises(WrongNetwork):
        other.keyring.check_peer(cert, T0)
    # a network id that lies about its network is caught before the signature
    moved = replace(cert, network_id=other.network_id)
    with pytest.raises(WrongNetwork):
        moved.verify(net.authority.key.public, net.authority.network_id)


def test_wrong_network_is_a_certificate_error_and_tillmesh_error():
    assert issubclass(WrongNetwork, CertificateError)
    assert issubclass(CertificateExpired, CertificateError)
    assert issubclass(BadSignature, TillmeshError)


def test_certificate_expiry_boundary(net):
    _, number = net.enroll("temp", expires_ms=T0 + 1000)
    cert = net.authority.keyring.certificates[number]
    cert.check_time(T0)
    cert.check_time(T0 + 999)
    with pytest.raises(CertificateExpired):
        cert.check_time(T0 + 1000)
    with pytest.raises(CertificateExpired):
        cert.check_time(T0 + 10**9)
    with pytest.raises(CertificateExpired):
        net.authority.keyring.check_peer(cert, T0 + 1000)
    # Expiry stops handshakes; whether an entry is valid never depends on the clock.
    net.authority.keyring.check_origin(number, 1)
    net.authority.keyring.check_peer(cert, T0 + 999)


def test_certificate_without_expiry_never_expires(net):
    _, number = net.enroll("till")
    net.authority.keyring.certificates[number].check_time(2**48 - 1)


def test_check_peer_refuses_revoked_and_key_swapped_devices(net):
    key1, n1 = net.enroll("till-1")
    key2, n2 = net.enroll("till-2")
    keyring = net.authority.keyring
    cert2 = keyring.certificates[n2]
    keyring.check_peer(cert2, T0)
    # a certificate for number n2 but another key, validly signed (e.g. a stale re-issue)
    swapped = sign_record(replace(cert2, device_key=key1.public), net.authority.key)
    with pytest.raises(UnknownOrigin):
        keyring.check_peer(swapped, T0)
    net.authority.revoke(n2, 0, T0)
    with pytest.raises(Revoked):
        keyring.check_peer(cert2, T0)


def test_certificate_wire_round_trip(net):
    _, number = net.enroll("till-1", ("manager", "cashier"), expires_ms=T0 + 5)
    cert = net.authority.keyring.certificates[number]
    wire = cert.to_wire()
    assert wire[0] == "cert"
    back = record_from_wire(wire)
    assert back == cert
    back.verify(net.authority.key.public, net.authority.network_id)


def test_revocation_and_grant_wire_round_trip(net):
    _, number = net.enroll("till-1")
    net.authority.revoke(number, 3, T0)
    for record in control_records(net.authority):
        assert record_from_wire(record.to_wire()) == record
        record.verify(net.authority.key.public, net.authority.network_id)
    revocations = [r for r in control_records(net.authority) if isinstance(r, Revocation)]
    assert [(r.number, r.last_valid_seq) for r in revocations] == [(number, 3)]


def _cert_wire(net) -> list:
    _, number = net.enroll("till-1")
    return net.authority.keyring.certificates[number].to_wire()


def _with(wire: list, index: int, value) -> list:
    out = list(wire)
    out[index] = value
    return out


# index in the cert wire form: 0 type, 1 version, 2 network id, 3 number, 4 device key,
# 5 name, 6 branch, 7 roles, 8 issued, 9 expires, 10 signature
BAD_CERT_WIRES = {
    "not a list": lambda w: {"cert": w},
    "empty": lambda w: [],
    "too short": lambda w: w[:2],
    "unknown type": lambda w: _with(w, 0, "certificate"),
    "type not a string": lambda w: _with(w, 0, 1),
    "unknown version": lambda w: _with(w, 1, 2),
    "missing field": lambda w: w[:-2] + w[-1:],
    "extra field": lambda w: w + [None],
    "short network id": lambda w: _with(w, 2, b"\x00" * 15),
    "number negative": lambda w: _with(w, 3, -1),
    "number too big": lambda w: _with(w, 3, 2**40),
    "number is bool": lambda w: _with(w, 3, True),
    "device key short": lambda w: _with(w, 4, b"k" * 31),
    "name empty": lambda w: _with(w, 5, ""),
    "name too long": lambda w: _with(w, 5, "n" * 65),
    "branch not text": lambda w: _with(w, 6, b"b1"),
    "issued negative": lambda w: _with(w, 8, -5),
    "issued is text": lambda w: _with(w, 8, "now"),
    "expires before issue": lambda w: _with(w, 9, w[8] - 1),
    "signature short": lambda w: _with(w, 10, bytes(63)),
    "signature not bytes": lambda w: _with(w, 10, "sig"),
}

BAD_ROLES = {
    "roles not an array": "cashier",
    "roles empty": [],
    "unknown role": ["janitor"],
    "role not text": [1],
    "roles out of order": ["stock", "cashier"],
    "duplicate role": ["cashier", "cashier"],
    "role is null": [None],
    "role is an array": [["cashier"]],
    "role is a map": [{"role": "cashier"}],
    "nested among valid": ["cashier", ["x"]],
}


@pytest.mark.parametrize("case", sorted(BAD_CERT_WIRES))
def test_malformed_certificate_wire_is_malformed_data(net, case):
    wire = BAD_CERT_WIRES[case](_cert_wire(net))
    with pytest.raises(MalformedData):
        record_from_wire(wire)


@pytest.mark.parametrize("case", sorted(BAD_ROLES))
def test_malformed_roles_are_malformed_data(net, case):
    wire = _with(_cert_wire(net), 7, BAD_ROLES[case])
    with pytest.raises(MalformedData):
        record_from_wire(wire)


@pytest.mark.parametrize("wire", [
    None, 5, "cert", b"cert", [], ["revoke"], ["epoch-key", 1], ["nope", 1, b"x" * 64],
    ["revoke", 1, bytes(16), 0, 1, 1, bytes(64)],            # the authority cannot be revoked
    ["revoke", 1, bytes(16), 3, -1, 1, bytes(64)],           # negative cutoff
    ["epoch-key", 1, bytes(16), 0, 1, bytes(32), bytes(24), bytes(47), bytes(64)],
])
def test_malformed_records_are_malformed_data(wire):
    with pytest.raises(MalformedData):
        record_from_wire(wire)


def test_certificate_constructor_refuses_bad_input(net):
    good = dict(network_id=net.authority.network_id, number=1, device_key=bytes(32), name="n",
                branch="b", roles=("cashier",), issued_ms=T0, expires_ms=None)
    Certificate(**good)
    for change in ({"roles": ()}, {"roles": ["cashier"]}, {"roles": ("boss",)}, {"number": -1},
                   {"issued_ms": 1.5}, {"expires_ms": T0}, {"name": ""}):
        with pytest.raises(InvalidInput):
            Certificate(**{**good, **change})


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), b"\xff" * 32, hashlib.sha256(b"x").digest()])
def test_x25519_derivation_matches_libsodium(seed):
    key = DeviceKey(seed)
    public, secret = crypto_sign_seed_keypair(seed)
    assert key.public == public == bytes(SigningKey(seed).verify_key)
    assert key.seed == seed
    assert key.x25519_private == crypto_sign_ed25519_sk_to_curve25519(secret)
    assert key.x25519_private == bytes(SigningKey(seed).to_curve25519_private_key())
    assert key.x25519_public == crypto_sign_ed25519_pk_to_curve25519(public)
    assert key.x25519_public == bytes(SigningKey(seed).verify_key.to_curve25519_public_key())
    # independent check: the private key is clamped SHA-512(seed)[:32], and the public
    # key is its base-point multiple
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    assert key.x25519_private == bytes(h)
    assert crypto_scalarmult_base(key.x25519_private) == key.x25519_public


def test_device_key_refuses_bad_seeds():
    for seed in (b"", bytes(31), bytes(33), "x" * 32, None):
        with pytest.raises(InvalidInput):
            DeviceKey(seed)
    with pytest.raises(InvalidInput):
        DeviceKey.generate(lambda n: bytes(n - 1))


def test_device_key_signatures_verify():
    key = DeviceKey(bytes(range(32)))
    signature = key.sign(b"message")
    assert len(signature) == 64
    SigningKey(bytes(range(32))).verify_key.verify(b"message", signature)


def test_reprs_never_show_secrets(net):
    key, number = net.enroll("till-1")
    device = net.join(key, number)
    secrets = [key.seed, net.authority.key.seed, net.authority.keyring.network_key,
               device.keyring.network_key, device.keyring.epoch_key(0),
               net.authority.keyring.epoch_key(0)]
    assert all(s is not None and len(s) == 32 for s in secrets)
    texts = [repr(key), str(key), repr(net.authority), str(net.authority), repr(net.authority.key),
             repr(net.authority.keyring), repr(device.keyring), str(device.keyring),
             repr(device.feeds.keyring)]
    for text in texts:
        for secret in secrets:
            assert secret.hex() not in text
            assert secret.hex()[:16] not in text
            assert repr(secret) not in text
    assert key.public.hex()[:16] in repr(key)


# -- epoch key grants --------------------------------------------------------------------------


def test_grant_opens_only_for_its_device(net):
    key1, n1 = net.enroll("till-1")
    key2, n2 = net.enroll("till-2")
    by_number = {g.number: g for g in grants(net.authority) if g.epoch == 0}
    assert set(by_number) == {AUTHORITY_NUMBER, n1, n2}
    data_key = net.authority.keyring.epoch_key(0)
    assert by_number[n1].open(key1) == data_key
    assert by_number[n2].open(key2) == data_key
    with pytest.raises(DecryptionError):
        by_number[n1].open(key2)
    with pytest.raises(DecryptionError):
        by_number[n2].open(key1)
    with pytest.raises(DecryptionError):
        by_number[n1].open(DeviceKey(bytes(32)))


def test_keyring_takes_only_its_own_grants(net):
    key1, n1 = net.enroll("till-1")
    key2, n2 = net.enroll("till-2")
    dev1 = net.join(key1, n1)
    assert dev1.keyring.epoch_key(0) == net.authority.keyring.epoch_key(0)
    assert dev1.keyring.is_member
    # a keyring that believes it is device n2 but holds n1's key cannot open n2's grant
    confused = Keyring(net.authority.key.public, net.authority.keyring.network_key, key1, n2)
    grant = next(g for g in grants(net.authority) if g.number == n2)
    with pytest.raises(DecryptionError):
        confused.apply_control(grant)
    assert confused.epoch_key(0) is None


def test_relays_get_no_grant(net):
    relay_key, relay = net.enroll("cloud", ("relay",))
    assert all(g.number != relay for g in grants(net.authority))
    keyring = net.join(relay_key, relay).keyring
    assert keyring.epoch_key(0) is None
    assert not keyring.is_member
    assert keyring.certificate.is_relay
    net.authority.revoke(net.enroll("till")[1], 0, T0)  # a new epoch: still nothing for the relay
    assert all(g.number != relay for g in grants(net.authority))


def test_grant_refused_when_signed_by_someone_else(net):
    key1, n1 = net.enroll("till-1")
    grant = next(g for g in grants(net.authority) if g.number == n1)
    keyring = Keyring(net.authority.key.public, net.authority.keyring.network_key, key1, n1)
    with pytest.raises(BadSignature):
        keyring.apply_control(sign_record(grant, key1))
    assert keyring.epoch_key(0) is None and keyring.current_epoch is None


# -- revocation --------------------------------------------------------------------------------


@pytest.fixture
def revoked_net():
    """Three tills; till-2 is revoked after seq 4, which rolls epoch 1."""
    net = Network(seed=21)
    devices = {name: net.enroll(name) for name in ("till-1", "till-2", "till-3")}
    old = {name: net.join(*kn) for name, kn in devices.items()}  # keyrings from before the revocation
    new_epoch = net.authority.revoke(devices["till-2"][1], 4, T0 + 10)
    return net, devices, old, new_epoch


def test_revoke_rolls_a_new_epoch(revoked_net):
    net, devices, _, new_epoch = revoked_net
    assert new_epoch == 1 == net.authority.current_epoch
    assert net.authority.keyring.current_epoch == 1
    epoch1 = {g.number for g in grants(net.authority) if g.epoch == 1}
    assert epoch1 == {AUTHORITY_NUMBER, devices["till-1"][1], devices["till-3"][1]}
    assert net.authority.keyring.epoch_key(1) not in (None, net.authority.keyring.epoch_key(0))


def test_revoked_device_cannot_open_the_new_epoch_from_a_fresh_token(revoked_net):
    net, devices, _, _ = revoked_net
    key, number = devices["till-2"]
    keyring, cert, _ = import_token(net.authority.token(number), key)
    assert keyring.revocations == {number: 4}
    assert keyring.current_epoch == 1
    assert keyring.epoch_key(1) is None
    assert not keyring.is_member


def test_revoked_device_cannot_open_the_new_epoch_by_replaying_the_feed(revoked_net):
    net, devices, old, _ = revoked_net
    device = old["till-2"]
    assert device.keyring.is_member and device.keyring.current_epoch == 0
    net.sync_authority(device)
    assert device.keyring.current_epoch == 1
    assert device.keyring.epoch_key(1) is None
    assert device.keyring.epoch_key(0) is not None  # what it had, it keeps
    assert not device.keyring.is_member


@pytest.mark.parametrize("name", ["till-1", "till-3"])
def test_remaining_members_open_the_new_epoch(revoked_net, name):
    net, devices, old, _ = revoked_net
    fresh, _, _ = import_token(net.authority.token(devices[name][1]), devices[name][0])
    assert fresh.epoch_key(1) == net.authority.keyring.epoch_key(1)
    assert fresh.is_member
    device = old[name]
    assert device.keyring.epoch_key(1) is None
    net.sync_authority(device)
    assert device.keyring.epoch_key(1) == net.authority.keyring.epoch_key(1)
    assert device.keyring.is_member


def test_revoked_device_cannot_write_after_the_roll(revoked_net):
    net, _, old, _ = revoked_net
    device = old["till-2"]
    net.sync_authority(device)
    with pytest.raises(InvalidInput):
        device.write(net.random_bytes, T0 + 20)
    assert device.store.head(device.number) is None


def test_revoke_refuses_unknown_devices_and_the_authority(net):
    with pytest.raises(InvalidInput):
        net.authority.revoke(5, 0, T0)
    with pytest.raises(InvalidInput):
        net.authority.revoke(AUTHORITY_NUMBER, 0, T0)
    assert net.authority.current_epoch == 0


def test_enroll_refuses_duplicates(net):
    key, number = net.enroll("till-1")
    with pytest.raises(InvalidInput):
        net.authority.enroll(key.public, name="again", branch="b1", roles=["cashier"], now_ms=T0)
    with pytest.raises(InvalidInput):
        net.authority.enroll(net.new_key().public, name="x", branch="b1", roles=["cashier"], now_ms=T0,
                             number=number)


def test_device_enrolled_after_a_roll_can_open_earlier_epochs():
    # DESIGN: "Each epoch's key is sealed to every member device". A till enrolled after a
    # revocation must still read the feeds its peers wrote under earlier epochs, or it can
    # never catch up with them.
    net = Network(seed=31)
    _, gone = net.enroll("till-gone")
    net.authority.revoke(gone, 0, T0)
    key, number = net.enroll("till-new")
    keyring, _, _ = import_token(net.authority.token(number), key)
    assert keyring.epoch_key(1) == net.authority.keyring.epoch_key(1)
    assert keyring.epoch_key(0) == net.authority.keyring.epoch_key(0)


def test_feeds_of_a_keyring_replay_control_records(net):
    key, number = net.enroll("till-1")
    keyring = Keyring(net.authority.key.public, net.authority.keyring.network_key, key, number)
    feeds = Feeds(keyring, MemoryFeedStore())
    for entry in net.authority.feed:
        assert feeds.ingest(entry.encode()).new
    assert keyring.certificates == net.authority.keyring.certificates
    assert keyring.epoch_key(0) == net.authority.keyring.epoch_key(0)
    assert feeds.store.version_vector() == {AUTHORITY_NUMBER: len(net.authority.feed)}
