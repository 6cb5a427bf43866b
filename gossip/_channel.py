"""The secure channel under every session: Noise handshake, certificates, framed CBOR, sans-IO.

Theory of operation
-------------------
A ``SecureChannel`` turns a byte stream (TCP on the shop LAN, a relayed stream through an anchor)
into a sequence of authenticated CBOR frames from a peer whose certificate has been checked. It
does no I/O, in the manner of h11 and wsproto: the driver feeds received bytes to
``receive_data(data, now_ms)`` (``None`` when the transport closed), sends whatever
``data_to_send()`` hands out, and pulls ``next_event()`` until it returns None. Time is an
argument and the ephemeral keys come from an injected ``random_bytes`` source, so the simulator
and hypothesis can drive the real thing.

On the wire every Noise message, handshake or transport, is preceded by its length as 2 bytes
big-endian (the Noise specification's section 13 convention; a Noise message is at most 65535
bytes, so the prefix always fits). The handshake is ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b``
with the network key as psk, the device's X25519 key (derived from its Ed25519 key) as static
key and ``PROLOGUE`` as prologue; all three handshake payloads are empty and a peer that puts
anything in them is refused, so that a later protocol version cannot be half-understood.

A Noise static key proves only that the peer holds some X25519 private key. What makes it a
device of this network is the certificate, which each side sends as its first transport frame:
``[certificate, signature]``, the signature being the device's Ed25519 signature over
``signable(CERTIFICATE_CONTEXT, [handshake_hash, certificate])``. Binding the signature to the
handshake hash means a certificate frame recorded from one session cannot be replayed in
another; checking that the certificate's key converts to the Noise remote static key means a
device cannot present another device's (public) certificate. The receiver accepts the peer only
when all of this holds and the keyring accepts the certificate at ``now_ms`` (right network,
authority signature, not revoked, not expired). Revoked devices still hold the network key — it
is not rotated on revocation — so this check, not the psk, is what keeps them out.

The certificate frame has a second job. With psk3 the initiator, having *written* the last
handshake message, is done with Noise whether or not the responder holds the network key; it
learns that only when the responder's first transport message decrypts. So neither side trusts
the other, nor lets the application send, before the peer's certificate frame has been
accepted: that is the ``VERIFYING`` state between the handshake and ``ESTABLISHED``. The
initiator sends its certificate right behind the third handshake message; the responder sends
its own only once it has accepted the initiator's. That costs no round trip, tells the initiator
that it was accepted when it becomes established (the converse cannot hold for the responder:
some side has to accept last), and shows a refused peer nothing beyond the static key it already
saw in message 2. The handshake timeout covers the certificate exchange too, because a peer that
stops after the Noise messages still holds a connection slot.

Inside the transport, the decrypted bytes are one stream of frames, each a 4-byte big-endian
length followed by that many bytes of canonical CBOR holding plain data (no floats, no tags,
at most ``MAX_FRAME_DEPTH`` deep). A frame larger than a Noise message is simply spread over
several; frame and message boundaries are independent, and the receiver reassembles. The
declared length is checked against ``MAX_FRAME_BYTES`` as soon as its four bytes arrive, so an
oversized frame is refused before a byte of it is buffered.

States and their transitions are data (``_TRANSITIONS``). Every input the channel reacts to is
looked up there; an input a state does not list is, if it came from the peer, a protocol error
that closes the channel, and if it came from the caller (``send_frame`` too early or too late), a
local error that changes nothing. Any failure — a handshake message that does not authenticate, a
transport message that does not decrypt, a frame that is not canonical CBOR, a certificate that
is refused, a limit exceeded, the handshake timing out, a nonce running out — ends in one
``ChannelClosed(error)`` event and the ``CLOSED`` state, where received bytes are ignored and
``send_frame`` raises. Output not yet handed out by ``data_to_send`` is dropped with it: nothing
more goes to a peer that broke the protocol. A transport that closes at a frame boundary of an
established channel is a clean end (``ChannelClosed(None)``); whether it was *orderly* is the
session's business (its ``bye`` frame). Anywhere else it is ``ConnectionLost``.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from crdt_types import InvalidInput, MalformedWire, TillmeshError, canonical

from ._codec import decode, signable
from ._errors import (
    BufferOverflow,
    ChannelNotEstablished,
    ClosedChannelError,
    ConnectionLost,
    FrameTooLarge,
    HandshakeTimeout,
    MalformedData,
    OutgoingFrameTooLarge,
    PeerKeyMismatch,
    UnexpectedMessage,
)
from ._identity import Certificate, record_from_wire, verify_signature, x25519_public_of
from ._keyring import Keyring
from ._noise import (
    MAX_NOISE_MESSAGE,
    PROTOCOL_NAME,
    TAGLEN,
    HandshakePhase,
    HandshakeState,
    NonceExhausted,
    TransportCipher,
)

__all__ = [
    "PROLOGUE", "CERTIFICATE_CONTEXT", "MAX_FRAME_BYTES", "MAX_BUFFERED_BYTES",
    "HANDSHAKE_TIMEOUT_MS", "MAX_FRAME_DEPTH", "ChannelState", "ChannelEstablished",
    "FrameReceived", "ChannelClosed", "ChannelEvent", "SecureChannel",
]

# Mixed into the Noise transcript: a peer speaking another protocol or version fails the
# handshake instead of misreading our frames.
PROLOGUE = b"tillmesh/v1"
CERTIFICATE_CONTEXT = b"tillmesh/v1/channel-certificate"

# The largest frame is an ``entries`` batch. An entry is at most 60 KiB (MAX_ENTRY_BYTES), so
# 1 MiB still carries 16 of the largest and hundreds of ordinary sales, while one frame stays
# about a second on a slow shop uplink; the session cuts batches to fit, and anything larger
# is a peer trying to make us buffer.
MAX_FRAME_BYTES = 1024 * 1024
# Received bytes not yet taken by the application: undecoded ciphertext, the partial frame being
# reassembled, and decoded frames waiting in the event queue. One maximal frame in reassembly
# plus one in the queue plus a Noise message in flight fit; a driver that reads at most 64 KiB at
# a time (trio's receive_some default) and drains next_event() after each receive_data never
# comes near it. A peer that outruns the application is cut off instead of growing memory.
MAX_BUFFERED_BYTES = 2 * 1024 * 1024
# A LAN handshake takes milliseconds and one through an anchor over a poor mobile link a few
# round trips of at most a second or two; a pending handshake holds a connection slot, so a
# stalled or hostile dialer must give it back quickly.
HANDSHAKE_TIMEOUT_MS = 10_000
# Frames are plain data; the deepest is an ``entries`` batch holding entries holding delta
# groups holding register values (themselves at most 8 deep). Bounding it keeps both our walk
# and cbor2's recursive decoder far from any recursion limit.
MAX_FRAME_DEPTH = 32

_LENGTH_PREFIX = 2  # bytes before every Noise message on the stream
_FRAME_PREFIX = 4  # bytes before every frame in the decrypted stream
_MAX_PLAINTEXT = MAX_NOISE_MESSAGE - TAGLEN  # per transport message
_SIGNATURE_BYTES = 64
_MIN_INT, _MAX_INT = -(2**64), 2**64 - 1  # CBOR major types 0 and 1, no bignum tags


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelEstablished:
    """The peer's certificate was accepted; frames may now be sent."""

    peer: Certificate


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """One frame from the peer, decoded from canonical CBOR (arrays come back as lists)."""

    obj: Any


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The channel ended: ``error`` is None for a clean end of the transport, else why."""

    error: TillmeshError | None


ChannelEvent = ChannelEstablished | FrameReceived | ChannelClosed


# --- the state machine --------------------------------------------------------------------------


class ChannelState(enum.Enum):
    """Where a SecureChannel stands."""

    HANDSHAKE = "handshake"  # Noise handshake messages are being exchanged
    VERIFYING = "verifying"  # Noise done; the peer's certificate frame not yet accepted
    ESTABLISHED = "established"  # the peer is authenticated: frames flow both ways
    CLOSED = "closed"  # ended by the transport, an error or a timeout; nothing moves any more


class _Input(enum.Enum):
    HANDSHAKE_MESSAGE = "handshake_message"  # a handshake message read or written, more to come
    HANDSHAKE_DONE = "handshake_done"  # the last handshake message read or written
    PEER_CERTIFICATE = "peer_certificate"  # the peer's certificate frame was accepted
    FRAME_RECEIVED = "frame_received"  # an application frame arrived
    FRAME_SENT = "frame_sent"  # the application sent a frame (the only local input)
    TRANSPORT_CLOSED = "transport_closed"  # receive_data(None)
    FAILED = "failed"  # the peer's error, a timeout or an exhausted nonce


_TRANSITIONS: dict[ChannelState, dict[_Input, ChannelState]] = {
    ChannelState.HANDSHAKE: {
        _Input.HANDSHAKE_MESSAGE: ChannelState.HANDSHAKE,
        _Input.HANDSHAKE_DONE: ChannelState.VERIFYING,
        _Input.TRANSPORT_CLOSED: ChannelState.CLOSED,
        _Input.FAILED: ChannelState.CLOSED,
    },
    ChannelState.VERIFYING: {
        _Input.PEER_CERTIFICATE: ChannelState.ESTABLISHED,
        _Input.TRANSPORT_CLOSED: ChannelState.CLOSED,
        _Input.FAILED: ChannelState.CLOSED,
    },
    ChannelState.ESTABLISHED: {
        _Input.FRAME_RECEIVED: ChannelState.ESTABLISHED,
        _Input.FRAME_SENT: ChannelState.ESTABLISHED,
        _Input.TRANSPORT_CLOSED: ChannelState.CLOSED,
        _Input.FAILED: ChannelState.CLOSED,
    },
    ChannelState.CLOSED: {},
}


def _now(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"now_ms must be an int (milliseconds), got {value!r}")
    return value


_SCALARS = frozenset({type(None), bool, str, bytes, bytearray})
_CONTAINERS = frozenset({list, tuple, dict})


def _plain_data_problem(obj: Any) -> str | None:
    """Why ``obj`` is not a frame's plain data, or None if it is."""
    # Every frame in and out passes here. The walk holds containers only: the scalars of
    # each container are checked in the loop over it, exact types first (a set lookup), and
    # only something else (a subclass, or not plain data at all) takes the isinstance path.
    pending = [((obj,), 0)]  # (items, their depth)
    pop, push = pending.pop, pending.append
    while pending:
        items, depth = pop()
        for item in items:
            kind = type(item)
            if kind in _SCALARS:
                continue
            if kind is int:
                if not _MIN_INT <= item <= _MAX_INT:
                    return f"integer {item} is outside CBOR's 64-bit range (bignums are tags)"
                continue
            if kind not in _CONTAINERS:
                problem = _unusual_item_problem(item)
                if problem is not None:
                    return problem
                if not isinstance(item, (list, tuple, dict)):
                    continue  # a subclass of a scalar
            if depth >= MAX_FRAME_DEPTH:
                return f"nested deeper than {MAX_FRAME_DEPTH}"
            if isinstance(item, dict):  # dict's own views: what the encoder will encode
                push((dict.keys(item), depth + 1))
                push((dict.values(item), depth + 1))
            else:
                push((item, depth + 1))
    return None


