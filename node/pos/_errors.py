"""The domain's refusals: each has an HTTP status, a stable ``code`` and, where one field
is to blame, that field's name (``lines.2.quantity``), so a POS app can point at it."""

from __future__ import annotations

from typing import Any

from crdt_types import InsufficientRights, InvalidInput, TillmeshError

__all__ = ["PosError", "InvalidRequest", "NotFound", "Refused", "RightsShort"]


class PosError(TillmeshError):
    """A domain operation refused; nothing was written (except, where said, an incident)."""

    status = 409
    code = "refused"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "detail": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return {**body, **self.extra}


class InvalidRequest(PosError, InvalidInput):
    """The request itself is wrong (422): ``errors`` names each bad field."""

    status = 422
    code = "invalid_input"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(detail, errors=errors)
        self.errors = errors

    @classmethod
    def of(cls, field: str, message: str) -> "InvalidRequest":
        return cls([{"field": field, "message": message}])


class NotFound(PosError):
    """What the request refers to is not on this node (404): an unknown sale, order, request."""

    status = 404
    code = "not_found"


class Refused(PosError):
    """The shop's rules refuse it (409): a conflicting sale id, a refund beyond what was sold,
    a sale that needs a manager's approval, a closed order, too small a balance."""


class RightsShort(Refused, InsufficientRights):
    """A member charge beyond this device's escrow rights, and no transfer came in time."""

    code = "insufficient_rights"

    def __init__(self, message: str, *, needed: int, available: int, field: str | None = None) -> None:
        Refused.__init__(self, message, field=field, needed=needed, available=available)
        self.needed = needed
        self.available = available
