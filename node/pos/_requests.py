"""What a POS app sends, as pydantic models: the API's request bodies and the domain's input.

One definition serves both: the HTTP API declares these as bodies (so ``/openapi.json``
describes them and a malformed body is a 422 before the domain is called), and the domain
operations validate a plain dict against the same model when called directly. Everything is
strict: unknown fields are refused, money and quantities are integers (a float is refused,
never rounded), identifiers are short printable ASCII without spaces.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from crdt_types import MAX_AMOUNT

from ._errors import InvalidRequest

__all__ = [
    "Ident", "Money", "Quantity", "SaleLine", "CashPayment", "CardPayment", "MemberPayment", "Payment",
    "SaleRequest", "RefundLine", "RefundRequest", "StockLine", "ReceiptRequest", "CountLine", "StocktakeRequest",
    "TransferRequest", "PriceRequest", "TopupRequest", "ChargeRequest", "OrderCreate", "OrderLine",
    "OrderLineChange", "OrderClose", "ApprovalRequest", "IncidentAck", "parse", "MAX_LINES", "MAX_PAYMENTS",
    "TAGS",
]

MAX_LINES = 200
MAX_PAYMENTS = 8
MAX_QUANTITY = 1_000_000
MAX_NOTE_CHARS = 200

Ident = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[!-~]+$",
                                   description="1..128 printable ASCII characters, no spaces")]
Money = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT, description="minor units (cents); an integer")]
PositiveMoney = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT, description="minor units (cents), > 0")]
Quantity = Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY, description="pieces, > 0")]
Note = Annotated[StrictStr, Field(max_length=MAX_NOTE_CHARS)]
OperationId = Annotated[Ident | None, Field(
    description="idempotency key: the same id and body again returns the first result "
                      "(`replayed: true`) and writes nothing; another body under it is 409 "
                      "`operation_conflict`. Without one the operation is done every time it is sent.")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SaleLine(_Strict):
    sku: Ident
    quantity: Quantity
    unit_price: Money | None = Field(None, description="minor units; omitted: the effective price of the sku here")


class CashPayment(_Strict):
    method: Literal["cash"]
    amount: PositiveMoney


class CardPayment(_Strict):
    method: Literal["card"]
    amount: PositiveMoney
    reference: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[!-~]+$")]


class MemberPayment(_Strict):
    method: Literal["member"]
    amount: PositiveMoney
    member: Ident


Payment = Annotated[Union[CashPayment, CardPayment, MemberPayment], Field(discriminator="method")]
TAGS = ("cash", "card", "member")  # discriminator values pydantic puts into error locations


class SaleRequest(_Strict):
    """A sale. ``sale_id`` is the idempotency key: the same id and body again returns the
    first result and writes nothing; the same id with another body is refused (409)."""

    sale_id: Ident
    lines: Annotated[list[SaleLine], Field(min_length=1, max_length=MAX_LINES)]
    payments: Annotated[list[Payment], Field(min_length=1, max_length=MAX_PAYMENTS)]


class RefundLine(_Strict):
    sku: Ident
    quantity: Quantity


class RefundRequest(_Strict):
    """A refund of (part of) a known sale; ``refund_id`` is its idempotency key."""

    refund_id: Ident
    sale_id: Ident
    lines: Annotated[list[RefundLine], Field(min_length=1, max_length=MAX_LINES)]
    method: Literal["cash", "card", "member"] = "cash"
    member: Ident | None = Field(None, description="with method member: the balance to credit")


class StockLine(_Strict):
    sku: Ident
    quantity: Quantity


class ReceiptRequest(_Strict):
    """Stock in: goods received at a branch (default: this device's)."""

    branch: Ident | None = None
    lines: Annotated[list[StockLine], Field(min_length=1, max_length=MAX_LINES)]
    operation_id: OperationId = None


class CountLine(_Strict):
    sku: Ident
    counted: Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]
    observed: Annotated[StrictInt, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)] | None = Field(
        None, description="the stock the system showed when counting began; omitted: the stock now")


class StocktakeRequest(_Strict):
    """A count: each line adds counted − observed, so sales during the count are kept."""

    branch: Ident | None = None
    counts: Annotated[list[CountLine], Field(min_length=1, max_length=MAX_LINES)]
    operation_id: OperationId = None


class TransferRequest(_Strict):
    """Stock moved between branches: out of one and into the other in one entry."""

    from_branch: Ident | None = Field(None, description="default: this device's branch")
    to_branch: Ident
    lines: Annotated[list[StockLine], Field(min_length=1, max_length=MAX_LINES)]
    operation_id: OperationId = None


class PriceRequest(_Strict):
    """A chain-wide price, or a branch override when ``branch`` is given."""

    sku: Ident
    price: Money
    branch: Ident | None = None


class TopupRequest(_Strict):
    amount: PositiveMoney
    operation_id: OperationId = None


class ChargeRequest(_Strict):
    """A charge to a member's balance outside a sale."""

    member: Ident
    amount: PositiveMoney
    operation_id: OperationId = None


class OrderCreate(_Strict):
    order_id: Ident
    table: Annotated[StrictStr, Field(max_length=32)] | None = None
    note: Note | None = None


class OrderLine(_Strict):
    line_id: Ident
    sku: Ident
    quantity: Quantity
    unit_price: Money | None = None
    note: Note | None = None


class OrderLineChange(_Strict):
    quantity: Quantity | None = None
    unit_price: Money | None = None
    note: Note | None = None


class OrderClose(_Strict):
    """Close an order into a sale (its lines, these payments)."""

    sale_id: Ident
    payments: Annotated[list[Payment], Field(min_length=1, max_length=MAX_PAYMENTS)]


class ApprovalRequest(_Strict):
    """A till asks a manager to approve a large sale before it is written."""

    sale_id: Ident
    total: PositiveMoney
    note: Note | None = None


class IncidentAck(_Strict):
    note: Note | None = None
    resolved: StrictBool = True


M = TypeVar("M", bound=BaseModel)


def _field(loc: tuple) -> str:
    parts = [str(p) for i, p in enumerate(loc)
             if not (isinstance(p, str) and p in TAGS and i > 0 and isinstance(loc[i - 1], int))]
    return ".".join(parts) or "body"


def parse(model: type[M], body: Any) -> M:
    """``body`` as ``model``: itself when it already is one.

    Raises:
        InvalidRequest: naming every bad field.
    """
    if isinstance(body, model):
        return body
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            message = "must be an integer (minor units or pieces); floats are refused" if (
                error.get("type") == "int_type" and isinstance(error.get("input"), float)) else error.get("msg", "")
            errors.append({"field": _field(tuple(error.get("loc", ()))), "message": message})
        raise InvalidRequest(errors) from None
