"""Tests for gossip/_channel.py: two channels wired together, certificates, limits, fuzzing."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import random

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from crdt_types import InvalidInput, MalformedWire, RemoteProtocolError, TillmeshError, canonical
from gossip import _channel
from gossip._channel import (
    CERTIFICATE_CONTEXT,
    HANDSHAKE_TIMEOUT_MS,
    MAX_BUFFERED_BYTES,
    MAX_FRAME_BYTES,
    MAX_FRAME_DEPTH,
    BufferOverflow,
    ChannelClosed,
    ChannelEstablished,
    ChannelNotEstablished,
    ChannelState,
    ClosedChannelError,
    ConnectionLost,
    FrameReceived,
    FrameTooLarge,
    HandshakeTimeout,
    OutgoingFrameTooLarge,
    PeerKeyMismatch,
    SecureChannel,
    UnexpectedMessage,
    _TRANSITIONS,
)
from gossip._codec import signable
from gossip._errors import BadSignature, CertificateExpired, MalformedData, Revoked, WrongNetwork
from gossip._identity import Certificate, DeviceKey, record_from_wire
from gossip._enrollment import Authority, import_token
from gossip._keyring import Keyring
from gossip._noise import (
    MAX_NOISE_MESSAGE,
    MAX_NONCE,
    PROTOCOL_NAME,
    TAGLEN,
    DecryptionFailed,
    HandshakeFailed,
    HandshakeState,
    NonceExhausted,
)

NOW = 1_700_000_000_000
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- networks ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Network:
    authority: Authority
    devices: dict[int, DeviceKey]
    rng: random.Random

    def keyring(self, number: int) -> Keyring:
        """A keyring for ``number`` from a token issued now (it knows everything so far)."""
        return import_token(self.authority.token(number), self.devices[number])[0]


def build_network(seed: int, devices: int = 2, *, expires_ms: dict[int, int] | None = None) -> Network:
    rng = random.Random(seed)
    authority = Authority.create(rng.randbytes, NOW)
    keys = {}
    for index in range(devices):
        key = DeviceKey.generate(rng.randbytes)
        cert = authority.enroll(key.public, name=f"till-{index + 1}", branch="main", roles=("cashier",),
                                now_ms=NOW, expires_ms=(expires_ms or {}).get(index + 1))
        keys[cert.number] = key
    return Network(authority, keys, rng)


@functools.lru_cache(maxsize=None)
def keyrings(seed: int = 1) -> tuple[Keyring, Keyring, Keyring]:
    """Three enrolled devices of one network (read-only use: keyrings are shared)."""
    net = build_network(seed, 3)
    return net.keyring(1), net.keyring(2), net.keyring(3)


# --- wiring two channels together (after h11's ConnectionPair) -------------------------------


def drain(channel: SecureChannel) -> list:
    events = []
    while (event := channel.next_event()) is not None:
        events.append(event)
    return events


class ChannelPair:
    def __init__(self, initiator: Keyring, responder: Keyring, *, seed: int = 0, now: int = NOW,
                 initiator_cls: type[SecureChannel] = SecureChannel,
                 responder_cls: type[SecureChannel] = SecureChannel) -> None:
        rng = random.Random(seed)
        self.initiator = initiator_cls(initiator, initiator=True, random_bytes=rng.randbytes, now_ms=now)
        self.responder = responder_cls(responder, initiator=False, random_bytes=rng.randbytes, now_ms=now)
        self.events: dict[SecureChannel, list] = {self.initiator: [], self.responder: []}
        self.transfers = 0

    def other(self, channel: SecureChannel) -> SecureChannel:
        return self.responder if channel is self.initiator else self.initiator

    def shuttle(self, now: int = NOW, tamper=None) -> None:
        """Move bytes both ways until neither side has anything to send; collect events."""
        while True:
            moved = False
            for source in (self.initiator, self.responder):
                data = source.data_to_send()
                if not data:
                    continue
                self.transfers += 1
                if tamper is not None:
                    data = tamper(self.transfers, data)
                target = self.other(source)
                target.receive_data(data, now)
                self.events[target] += drain(target)
                moved = True
            if not moved:
                return

    def close_transport(self, now: int = NOW) -> None:
        """The socket goes away: both sides learn it."""
        for channel in (self.initiator, self.responder):
            channel.receive_data(None, now)
            self.events[channel] += drain(channel)


def established(seed: int = 0, pair: tuple[Keyring, Keyring] | None = None) -> ChannelPair:
    one, two, _ = keyrings()
    initiator, responder = pair or (one, two)
    channels = ChannelPair(initiator, responder, seed=seed)
    channels.shuttle()
    assert channels.initiator.state is ChannelState.ESTABLISHED
    assert channels.responder.state is ChannelState.ESTABLISHED
    channels.events = {channels.initiator: [], channels.responder: []}
    return channels


def closed_with(events: list) -> TillmeshError | None:
    assert events and isinstance(events[-1], ChannelClosed), events
    assert not any(isinstance(e, ChannelClosed) for e in events[:-1])
    return events[-1].error


def records(data: bytes) -> list[bytes]:
    """Split a chunk of the byte stream into its length-prefixed Noise messages."""
    out = []
    while data:
        length = int.from_bytes(data[:2], "big")
        out.append(data[2:2 + length])
        data = data[2 + length:]
    return out


def presenting(cert: Certificate | None = None, *, hash_override: bytes | None = None, frame=None):
    """A channel class for a misbehaving peer: it presents another certificate frame."""

    class Misbehaving(SecureChannel):
        def _certificate_frame(self, handshake_hash: bytes) -> list:
            if frame is not None:
                return frame
            wire = (cert or self._keyring.certificate).to_wire()
            bound = handshake_hash if hash_override is None else hash_override
            return [wire, self._keyring.device.sign(signable(CERTIFICATE_CONTEXT, [bound, wire]))]

    return Misbehaving


# --- establishment and frames ------------------------------------------------------------------


def test_establish_and_exchange_frames_both_ways() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    assert pair.initiator.state is ChannelState.HANDSHAKE
    assert pair.initiator.peer is None
    pair.shuttle()
    assert pair.events[pair.initiator] == [ChannelEstablished(two.certificate)]
    assert pair.events[pair.responder] == [ChannelEstablished(one.certificate)]
    assert pair.initiator.peer == two.certificate and pair.responder.peer == one.certificate
    assert pair.initiator.next_deadline() is None and pair.responder.next_deadline() is None
    # msg1, msg2, msg3 + initiator certificate, responder certificate
    assert pair.transfers == 4

    pair.initiator.send_frame(["have", {1: 3, 2: 0}])
    pair.initiator.send_frame(["ping", 7])
    pair.responder.send_frame(["pong", 7])
    pair.responder.send_frame({"nested": [b"\x00" * 10, None, True, -5, "é"]})
    pair.shuttle()
    assert pair.events[pair.responder][1:] == [
        FrameReceived(["have", {1: 3, 2: 0}]), FrameReceived(["ping", 7])]
    assert pair.events[pair.initiator][1:] == [
        FrameReceived(["pong", 7]), FrameReceived({"nested": [b"\x00" * 10, None, True, -5, "é"]})]


def test_the_other_direction_and_other_devices() -> None:
    one, two, three = keyrings()
    pair = ChannelPair(three, one, seed=5)
    pair.shuttle()
    assert pair.initiator.peer == one.certificate
    assert pair.responder.peer == three.certificate


def test_handshake_is_deterministic_given_the_random_source() -> None:
    one, two, _ = keyrings()
    first, again, other = (ChannelPair(one, two, seed=s) for s in (3, 3, 4))
    wires = []
    for pair in (first, again, other):
        wires.append(pair.initiator.data_to_send())
    assert wires[0] == wires[1] != wires[2]
    assert len(records(wires[0])[0]) == 32 + TAGLEN  # e, then the empty payload's tag


def test_large_frame_spans_several_noise_messages() -> None:
    pair = established()
    big = random.Random(9).randbytes(300_000)
    pair.initiator.send_frame(["entries", big])
    pair.initiator.send_frame(["ping", 1])
    data = pair.initiator.data_to_send()
    messages = records(data)
    assert len(messages) == 6  # 300_017 frame bytes over 65_519-byte plaintexts, then the ping
    assert all(len(m) <= MAX_NOISE_MESSAGE for m in messages)
    assert len(messages[0]) == MAX_NOISE_MESSAGE
    # Delivered one byte short of complete, nothing yet; then the rest.
    pair.responder.receive_data(data[:-1], NOW)
    assert drain(pair.responder) == [FrameReceived(["entries", big])]
    pair.responder.receive_data(data[-1:], NOW)
    assert drain(pair.responder) == [FrameReceived(["ping", 1])]


def test_frame_at_exactly_max_frame_bytes_passes_and_one_more_is_refused() -> None:
    pair = established()
    at_limit = bytes(MAX_FRAME_BYTES - 5)  # 0x5a + 4-byte length + payload
    assert len(canonical(at_limit)) == MAX_FRAME_BYTES
    pair.initiator.send_frame(at_limit)
    pair.shuttle()
    assert pair.events[pair.responder] == [FrameReceived(at_limit)]

    over = bytes(MAX_FRAME_BYTES - 4)
    assert len(canonical(over)) == MAX_FRAME_BYTES + 1
    with pytest.raises(OutgoingFrameTooLarge, match=str(MAX_FRAME_BYTES)):
        pair.initiator.send_frame(over)
    assert isinstance(OutgoingFrameTooLarge("x"), InvalidInput)
    assert pair.initiator.data_to_send() == b""
    assert pair.initiator.state is ChannelState.ESTABLISHED
    pair.initiator.send_frame("still fine")  # and the cipher nonce did not move
    pair.shuttle()
    assert pair.events[pair.responder][-1] == FrameReceived("still fine")


def test_announced_frame_over_the_limit_closes_before_buffering_it() -> None:
    pair = established()
    pair.initiator._write_stream(MAX_FRAME_BYTES.to_bytes(4, "big"))  # at the limit: waits
    pair.shuttle()
    assert pair.events[pair.responder] == []
    assert pair.responder.state is ChannelState.ESTABLISHED

    pair = established()
    pair.initiator._write_stream((MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
    pair.shuttle()
    error = closed_with(pair.events[pair.responder])
    assert isinstance(error, FrameTooLarge) and isinstance(error, RemoteProtocolError)
    assert pair.responder.state is ChannelState.CLOSED


def test_frames_split_at_every_byte_boundary() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    # Run the handshake byte by byte in both directions.
    while True:
        moved = False
        for source in (pair.initiator, pair.responder):
            data = source.data_to_send()
            target = pair.other(source)
            for i in range(len(data)):
                target.receive_data(data[i:i + 1], NOW)
                moved = True
            pair.events[target] += drain(target)
        if not moved:
            break
    assert isinstance(pair.events[pair.initiator][0], ChannelEstablished)
    assert isinstance(pair.events[pair.responder][0], ChannelEstablished)


@FUZZ
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=6), st.data())
def test_chunking_never_changes_what_arrives(frames: list[bytes], data: st.DataObject) -> None:
    pair = established(seed=len(frames))
    for frame in frames:
        pair.initiator.send_frame(["entries", frame])
    stream = pair.initiator.data_to_send()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        pair.responder.receive_data(stream[start:end], NOW)
    assert drain(pair.responder) == [FrameReceived(["entries", f]) for f in frames]


_scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40)
            | st.text(max_size=20))
_plain = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.integers(-5, 5) | st.text(max_size=5) | st.binary(max_size=5), inner, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(st.lists(_plain, min_size=1, max_size=4))
def test_any_plain_data_frame_arrives_intact(frames: list) -> None:
    pair = established()
    for frame in frames:
        pair.responder.send_frame(frame)
    pair.shuttle()
    assert pair.events[pair.initiator] == [FrameReceived(f) for f in frames]


# --- network key and handshake integrity -------------------------------------------------------


def test_wrong_network_key_fails_the_handshake() -> None:
    one, _, _ = keyrings()
    stranger = build_network(99, 1).keyring(1)
    pair = ChannelPair(one, stranger)
    pair.shuttle()
    error = closed_with(pair.events[pair.responder])
    assert isinstance(error, HandshakeFailed)
    # psk3: the initiator finished Noise and waits for a certificate frame that never comes.
    assert pair.initiator.state is ChannelState.VERIFYING
    assert pair.events[pair.initiator] == []
    pair.close_transport()
    assert isinstance(closed_with(pair.events[pair.initiator]), ConnectionLost)

    # The other way round, the stranger's first transport message does not decrypt for us...
    pair = ChannelPair(stranger, one)
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), HandshakeFailed)
    assert pair.initiator.peer is None


@pytest.mark.parametrize("message", [1, 2, 3])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_tampered_handshake_message_fails(message: int, where: str) -> None:
    one, two, _ = keyrings()

    def tamper(transfer: int, data: bytes) -> bytes:
        if transfer != message:
            return data
        length = int.from_bytes(data[:2], "big")
        index = 2 + {"first": 0, "middle": length // 2, "last": length - 1}[where]
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]

    pair = ChannelPair(one, two)
    pair.shuttle(tamper=tamper)
    reader = pair.initiator if message == 2 else pair.responder
    assert isinstance(closed_with(pair.events[reader]), HandshakeFailed)
    assert reader.state is ChannelState.CLOSED
    for channel in (pair.initiator, pair.responder):
        assert channel.peer is None
        assert not any(isinstance(e, ChannelEstablished) for e in pair.events[channel])


def test_tampered_length_prefix_fails() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    msg1 = pair.initiator.data_to_send()
    pair.responder.receive_data(b"\x00\x10" + msg1[2:], NOW)  # says 16 bytes: too short for `e`
    assert isinstance(closed_with(drain(pair.responder)), RemoteProtocolError)


def test_handshake_payload_must_be_empty() -> None:
    one, two, _ = keyrings()
    responder = SecureChannel(two, initiator=False, random_bytes=random.Random(1).randbytes, now_ms=NOW)
    rogue = HandshakeState(PROTOCOL_NAME, initiator=True, prologue=_channel.PROLOGUE,
                           s=one.device.x25519_private, psks=[one.network_key],
                           random_bytes=random.Random(2).randbytes)
    message = rogue.write_message(b"extension?")
    responder.receive_data(len(message).to_bytes(2, "big") + message, NOW)
    assert isinstance(closed_with(drain(responder)), UnexpectedMessage)
    assert responder.data_to_send() == b""


def test_another_protocol_version_fails_at_the_first_message() -> None:
    one, two, _ = keyrings()
    responder = SecureChannel(two, initiator=False, random_bytes=random.Random(1).randbytes, now_ms=NOW)
    rogue = HandshakeState(PROTOCOL_NAME, initiator=True, prologue=b"tillmesh/v2",
                           s=one.device.x25519_private, psks=[one.network_key],
                           random_bytes=random.Random(2).randbytes)
    wire = rogue.write_message(b"")
    responder.receive_data(len(wire).to_bytes(2, "big") + wire, NOW)
    assert isinstance(closed_with(drain(responder)), HandshakeFailed)
    assert responder.data_to_send() == b""


# --- certificates ------------------------------------------------------------------------------


def test_certificate_of_another_device_is_a_key_mismatch() -> None:
    one, two, three = keyrings()
    # Device 1 holds the network key and completes Noise with its own static key, but presents
    # device 3's (public, validly signed) certificate, even signing it with its own key.
    pair = ChannelPair(one, two, initiator_cls=presenting(three.certificate))
    pair.shuttle()
    error = closed_with(pair.events[pair.responder])
    assert isinstance(error, PeerKeyMismatch)
    assert "device 3" in str(error)
    assert pair.events[pair.initiator] == []  # the responder never showed its certificate

    pair = ChannelPair(one, two, responder_cls=presenting(three.certificate))
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.initiator]), PeerKeyMismatch)


def test_certificate_signature_must_bind_this_handshake() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two, initiator_cls=presenting(hash_override=bytes(64)))
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), BadSignature)

    pair = ChannelPair(one, two, responder_cls=presenting(hash_override=bytes(64)))
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.initiator]), BadSignature)


def test_revoked_peer_is_refused() -> None:
    net = build_network(7, 2)
    revoked = net.keyring(2)  # issued before the revocation: device 2 does not know
    net.authority.revoke(2, 0, NOW)
    judge = net.keyring(1)
    pair = ChannelPair(revoked, judge)
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), Revoked)
    assert pair.initiator.state is ChannelState.VERIFYING  # saw no certificate
    pair = ChannelPair(judge, revoked)
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.initiator]), Revoked)


def test_expired_certificate_is_refused_at_expiry() -> None:
    net = build_network(8, 2, expires_ms={2: NOW + 1000})
    one, two = net.keyring(1), net.keyring(2)
    pair = ChannelPair(two, one, now=NOW + 999)
    pair.shuttle(now=NOW + 999)
    assert pair.responder.state is ChannelState.ESTABLISHED

    pair = ChannelPair(two, one, now=NOW + 1000)
    pair.shuttle(now=NOW + 1000)
    assert isinstance(closed_with(pair.events[pair.responder]), CertificateExpired)
    pair = ChannelPair(one, two, now=NOW + 1000)
    pair.shuttle(now=NOW + 1000)
    assert isinstance(closed_with(pair.events[pair.initiator]), CertificateExpired)


def test_certificate_from_another_network_is_refused() -> None:
    one, two, _ = keyrings()
    other = build_network(42, 1)
    foreign_cert = other.authority.keyring.certificates[1]
    # A device certified by another authority that somehow holds our network key (and knows our
    # authority, so that it accepts us): Noise succeeds, its certificate does not.
    impostor = Keyring(one.authority_key, one.network_key, other.devices[1], 1)
    impostor.certificates[1] = foreign_cert
    pair = ChannelPair(impostor, two)
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), WrongNetwork)
    pair = ChannelPair(two, impostor)
    pair.shuttle()
    assert pair.events[pair.responder] == [ChannelEstablished(two.certificate)]
    assert isinstance(closed_with(pair.events[pair.initiator]), WrongNetwork)


@pytest.mark.parametrize("frame", [
    "hello",
    [],
    [b"x", bytes(64)],
    ["cert", bytes(63)],
    [["cert", 1, "junk"], bytes(64)],
])
def test_malformed_certificate_frame(frame) -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two, initiator_cls=presenting(frame=frame))
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), MalformedData)


def test_certificate_frame_holding_another_record() -> None:
    net = build_network(3, 1)
    published = [record_from_wire(cbor2.loads(e.body)) for e in net.authority.feed]
    grant = next(r for r in published if not isinstance(r, Certificate))
    one, two, _ = keyrings()
    pair = ChannelPair(one, two, initiator_cls=presenting(frame=[grant.to_wire(), bytes(64)]))
    pair.shuttle()
    error = closed_with(pair.events[pair.responder])
    assert isinstance(error, MalformedData) and "not a certificate" in str(error)


# --- limits ------------------------------------------------------------------------------------


def test_buffered_bytes_limit_counts_queued_frames_and_undecoded_bytes(monkeypatch) -> None:
    pair = established()
    frame = bytes(100)
    held_per_frame = 4 + len(canonical(frame))  # 106
    monkeypatch.setattr(_channel, "MAX_BUFFERED_BYTES", 10 * held_per_frame)
    for _ in range(10):
        pair.initiator.send_frame(frame)
    pair.responder.receive_data(pair.initiator.data_to_send(), NOW)  # exactly at the limit
    assert pair.responder.state is ChannelState.ESTABLISHED
    pair.initiator.send_frame(frame)
    more = pair.initiator.data_to_send()
    pair.responder.receive_data(more[:1], NOW)  # one undecoded byte over
    events = drain(pair.responder)
    assert events[:10] == [FrameReceived(frame)] * 10  # what arrived intact is still delivered
    assert isinstance(closed_with(events), BufferOverflow)
    pair.responder.receive_data(more[1:], NOW)  # ignored once closed
    assert drain(pair.responder) == []


def test_buffered_bytes_are_freed_by_next_event(monkeypatch) -> None:
    pair = established()
    monkeypatch.setattr(_channel, "MAX_BUFFERED_BYTES", 300)
    for i in range(50):
        pair.initiator.send_frame(bytes(100))
        pair.responder.receive_data(pair.initiator.data_to_send(), NOW)
        assert drain(pair.responder) == [FrameReceived(bytes(100))], i


def test_buffered_bytes_limit_counts_a_partial_frame(monkeypatch) -> None:
    pair = established()
    monkeypatch.setattr(_channel, "MAX_BUFFERED_BYTES", 70_000)
    pair.initiator.send_frame(bytes(100_000))  # 100_009 stream bytes: 65_519 + 34_490 plaintext
    data = pair.initiator.data_to_send()
    first = 2 + MAX_NOISE_MESSAGE
    pair.responder.receive_data(data[:first], NOW)  # 65_519 bytes of frame held
    pair.responder.receive_data(data[first:first + 70_000 - 65_519], NOW)  # + undecoded: 70_000
    assert pair.responder.state is ChannelState.ESTABLISHED
    pair.responder.receive_data(data[first + 70_000 - 65_519:][:1], NOW)
    assert isinstance(closed_with(drain(pair.responder)), BufferOverflow)


def test_limits_fit_together() -> None:
    # A maximal frame waiting in the queue, the next one begun, a Noise message in flight.
    assert MAX_BUFFERED_BYTES >= (MAX_FRAME_BYTES + 4) + 2 * (2 + MAX_NOISE_MESSAGE)


def test_handshake_timeout_by_tick() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    deadline = NOW + HANDSHAKE_TIMEOUT_MS
    assert pair.initiator.next_deadline() == deadline
    assert pair.responder.next_deadline() == deadline
    pair.initiator.tick(deadline - 1)
    assert pair.initiator.state is ChannelState.HANDSHAKE and drain(pair.initiator) == []
    pair.initiator.tick(deadline)
    error = closed_with(drain(pair.initiator))
    assert isinstance(error, HandshakeTimeout) and isinstance(error, RemoteProtocolError)
    assert pair.initiator.next_deadline() is None
    assert pair.initiator.data_to_send() == b""  # msg1 was never handed out: dropped


def test_handshake_completes_just_before_the_deadline() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    pair.shuttle(now=NOW + HANDSHAKE_TIMEOUT_MS - 1)
    assert pair.initiator.state is pair.responder.state is ChannelState.ESTABLISHED
    pair.initiator.tick(NOW + 10 * HANDSHAKE_TIMEOUT_MS)  # no deadline once established
    assert pair.initiator.state is ChannelState.ESTABLISHED


def test_data_arriving_at_the_deadline_times_out() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    pair.responder.receive_data(pair.initiator.data_to_send(), NOW + HANDSHAKE_TIMEOUT_MS)
    assert isinstance(closed_with(drain(pair.responder)), HandshakeTimeout)
    assert pair.responder.data_to_send() == b""


def test_certificate_exchange_counts_towards_the_timeout() -> None:
    one, _, _ = keyrings()
    stranger = build_network(99, 1).keyring(1)
    pair = ChannelPair(one, stranger)
    pair.shuttle()
    assert pair.initiator.state is ChannelState.VERIFYING
    assert pair.initiator.next_deadline() == NOW + HANDSHAKE_TIMEOUT_MS
    pair.initiator.tick(NOW + HANDSHAKE_TIMEOUT_MS)
    assert isinstance(closed_with(drain(pair.initiator)), HandshakeTimeout)


# --- closing -----------------------------------------------------------------------------------


def test_transport_close_on_an_established_channel_is_clean() -> None:
    pair = established()
    pair.initiator.send_frame("last words")
    pair.shuttle()
    pair.close_transport()
    assert pair.events[pair.responder] == [FrameReceived("last words"), ChannelClosed(None)]
    assert pair.events[pair.initiator] == [ChannelClosed(None)]
    for channel in (pair.initiator, pair.responder):
        assert channel.state is ChannelState.CLOSED
        assert channel.peer is not None
        channel.receive_data(b"\x00\x05hello", NOW)
        channel.receive_data(None, NOW)
        channel.tick(NOW + 10**9)
        assert channel.next_event() is None
        with pytest.raises(ClosedChannelError):
            channel.send_frame("too late")
        assert channel.data_to_send() == b""


def test_transport_close_mid_frame_or_mid_handshake_is_connection_lost() -> None:
    pair = established()
    pair.initiator.send_frame(bytes(100_000))
    data = pair.initiator.data_to_send()
    pair.responder.receive_data(data[:2 + MAX_NOISE_MESSAGE], NOW)  # a whole message, half a frame
    pair.responder.receive_data(None, NOW)
    assert isinstance(closed_with(drain(pair.responder)), ConnectionLost)

    pair = established()
    pair.initiator.send_frame("x")
    pair.responder.receive_data(pair.initiator.data_to_send()[:5], NOW)  # part of a Noise message
    pair.responder.receive_data(None, NOW)
    assert isinstance(closed_with(drain(pair.responder)), ConnectionLost)

    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    pair.initiator.receive_data(None, NOW)
    assert isinstance(closed_with(drain(pair.initiator)), ConnectionLost)


def test_send_before_established_changes_nothing() -> None:
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    with pytest.raises(ChannelNotEstablished):
        pair.initiator.send_frame("early")
    pair.responder.receive_data(pair.initiator.data_to_send(), NOW)
    pair.initiator.receive_data(pair.responder.data_to_send(), NOW)
    assert pair.initiator.state is ChannelState.VERIFYING  # initiator's certificate is queued
    with pytest.raises(ChannelNotEstablished):
        pair.initiator.send_frame("still early")
    pair.shuttle()
    assert pair.events[pair.responder] == [ChannelEstablished(one.certificate)]


def _nested(depth: int) -> list:
    """``depth`` levels of arrays."""
    obj: list = []
    for _ in range(depth - 1):
        obj = [obj]
    return obj


@pytest.mark.parametrize("obj", [
    object(), {1, 2}, 1.5, 1.5j, datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    2**64, -(2**64) - 1, {"k": [object()]}, {(1, 1.5): 0}, _nested(MAX_FRAME_DEPTH + 1),
], ids=["object", "set", "float", "complex", "datetime", "bignum", "negative-bignum", "inside",
        "key", "too-deep"])
def test_frames_that_are_not_plain_data_are_the_callers_fault(obj) -> None:
    pair = established()
    with pytest.raises(MalformedWire):
        pair.initiator.send_frame(obj)
    assert pair.initiator.data_to_send() == b""
    assert pair.initiator.state is ChannelState.ESTABLISHED


class _Code(int):
    """An int subclass (an IntEnum, say) is an int on the wire."""


def _is_plain(obj, depth=0) -> bool:
    """The reference: what the channel must accept as a frame, written the obvious way."""
    if obj is None or isinstance(obj, (bool, str, bytes, bytearray)):
        return True
    if isinstance(obj, int):
        return -(2**64) <= obj <= 2**64 - 1
    if isinstance(obj, (list, tuple, dict)):
        if depth >= MAX_FRAME_DEPTH:
            return False
        items = [x for pair in obj.items() for x in pair] if isinstance(obj, dict) else obj
        return all(_is_plain(x, depth + 1) for x in items)
    return False


_leaves = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.binary(max_size=3),
                    st.integers(-(2**65), 2**65), st.integers(-5, 5).map(_Code), st.floats(allow_nan=False),
                    st.frozensets(st.integers(0, 3), max_size=2))
_hashable = st.one_of(st.integers(-3, 3), st.text(max_size=2), st.tuples(st.integers(0, 2), st.binary(max_size=2)))
_trees = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(_hashable, inner, max_size=3)),
    max_leaves=12)


def _deep(depth: int, leaf) -> list:
    obj = [leaf]
    for _ in range(depth - 1):
        obj = [obj]
    return obj


@settings(max_examples=300)
@given(obj=st.one_of(_trees, st.builds(_deep, st.integers(MAX_FRAME_DEPTH - 1, MAX_FRAME_DEPTH + 1), _leaves)))
def test_the_channel_sends_exactly_the_plain_data(obj) -> None:
    pair = established()
    if _is_plain(obj):
        pair.initiator.send_frame(obj)
        assert pair.initiator.data_to_send() != b""
    else:
        with pytest.raises(MalformedWire):
            pair.initiator.send_frame(obj)
        assert pair.initiator.data_to_send() == b""


def test_plain_data_at_the_edges_passes() -> None:
    pair = established()
    frames = [_nested(MAX_FRAME_DEPTH), 2**64 - 1, -(2**64), {(1, b"k"): None}, (1, 2), False, ""]
    for frame in frames:
        pair.initiator.send_frame(frame)
    pair.shuttle()
    assert [e.obj for e in pair.events[pair.responder]] == [
        _nested(MAX_FRAME_DEPTH), 2**64 - 1, -(2**64), {(1, b"k"): None}, [1, 2], False, ""]


@pytest.mark.parametrize("obj", [{1, 2}, 1.5, 2**64, _nested(MAX_FRAME_DEPTH + 1)],
                         ids=["set", "float", "bignum", "too-deep"])
def test_received_frames_that_are_not_plain_data_close(obj) -> None:
    pair = established()
    payload = canonical(obj)
    pair.initiator._write_stream(len(payload).to_bytes(4, "big") + payload)
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), MalformedData)


def test_send_nonce_exhaustion_closes_and_sends_nothing_partial() -> None:
    pair = established()
    pair.initiator._transport._send.set_nonce(MAX_NONCE - 1)  # room for exactly one message
    with pytest.raises(NonceExhausted):
        pair.initiator.send_frame(bytes(70_000))  # needs two
    assert pair.initiator.data_to_send() == b""
    assert isinstance(closed_with(drain(pair.initiator)), NonceExhausted)
    with pytest.raises(ClosedChannelError):
        pair.initiator.send_frame("x")


def test_receive_nonce_exhaustion_closes() -> None:
    pair = established()
    pair.responder._transport._recv.set_nonce(MAX_NONCE)
    pair.initiator.send_frame("x")
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), NonceExhausted)


def test_replayed_transport_message_fails() -> None:
    pair = established()
    pair.initiator.send_frame("once")
    data = pair.initiator.data_to_send()
    pair.responder.receive_data(data, NOW)
    pair.responder.receive_data(data, NOW)
    events = drain(pair.responder)
    assert events[0] == FrameReceived("once")
    assert isinstance(closed_with(events), DecryptionFailed)


def test_bad_frame_cbor_closes() -> None:
    pair = established()
    pair.initiator._write_stream(b"\x00\x00\x00\x02\xff\xff")
    pair.initiator._write_stream(b"\x00\x00\x00\x02\x18\x01")  # 1 encoded non-canonically
    pair.shuttle()
    assert isinstance(closed_with(pair.events[pair.responder]), MalformedData)


def test_empty_receive_is_not_end_of_stream() -> None:
    pair = established()
    pair.responder.receive_data(b"", NOW)
    assert pair.responder.state is ChannelState.ESTABLISHED and drain(pair.responder) == []


# --- local misuse ------------------------------------------------------------------------------


def test_constructor_validates_its_inputs() -> None:
    one, two, _ = keyrings()
    rb = random.Random(1).randbytes
    verifier = Keyring(one.authority_key, one.network_key)
    with pytest.raises(InvalidInput):
        SecureChannel(verifier, initiator=True, random_bytes=rb, now_ms=NOW)
    mixed = Keyring(one.authority_key, one.network_key, two.device, 1)
    mixed.apply_control(one.certificate)
    with pytest.raises(InvalidInput, match="another key"):
        SecureChannel(mixed, initiator=True, random_bytes=rb, now_ms=NOW)
    with pytest.raises(InvalidInput):
        SecureChannel(one, initiator=1, random_bytes=rb, now_ms=NOW)
    with pytest.raises(InvalidInput):
        SecureChannel(one, initiator=True, random_bytes=rb, now_ms=1.5)
    with pytest.raises(InvalidInput):
        SecureChannel(one, initiator=True, random_bytes=lambda n: b"short", now_ms=NOW)
    channel = SecureChannel(one, initiator=False, random_bytes=rb, now_ms=NOW)
    with pytest.raises(InvalidInput):
        channel.receive_data("text", NOW)
    with pytest.raises(InvalidInput):
        channel.receive_data(b"", True)
    with pytest.raises(InvalidInput):
        channel.tick(None)
    assert channel.state is ChannelState.HANDSHAKE


def test_transition_table_covers_every_state() -> None:
    assert set(_TRANSITIONS) == set(ChannelState)
    assert _TRANSITIONS[ChannelState.CLOSED] == {}
    for state, row in _TRANSITIONS.items():
        if state is not ChannelState.CLOSED:
            assert ChannelState.CLOSED in row.values()


def test_an_input_missing_from_the_table_is_a_protocol_error() -> None:
    one, _, _ = keyrings()
    channel = SecureChannel(one, initiator=False, random_bytes=random.Random(0).randbytes, now_ms=NOW)
    with pytest.raises(UnexpectedMessage, match="HANDSHAKE"):
        channel._fire(_channel._Input.FRAME_RECEIVED)
    assert channel.state is ChannelState.HANDSHAKE


def test_events_are_frozen() -> None:
    event = FrameReceived([1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.obj = 2  # type: ignore[misc]


# --- fuzzing -----------------------------------------------------------------------------------


def _survives(channel: SecureChannel, chunks: list[bytes | None]) -> list:
    events = []
    for chunk in chunks:
        channel.receive_data(chunk, NOW)
        events += drain(channel)
        channel.data_to_send()
    for event in events:
        assert isinstance(event, (ChannelEstablished, FrameReceived, ChannelClosed))
    closes = [e for e in events if isinstance(e, ChannelClosed)]
    assert len(closes) <= 1
    if closes:
        assert events[-1] is closes[0]
        assert closes[0].error is None or isinstance(closes[0].error, TillmeshError)
        assert channel.state is ChannelState.CLOSED
    return events


_chunks = st.lists(st.binary(max_size=200), min_size=1, max_size=8)


@FUZZ
@given(_chunks, st.booleans())
def test_fuzz_fresh_channel(chunks: list[bytes], initiator: bool) -> None:
    one, _, _ = keyrings()
    channel = SecureChannel(one, initiator=initiator, random_bytes=random.Random(0).randbytes, now_ms=NOW)
    events = _survives(channel, chunks)
    assert not any(isinstance(e, (ChannelEstablished, FrameReceived)) for e in events)


@FUZZ
@given(_chunks)
def test_fuzz_fresh_responder_with_a_valid_length_prefix(chunks: list[bytes]) -> None:
    one, _, _ = keyrings()
    channel = SecureChannel(one, initiator=False, random_bytes=random.Random(0).randbytes, now_ms=NOW)
    _survives(channel, [len(c).to_bytes(2, "big") + c for c in chunks])


@FUZZ
@given(st.integers(1, 3), _chunks)
def test_fuzz_after_a_valid_start_of_the_handshake(transfers: int, chunks: list[bytes]) -> None:
    """Let ``transfers`` genuine messages through, then the next receiver gets garbage."""
    one, two, _ = keyrings()
    pair = ChannelPair(one, two)
    source = pair.initiator
    for _ in range(transfers):
        pair.other(source).receive_data(source.data_to_send(), NOW)
        source = pair.other(source)
    target = pair.other(source)
    assert target.state is not ChannelState.CLOSED
    events = _survives(target, chunks)
    assert not any(isinstance(e, FrameReceived) for e in events)


@FUZZ
@given(_chunks, st.booleans())
def test_fuzz_established_channel_ciphertext(chunks: list[bytes], end: bool) -> None:
    pair = established()
    events = _survives(pair.responder, [*chunks, None] if end else chunks)
    assert not any(isinstance(e, FrameReceived) for e in events)


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.booleans())
def test_fuzz_established_channel_plaintext(chunks: list[bytes], with_frame_prefix: bool) -> None:
    """Arbitrary bytes inside valid encryption: frame parsing and CBOR decoding must cope."""
    pair = established()
    for chunk in chunks:
        prefix = len(chunk).to_bytes(4, "big") if with_frame_prefix else b""
        pair.initiator._write_stream(prefix + chunk)
    _survives(pair.responder, [pair.initiator.data_to_send(), None])


@FUZZ
@given(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255))
def test_fuzz_any_flipped_byte_in_the_handshake(message: int, position: int, xor: int) -> None:
    one, two, _ = keyrings()

    def tamper(transfer: int, data: bytes) -> bytes:
        if transfer != message + 1 or xor == 0:
            return data
        index = position % len(data)
        return data[:index] + bytes([data[index] ^ xor]) + data[index + 1:]

    pair = ChannelPair(one, two)
    pair.shuttle(tamper=tamper)
    pair.close_transport()
    for channel in (pair.initiator, pair.responder):
        events = pair.events[channel]
        error = closed_with(events)
        if xor == 0:
            assert error is None and isinstance(events[0], ChannelEstablished)
        else:
            # Transfer 3 also carries the initiator's certificate frame: flipping a bit there
            # fails its decryption, so in every case nobody is established.
            assert isinstance(error, TillmeshError)
            assert not any(isinstance(e, ChannelEstablished) for e in events)


class _MaskingDict(dict):
    def values(self):  # what the encoder does not look at
        return [0 for _ in dict.values(self)]

    def items(self):
        return [(k, 0) for k in dict.keys(self)]


def test_a_dict_subclass_is_checked_by_what_it_holds_not_by_what_its_methods_say() -> None:
    pair = established()
    with pytest.raises(MalformedWire):
        pair.initiator.send_frame(["have", _MaskingDict({1: 1.5})])
    assert pair.initiator.data_to_send() == b""
