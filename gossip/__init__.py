"""Sans-IO replication: identities and certificates, sealed feeds, the Noise handshake.

Nothing here opens a socket, reads a clock or draws randomness: ``now`` and a random-bytes
source are passed in, storage is an injected ``FeedStore``.
"""

from ._channel import (
    HANDSHAKE_TIMEOUT_MS,
    MAX_BUFFERED_BYTES,
    MAX_FRAME_BYTES,
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
)
from ._engine import MAX_OPENED_CACHE, MAX_PEERS, AckState, Alert, AppliedChange, Engine, EngineConfig, Unauthorized, seeded
from ._entry import ENTRY_VERSION, GENESIS_HASH, MAX_DEPS, MAX_ENTRY_BYTES, Entry
from ._errors import (
    BadSignature,
    CertificateError,
    CertificateExpired,
    ChainBroken,
    DecryptionError,
    EpochUnavailable,
    ForkDetected,
    MalformedData,
    Quarantined,
    Revoked,
    SeqGap,
    UnknownOrigin,
    UnreadableEntry,
    WrongNetwork,
)
from ._feeds import Feeds, Ingested, verify_authority_feed
from ._identity import (
    AUTHORITY_NUMBER,
    ROLES,
    Certificate,
    DeviceKey,
    EpochKeyGrant,
    Revocation,
    network_id_for,
    record_from_wire,
)
from ._keyring import MAX_TOKEN_BYTES, TOKEN_PREFIX, Authority, Keyring, import_token
from ._noise import (
    MAX_NOISE_MESSAGE,
    PROTOCOL_NAME,
    CipherState,
    DecryptionFailed,
    HandshakeFailed,
    HandshakePhase,
    HandshakeState,
    MalformedNoiseMessage,
    MessageTooLarge,
    NonceExhausted,
    OutOfTurn,
    SymmetricState,
    TransportCipher,
)
from ._loopback import Loopback
from ._policy import ALLOW_ALL, Policy, Rule, income_is_known, writes_only_own_slots
from ._session import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    MAX_HAVE_ORIGINS,
    TRANSITIONS,
    WINDOW_BYTES,
    Frame,
    Session,
    SessionProtocolError,
    SessionState,
    SessionStats,
    parse_frame,
)
from ._store import MAX_READ, FeedStore, Head, MemoryFeedStore

__all__ = [
    "ALLOW_ALL", "AckState", "Alert", "AppliedChange", "BufferOverflow", "ChannelClosed",
    "ChannelEstablished", "ChannelNotEstablished", "ChannelState", "ClosedChannelError",
    "ConnectionLost", "Engine", "EngineConfig", "Frame", "FrameReceived", "FrameTooLarge",
    "HANDSHAKE_TIMEOUT_MS", "HandshakeTimeout", "Loopback", "MAX_BATCH_BYTES", "MAX_BATCH_ENTRIES",
    "MAX_BUFFERED_BYTES", "MAX_FRAME_BYTES", "MAX_HAVE_ORIGINS", "MAX_OPENED_CACHE", "MAX_PEERS",
    "OutgoingFrameTooLarge", "PeerKeyMismatch", "Policy", "Rule", "SecureChannel", "Session",
    "SessionProtocolError", "SessionState", "SessionStats", "TRANSITIONS", "Unauthorized",
    "UnexpectedMessage", "UnreadableEntry", "WINDOW_BYTES", "income_is_known", "parse_frame", "seeded",
    "writes_only_own_slots",
    "AUTHORITY_NUMBER", "Authority", "BadSignature", "Certificate", "CertificateError",
    "CertificateExpired", "ChainBroken", "CipherState", "DecryptionError", "DecryptionFailed",
    "DeviceKey", "ENTRY_VERSION", "Entry", "EpochKeyGrant", "EpochUnavailable", "FeedStore",
    "Feeds", "ForkDetected", "GENESIS_HASH", "HandshakeFailed", "HandshakePhase", "HandshakeState",
    "Head", "Ingested", "Keyring", "MAX_DEPS", "MAX_ENTRY_BYTES", "MAX_NOISE_MESSAGE", "MAX_READ",
    "MAX_TOKEN_BYTES", "MalformedData", "MalformedNoiseMessage", "MemoryFeedStore",
    "MessageTooLarge", "NonceExhausted", "OutOfTurn", "PROTOCOL_NAME", "Quarantined", "ROLES",
    "Revocation", "Revoked", "SeqGap", "SymmetricState", "TOKEN_PREFIX", "TransportCipher",
    "UnknownOrigin", "WrongNetwork", "import_token", "network_id_for", "record_from_wire",
    "verify_authority_feed",
]
