"""Sans-IO replication: identities and certificates, sealed feeds, the Noise handshake.

Nothing here opens a socket, reads a clock or draws randomness: ``now`` and a random-bytes
source are passed in, storage is an injected ``FeedStore``.
"""

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
from ._store import MAX_READ, FeedStore, Head, MemoryFeedStore

__all__ = [
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
