"""Sans-IO replication: identities and certificates, sealed feeds, sessions, the engine.

Nothing here opens a socket, reads a clock or draws randomness: time (``Now``) and a
random-bytes source are passed in, storage is an injected ``FeedStore``. A driver feeds an
``Engine`` its inputs (``connected``, ``received``, ``disconnected``, ``tick``, ``commit``,
and ``flushed`` once the store is durable) and pulls ``poll() -> Effects``;
``gossip.testing`` wires engines together in memory.
"""

from ._config import EngineConfig, ping_interval_for
from ._engine import MAX_PEERS, Engine
from ._enrollment import MAX_TOKEN_BYTES, TOKEN_PREFIX, Authority, import_token, import_tokens
from ._entry import MAX_ENTRY_BYTES, Entry
from ._errors import (
    BadSignature,
    CertificateError,
    CertificateExpired,
    ChainBroken,
    DecryptionError,
    EpochUnavailable,
    ForkDetected,
    MalformedData,
    NotYet,
    OriginFault,
    Quarantined,
    Revoked,
    SeqGap,
    SessionProtocolError,
    Unauthorized,
    UnknownOrigin,
    UnreadableEntry,
    WrongNetwork,
)
from ._escrow import EscrowKeys
from ._events import (
    AckChange,
    AckLevel,
    AckSummary,
    Alert,
    AlertKind,
    AppliedChange,
    Close,
    CloseReason,
    Committed,
    Effects,
    Now,
    PeerStatus,
    Status,
)
from ._identity import AUTHORITY_NUMBER, ROLES, Certificate, DeviceKey, Revocation, network_id_for
from ._keyring import Keyring
from ._policy import ALLOW_ALL, Policy, Rule, income_is_known, writes_only_own_slots
from ._session import SessionState
from ._store import MAX_READ, FeedStore, Head, MemoryFeedStore

__all__ = [
    # the engine and what it hands out
    "Engine", "EngineConfig", "ping_interval_for", "MAX_PEERS", "Now", "Effects", "Alert", "AlertKind", "AppliedChange",
    "Committed", "Close", "CloseReason", "AckChange", "AckLevel", "AckSummary", "PeerStatus", "Status",
    "SessionState",
    # who may take part
    "Authority", "import_token", "import_tokens", "TOKEN_PREFIX", "MAX_TOKEN_BYTES", "Keyring", "DeviceKey", "Certificate",
    "Revocation", "network_id_for", "AUTHORITY_NUMBER", "ROLES",
    # what may be written, and where rights requests live
    "Policy", "Rule", "ALLOW_ALL", "writes_only_own_slots", "income_is_known", "EscrowKeys",
    # storage
    "FeedStore", "MemoryFeedStore", "Head", "MAX_READ", "Entry", "MAX_ENTRY_BYTES",
    # errors
    "NotYet", "OriginFault", "MalformedData", "BadSignature", "CertificateError", "WrongNetwork",
    "CertificateExpired", "Revoked", "UnknownOrigin", "ChainBroken", "SeqGap", "ForkDetected", "Quarantined",
    "EpochUnavailable", "DecryptionError", "UnreadableEntry", "Unauthorized", "SessionProtocolError",
]
