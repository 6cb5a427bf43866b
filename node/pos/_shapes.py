"""What the domain's readers need of a stored record, checked before they read it.

Records are replicated plain data: any device the policy lets write a kind may put any shape
under its key (``POST /transactions`` does, and so could another implementation). The domain's
own writers always write these shapes; a reader meets another shape only from such a writer,
and then leaves the record out of folds (roll-ups, lists) or refuses to act on it (409
``malformed_record``) instead of failing.
"""

from __future__ import annotations

from typing import Any

from ._errors import Refused

__all__ = ["sale_ok", "refund_ok", "incident_ok", "approval_ok", "order_lines_ok", "require"]

PAYMENT_METHODS = frozenset({"cash", "card", "member"})


def _int(value: Any) -> bool:
    return type(value) is int


def _lines_ok(lines: Any) -> bool:
    return isinstance(lines, list) and all(
        isinstance(line, dict) and isinstance(line.get("sku"), str) and _int(line.get("quantity"))
        and _int(line.get("amount")) for line in lines)


def sale_ok(record: Any) -> bool:
    payments = record.get("payments") if isinstance(record, dict) else None
    return (isinstance(record, dict) and isinstance(record.get("sale_id"), str) and _int(record.get("total"))
            and _lines_ok(record.get("lines")) and isinstance(payments, list)
            and all(isinstance(p, dict) and p.get("method") in PAYMENT_METHODS and _int(p.get("amount"))
                    for p in payments))


def refund_ok(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("sale_id"), str) and _int(record.get("total"))
            and _lines_ok(record.get("lines")))


def incident_ok(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("kind"), str) and _int(record.get("at_ms"))


def approval_ok(record: Any) -> bool:
    return isinstance(record, dict) and _int(record.get("total"))


def order_lines_ok(lines: Any) -> bool:
    return isinstance(lines, list) and all(
        isinstance(line, dict) and isinstance(line.get("sku"), str) and _int(line.get("quantity"))
        and (line.get("unit_price") is None or _int(line.get("unit_price"))) for line in lines)


def require(ok: bool, what: str, field: str) -> None:
    """Refuse (409 ``malformed_record``) to act on a record that is not of its kind's shape."""
    if not ok:
        raise Refused(f"{what} is stored in a shape this node does not read (written raw by some device); "
                      "nothing was done", code="malformed_record", field=field)
