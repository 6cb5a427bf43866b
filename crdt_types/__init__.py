"""Pure CRDT semantics: the types a shop replicates, and the replica that holds them.

No I/O, clocks or randomness here: time is passed in, everything is a value.
"""

from ._bounded import BoundedCounter
from ._check import MAX_AMOUNT, MAX_TOTAL, canonical
from ._counter import PNCounter
from ._document import Document, client_id_for
from ._errors import (
    IntegrityError,
    InsufficientRights,
    InvalidInput,
    MalformedWire,
    RemoteProtocolError,
    StorageError,
    TillmeshError,
    UnknownKey,
    UnknownOps,
)
from ._hlc import DEFAULT_MAX_SKEW_MS, HLC, ClockSkew, Timestamp
from ._record import Record
from ._register import LWWRegister
from ._replica import GROUP_VERSION, MAX_OPS_PER_GROUP, DeltaGroup, MergeResult, Replica, Transaction
from ._schema import CRDT_CODES, CRDT_TYPES, DEFAULT_SCHEMA, KeyRule, Schema
from ._yupdate import UpdateInfo, parse_update

__all__ = [
    "BoundedCounter", "ClockSkew", "CRDT_CODES", "GROUP_VERSION", "CRDT_TYPES", "DEFAULT_MAX_SKEW_MS", "DEFAULT_SCHEMA",
    "DeltaGroup", "Document", "HLC", "IntegrityError", "InsufficientRights", "InvalidInput",
    "KeyRule", "LWWRegister", "MAX_AMOUNT", "MAX_OPS_PER_GROUP", "MAX_TOTAL", "MalformedWire",
    "MergeResult", "PNCounter", "Record", "RemoteProtocolError", "Replica", "Schema",
    "StorageError", "TillmeshError", "UnknownKey", "UnknownOps", "Timestamp", "Transaction", "canonical", "client_id_for",
    "UpdateInfo", "parse_update",
]
