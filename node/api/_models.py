"""The request and response bodies of the local API, as pydantic models.

The till software is the API's only client, but a bug there must not write a wrong price:
every model forbids unknown fields (a typo such as ``"ammount"`` is a 422, not a no-op),
integers are strict (``2.0``, ``"2"`` and ``true`` are refused where an amount belongs, and
floats anywhere in a value, since money and quantities are integers in minor units), and a
key is checked against the POS schema and against the verb before the node sees the op, so
a refusal names the exact field (``ops.3.key``) and the node is never called with it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, WithJsonSchema, field_validator

from crdt_types import (
    MAX_AMOUNT,
    MAX_OPS_PER_GROUP,
    BoundedCounter,
    Document,
    InvalidInput,
    LWWRegister,
    PNCounter,
    Record,
)
from ..pos import POS_SCHEMA

__all__ = [
    "Op", "TransactionRequest", "TransactionResult", "KeyValue", "AuthorityImport", "AuthorityImported",
    "ErrorBody", "FieldError", "check_key", "check_value", "MAX_VALUE_DEPTH",
]

MAX_VALUE_DEPTH = 8
MAX_DEVICE_NUMBER = 2**20  # gossip's bound on device numbers (they index version vectors)
MAX_KEY_PART_CHARS = 128
MAX_FIELD_NAME_CHARS = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def check_key(parts: list) -> list:
    """A key as the POS schema knows it: 2..4 parts, short strings or ints >= 0, a known kind.

    Raises:
        ValueError: the key's shape or kind is wrong (pydantic reports it at the field).
    """
    if not isinstance(parts, list) or not 2 <= len(parts) <= 4:
        raise ValueError(f"a key is a list of 2..4 parts, e.g. [\"stock\", \"central\", \"sku1\"], got {parts!r}")
    for i, part in enumerate(parts):
        if isinstance(part, str):
            if not 0 < len(part) <= MAX_KEY_PART_CHARS:
                raise ValueError(f"key part {i} must be 1..{MAX_KEY_PART_CHARS} characters, got {len(part)}")
        elif isinstance(part, bool) or not isinstance(part, int) or part < 0:
            raise ValueError(f"key part {i} must be a string or an integer >= 0, got {part!r}")
    try:
        POS_SCHEMA.type_of(tuple(parts))
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None
    return parts


def check_value(value: Any, where: str = "value", depth: int = 0) -> Any:
    """Plain JSON data without floats: null, booleans, integers, strings, lists, objects.

    Raises:
        ValueError: a float (money and quantities are integers, in minor units) or nesting
            deeper than ``MAX_VALUE_DEPTH``, naming where in the value it sits.
    """
    if depth > MAX_VALUE_DEPTH:
        raise ValueError(f"{where} nests deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, float):
        raise ValueError(f"{where} is the float {value!r}; money and quantities are integers (minor units)")
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for k, item in value.items():
            check_value(item, f"{where}.{k}", depth + 1)
    elif value is not None and not isinstance(value, (bool, int, str)):
        raise ValueError(f"{where} has the unsupported type {type(value).__name__}")
    return value


_KEY_SCHEMA = {"type": "array", "minItems": 2, "maxItems": 4, "example": ["stock", "central", "sku1"],
               "items": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_KEY_PART_CHARS},
                                   {"type": "integer", "minimum": 0}]}}
Key = Annotated[list[Any], AfterValidator(check_key), WithJsonSchema(_KEY_SCHEMA)]
Value = Annotated[Any, AfterValidator(check_value),
                  Field(description="plain JSON: null, true/false, integers, strings, lists, objects; no floats")]
Amount = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT, description="a positive integer (minor units or pieces)")]


class _Op(_Strict):
    CRDT: ClassVar[type]

    @field_validator("key", check_fields=False)
    @classmethod
    def _key_holds_the_right_type(cls, key: list) -> list:
        crdt = POS_SCHEMA.type_of(tuple(key))
        if crdt is not cls.CRDT:
            verb = cls.model_fields["op"].annotation.__args__[0]
            raise ValueError(f"key {key!r} holds a {crdt.__name__}; {verb!r} works on a {cls.CRDT.__name__}")
        return key

    ARGS: ClassVar[tuple[str, ...]] = ()  # the op's arguments after the key, in order

    def as_tuple(self) -> tuple:
        """The op as data for ``Transaction.apply``: ``(verb, key, *arguments)``."""
        return (self.op, tuple(self.key), *(getattr(self, name) for name in self.ARGS))


class AddOp(_Op):
    """Add to a stock counter; negative to remove pieces."""

    CRDT: ClassVar[type] = PNCounter
    op: Literal["add"]
    key: Key
    amount: Annotated[StrictInt, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="non-zero; negative removes")]

    @field_validator("amount")
    @classmethod
    def _non_zero(cls, amount: int) -> int:
        if amount == 0:
            raise ValueError("an add of 0 changes nothing; send a non-zero amount")
        return amount

    ARGS: ClassVar[tuple[str, ...]] = ('amount',)


class SetOp(_Op):
    """Write a register: a price, a profile field, a setting."""

    CRDT: ClassVar[type] = LWWRegister
    op: Literal["set"]
    key: Key
    value: Value

    ARGS: ClassVar[tuple[str, ...]] = ('value',)


class IncrementOp(_Op):
    """Top up a bounded counter (a member balance); the rights to spend it are this device's."""

    CRDT: ClassVar[type] = BoundedCounter
    op: Literal["increment"]
    key: Key
    amount: Amount

    ARGS: ClassVar[tuple[str, ...]] = ('amount',)