def _unusual_item_problem(item: Any) -> str | None:
    """For an item whose exact type is not plain data: None if it subclasses a plain type."""
    if isinstance(item, int) and not isinstance(item, bool):
        if not _MIN_INT <= item <= _MAX_INT:
            return f"integer {item} is outside CBOR's 64-bit range (bignums are tags)"
        return None
    if isinstance(item, (bool, str, bytes, bytearray, list, tuple, dict)):
        return None
    return f"{type(item).__name__} is not plain data (None, bool, int, bytes, str, array, map)"


def _encode_frame(obj: Any) -> bytes:
    # Checked before encoding, so that the peer's decoder, which refuses exactly what is not
    # plain data, never refuses what we send: the caller gets the blame instead.
    problem = _plain_data_problem(obj)
    if problem is not None:
        raise MalformedWire(f"frame: {problem}")
    payload = canonical(obj)
    if len(payload) > MAX_FRAME_BYTES:
        raise OutgoingFrameTooLarge(
            f"frame encodes to {len(payload)} bytes; the limit is {MAX_FRAME_BYTES}")
    return payload


class SecureChannel:
    """One end of an authenticated, encrypted, framed connection to another device.

    Typical driver loop::

        channel = SecureChannel(keyring, initiator=True, random_bytes=rng.randbytes, now_ms=now)
        send(channel.data_to_send())
        while True:
            channel.receive_data(receive() or None, now())
            while (event := channel.next_event()) is not None:
                ...  # ChannelEstablished, FrameReceived, ChannelClosed
            send(channel.data_to_send())

    Args:
        keyring: this device's keyring; it must hold the device key and its certificate.
        initiator: True on the side that opened the connection (it speaks first).
        random_bytes: the injected randomness source (for the Noise ephemeral key).
        now_ms: the current time; the handshake deadline counts from here.

    Raises:
        InvalidInput: the keyring has no device key or certificate (or they do not match), or an
            argument has the wrong type.
    """

    __slots__ = (
        "_keyring", "_initiator", "_state", "_handshake", "_transport", "_handshake_hash",
        "_remote_static", "_peer", "_deadline", "_inbuf", "_offset", "_plain", "_outgoing",
        "_events", "_queued_bytes", "on_output",
    )

    def __init__(self, keyring: Keyring, *, initiator: bool,
                 random_bytes: Callable[[int], bytes], now_ms: int) -> None:
        if not isinstance(keyring, Keyring):
            raise InvalidInput(f"keyring must be a Keyring, got {type(keyring).__name__}")
        device, cert = keyring.device, keyring.certificate
        if device is None or cert is None:
            raise InvalidInput("a channel needs a keyring with this device's key and certificate")
        if cert.device_key != device.public:
            raise InvalidInput(f"the keyring's certificate (device {cert.number}) is for another key")
        if not isinstance(initiator, bool):
            raise InvalidInput(f"initiator must be a bool, got {type(initiator).__name__}")
        now_ms = _now(now_ms)
        self._keyring = keyring
        self._initiator = initiator
        self._state = ChannelState.HANDSHAKE
        self._handshake: HandshakeState | None = HandshakeState(
            PROTOCOL_NAME, initiator=initiator, prologue=PROLOGUE, s=device.x25519_private,
            psks=[keyring.network_key], random_bytes=random_bytes)
        self._transport: TransportCipher | None = None
        self._handshake_hash: bytes | None = None
        self._remote_static: bytes | None = None
        self._peer: Certificate | None = None
        self._deadline = now_ms + HANDSHAKE_TIMEOUT_MS
        self._inbuf = bytearray()  # received, not yet a whole Noise message (from _offset on)
        self._offset = 0
        self._plain = bytearray()  # decrypted, not yet a whole frame
        self._outgoing = bytearray()
        # Called when bytes are queued for ``data_to_send`` and none were waiting: a driver
        # with many channels asks only those that have something.
        self.on_output: Callable[[], None] | None = None
        self._events: deque[tuple[ChannelEvent, int]] = deque()  # (event, bytes it holds)
        self._queued_bytes = 0
        if initiator:
            self._queue_message(self._handshake.write_message(b""))
            self._fire(_Input.HANDSHAKE_MESSAGE)

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        peer = "" if self._peer is None else f", peer={self._peer.number}"
        return f"SecureChannel({role}, {self._state.name}{peer})"

    # -- observers --

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def peer(self) -> Certificate | None:
        """The peer's accepted certificate, once established (kept after a close)."""
        return self._peer

    def next_deadline(self) -> int | None:
        """When ``tick`` must next be called: the handshake deadline, or None once established."""
        if self._state in (ChannelState.HANDSHAKE, ChannelState.VERIFYING):
            return self._deadline
        return None

    # -- inputs --

    def receive_data(self, data: bytes | None, now_ms: int, wall_ms: int | None = None) -> None:
        """Take in bytes received from the peer, or ``None`` when the transport has closed.

        ``now_ms`` is monotonic time (the handshake deadline); ``wall_ms`` the wall clock the
        peer's certificate expiry is judged by (``now_ms`` when omitted).

        Everything complete is processed at once: events queue up for ``next_event`` and any
        reply (handshake messages, our certificate) for ``data_to_send``. Ignored once closed.
        An empty ``data`` is not an end of stream (unlike h11); only ``None`` is.

        Raises:
            InvalidInput: ``data`` is neither bytes nor None, or ``now_ms`` is not an int;
                nothing changed. Everything the peer does wrong closes the channel instead.
        """
        now_ms = _now(now_ms)
        if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"data must be bytes or None, got {type(data).__name__}")
        if self._state is ChannelState.CLOSED:
            return
        try:
            if self._timed_out(now_ms):
                return
            if data is None:
                self._transport_closed()
                return
            self._inbuf += data
            self._process(now_ms if wall_ms is None else _now(wall_ms))
            if self._state is not ChannelState.CLOSED:
                self._check_buffered()
        except TillmeshError as exc:
            self._fail(exc)

    def tick(self, now_ms: int) -> None:
        """Let time pass: closes the channel with ``HandshakeTimeout`` once the deadline is reached.

        Raises:
            InvalidInput: ``now_ms`` is not an int.
        """
        self._timed_out(_now(now_ms))

    def send_frame(self, obj: Any) -> None:
        """Encode ``obj`` as canonical CBOR and queue it, encrypted, for ``data_to_send``.

        Args:
            obj: plain data: None, bool, int (within CBOR's 64-bit range), bytes, str, and
                lists, tuples and dicts of these, at most MAX_FRAME_DEPTH deep. No floats, no
                CBOR tags (sets, datetimes, bignums): the peer would refuse them.

        Raises:
            ChannelNotEstablished: the peer's certificate has not been accepted yet.
            ClosedChannelError: the channel is closed.
            OutgoingFrameTooLarge: the encoding exceeds MAX_FRAME_BYTES.
            MalformedWire: ``obj`` is not such plain data.
            NonceExhausted: the send nonces are used up; the channel is now closed.
            In every case but the last, nothing changed.
        """
        if _Input.FRAME_SENT not in _TRANSITIONS[self._state]:
            if self._state is ChannelState.CLOSED:
                raise ClosedChannelError("cannot send a frame: the channel is closed")
            raise ChannelNotEstablished(
                f"cannot send a frame in state {self._state.name}: the peer is not yet authenticated")
        payload = _encode_frame(obj)
        try:
            self._write_stream(len(payload).to_bytes(_FRAME_PREFIX, "big") + payload)
        except NonceExhausted as exc:
            self._fail(exc)
            raise
        self._fire(_Input.FRAME_SENT)

    # -- outputs --

    @property
    def has_output(self) -> bool:
        """Whether ``data_to_send`` would return anything."""
        return bool(self._outgoing)

    def data_to_send(self) -> bytes:
        """The bytes to write to the transport now (and forget); b"" when there are none."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def next_event(self) -> ChannelEvent | None:
        """The next event, or None when nothing is pending. ``ChannelClosed`` is always last."""
        if not self._events:
            return None
        event, size = self._events.popleft()
        self._queued_bytes -= size
        return event

    # -- internals --

    def _fire(self, event: _Input) -> None:
        next_state = _TRANSITIONS[self._state].get(event)
        if next_state is None:
            raise UnexpectedMessage(f"{event.value} is not allowed in state {self._state.name}")
        self._state = next_state

    def _emit(self, event: ChannelEvent, size: int = 0) -> None:
        self._events.append((event, size))
        self._queued_bytes += size

    def _fail(self, error: TillmeshError) -> None:
        if self._state is ChannelState.CLOSED:
            return
        self._fire(_Input.FAILED)
        self._release()
        self._outgoing.clear()
        self._emit(ChannelClosed(error))

    def _release(self) -> None:
        self._handshake = None
        self._transport = None
        self._inbuf = bytearray()
        self._offset = 0
        self._plain = bytearray()

    def _timed_out(self, now_ms: int) -> bool:
        deadline = self.next_deadline()
        if deadline is None or now_ms < deadline:
            return False
        self._fail(HandshakeTimeout(
            f"no authenticated peer {HANDSHAKE_TIMEOUT_MS} ms after the connection opened "
            f"(state {self._state.name}, now {now_ms}, deadline {deadline})"))
        return True

    def _transport_closed(self) -> None:
        error: TillmeshError | None = None
        if self._state is not ChannelState.ESTABLISHED:
            error = ConnectionLost(f"transport closed in state {self._state.name}")
        elif len(self._inbuf) > self._offset or self._plain:
            error = ConnectionLost(
                f"transport closed with {len(self._inbuf) - self._offset} bytes of an incomplete "
                f"Noise message and {len(self._plain)} bytes of an incomplete frame")
        self._fire(_Input.TRANSPORT_CLOSED)
        self._release()
        self._emit(ChannelClosed(error))

    def _check_buffered(self) -> None:
        held = len(self._inbuf) - self._offset + len(self._plain) + self._queued_bytes
        if held > MAX_BUFFERED_BYTES:
            raise BufferOverflow(
                f"{held} bytes received and not yet taken by the application; "
                f"the limit is {MAX_BUFFERED_BYTES}")

    def _queue_message(self, message: bytes) -> None:
        self._announce()
        self._outgoing += len(message).to_bytes(_LENGTH_PREFIX, "big")
        self._outgoing += message

    def _announce(self) -> None:
        if not self._outgoing and self.on_output is not None:
            self.on_output()

    def _write_stream(self, data: bytes) -> None:
        """Encrypt ``data`` (frame bytes) as transport messages; all or nothing."""
        assert self._transport is not None
        out = bytearray()
        view = memoryview(data)
        for start in range(0, len(view), _MAX_PLAINTEXT):
            message = self._transport.encrypt(view[start:start + _MAX_PLAINTEXT])
            out += len(message).to_bytes(_LENGTH_PREFIX, "big")
            out += message
        self._announce()
        self._outgoing += out

    def _process(self, wall_ms: int) -> None:
        buf = self._inbuf
        while self._state is not ChannelState.CLOSED:
            available = len(buf) - self._offset
            if available < _LENGTH_PREFIX:
                break
            length = int.from_bytes(buf[self._offset:self._offset + _LENGTH_PREFIX], "big")
            if available < _LENGTH_PREFIX + length:
                break
            start = self._offset + _LENGTH_PREFIX
            message = bytes(buf[start:start + length])
            self._offset = start + length
            if self._state is ChannelState.HANDSHAKE:
                self._handshake_message(message)
            else:
                self._transport_message(message, wall_ms)
        if self._state is not ChannelState.CLOSED:
            del buf[:self._offset]
            self._offset = 0

    def _handshake_message(self, message: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None
        if handshake.read_message(message):
            raise UnexpectedMessage("handshake payloads must be empty in tillmesh/v1")
        if handshake.phase is HandshakePhase.WRITING:
            self._queue_message(handshake.write_message(b""))
        if not handshake.complete:
            self._fire(_Input.HANDSHAKE_MESSAGE)
            return
        self._handshake_hash = handshake.handshake_hash
        self._remote_static = handshake.remote_static
        self._transport = TransportCipher(*handshake.split())
        self._handshake = None
        self._fire(_Input.HANDSHAKE_DONE)
        if self._initiator:
            self._send_certificate()

    def _send_certificate(self) -> None:
        assert self._handshake_hash is not None
        payload = _encode_frame(self._certificate_frame(self._handshake_hash))
        self._write_stream(len(payload).to_bytes(_FRAME_PREFIX, "big") + payload)

    def _certificate_frame(self, handshake_hash: bytes) -> list:
        """``[certificate, signature]`` binding our certificate to this handshake."""
        device, cert = self._keyring.device, self._keyring.certificate
        assert device is not None and cert is not None
        wire = cert.to_wire()
        return [wire, device.sign(signable(CERTIFICATE_CONTEXT, [handshake_hash, wire]))]

    def _transport_message(self, message: bytes, wall_ms: int) -> None:
        assert self._transport is not None
        plain = self._plain
        plain += self._transport.decrypt(message)
        while self._state is not ChannelState.CLOSED and len(plain) >= _FRAME_PREFIX:
            length = int.from_bytes(plain[:_FRAME_PREFIX], "big")
            if length > MAX_FRAME_BYTES:
                raise FrameTooLarge(
                    f"the peer announced a {length}-byte frame; the limit is {MAX_FRAME_BYTES}")
            if len(plain) < _FRAME_PREFIX + length:
                break
            payload = bytes(plain[_FRAME_PREFIX:_FRAME_PREFIX + length])
            del plain[:_FRAME_PREFIX + length]
            obj = decode(payload, limit=MAX_FRAME_BYTES, what="frame")
            problem = _plain_data_problem(obj)
            if problem is not None:
                raise MalformedData(f"frame: {problem}")
            if self._state is ChannelState.VERIFYING:
                self._accept_certificate(obj, wall_ms)
            else:
                self._fire(_Input.FRAME_RECEIVED)
                self._emit(FrameReceived(obj), _FRAME_PREFIX + length)

    def _accept_certificate(self, obj: Any, wall_ms: int) -> None:
        if (not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], bytes)
                or len(obj[1]) != _SIGNATURE_BYTES):
            raise MalformedData("certificate frame: expected [certificate, 64-byte signature]")
        cert = record_from_wire(obj[0])
        if not isinstance(cert, Certificate):
            raise MalformedData(f"certificate frame: holds a {cert.TYPE} record, not a certificate")
        self._keyring.check_peer(cert, wall_ms)
        if x25519_public_of(cert.device_key) != self._remote_static:
            raise PeerKeyMismatch(
                f"certificate of device {cert.number} ({cert.name}) is for key "
                f"{cert.device_key.hex()[:16]}…, not the key the peer completed the handshake with")
        assert self._handshake_hash is not None
        bound = signable(CERTIFICATE_CONTEXT, [self._handshake_hash, cert.to_wire()])
        verify_signature(cert.device_key, bound, obj[1], f"channel certificate of device {cert.number}")
        self._fire(_Input.PEER_CERTIFICATE)
        self._peer = cert
        if not self._initiator:
            self._send_certificate()
        self._emit(ChannelEstablished(cert))