class DecrementOp(_Op):
    """Spend from a bounded counter, within this device's rights (else 409)."""

    CRDT: ClassVar[type] = BoundedCounter
    op: Literal["decrement"]
    key: Key
    amount: Amount

    ARGS: ClassVar[tuple[str, ...]] = ('amount',)


class TransferOp(_Op):
    """Give some of this device's rights on a bounded counter to device ``to``."""

    CRDT: ClassVar[type] = BoundedCounter
    op: Literal["transfer"]
    key: Key
    to: Annotated[StrictInt, Field(ge=0, le=MAX_DEVICE_NUMBER, description="the receiving device's number")]
    amount: Amount

    ARGS: ClassVar[tuple[str, ...]] = ('to', 'amount')


class RecordOp(_Op):
    """Write an immutable record (a sale)."""

    CRDT: ClassVar[type] = Record
    op: Literal["record"]
    key: Key
    value: Value

    ARGS: ClassVar[tuple[str, ...]] = ('value',)


class SetFieldOp(_Op):
    """Set a field of a shared document (an open order)."""

    CRDT: ClassVar[type] = Document
    op: Literal["set_field"]
    key: Key
    name: Annotated[StrictStr, Field(min_length=1, max_length=MAX_FIELD_NAME_CHARS)]
    value: Value

    ARGS: ClassVar[tuple[str, ...]] = ('name', 'value')


class AddLineOp(_Op):
    """Append a line to a shared document (an open order)."""

    CRDT: ClassVar[type] = Document
    op: Literal["add_line"]
    key: Key
    line: Annotated[dict[StrictStr, Value], Field(description="the line item: plain JSON, integers for money")]

    ARGS: ClassVar[tuple[str, ...]] = ('line',)


class RemoveLineOp(_Op):
    """Remove a line of a shared document by its index."""

    CRDT: ClassVar[type] = Document
    op: Literal["remove_line"]
    key: Key
    index: Annotated[StrictInt, Field(ge=0)]

    ARGS: ClassVar[tuple[str, ...]] = ('index',)


Op = Annotated[Union[AddOp, SetOp, IncrementOp, DecrementOp, TransferOp, RecordOp, SetFieldOp, AddLineOp,
                     RemoveLineOp], Field(discriminator="op")]
VERBS = ("add", "set", "increment", "decrement", "transfer", "record", "set_field", "add_line", "remove_line")


class TransactionRequest(_Strict):
    """One transaction: its ops are applied together or not at all."""

    ops: Annotated[list[Op], Field(min_length=1, max_length=MAX_OPS_PER_GROUP)]

    def as_tuples(self) -> list[tuple]:
        return [op.as_tuple() for op in self.ops]


class TransactionResult(_Strict):
    """The durable entry that holds the transaction, and how far it has spread."""

    origin: int
    seq: int
    hash: str
    ack: Literal["local", "lan", "anchor"]


class KeyValue(_Strict):
    key: list[Union[str, int]]
    value: Any


class AuthorityImport(_Strict):
    """An authority bundle printed by ``tillmesh revoke`` on the admin machine."""

    bundle: Annotated[StrictStr, Field(description='"tillmesh-authority1:..."')]


class AuthorityImported(_Strict):
    imported: int


class FieldError(_Strict):
    field: str
    message: str


class ErrorBody(_Strict):
    """Every refusal: a stable ``code`` to branch on and a ``detail`` for people."""

    code: str
    detail: str
    errors: list[FieldError] | None = None
    needed: int | None = None
    available: int | None = None
