"""What every domain operation shares: the node it runs on, keys, time, fingerprints.

The domain talks to its node through a small surface (``PosNode``), which ``node.runtime.Node``
provides; nothing here touches the engine, a socket or the disk directly.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Awaitable, Callable, Protocol

from pydantic import BaseModel

from crdt_types import MAX_AMOUNT, canonical

from ._errors import InvalidRequest

__all__ = ["PosNode", "stock_key", "balance_key", "now_ms", "day_of", "fingerprint", "checked_total", "ident"]


class PosNode(Protocol):
    """The node under the domain (``node.runtime.Node``)."""

    device: int
    branch: str
    device_name: str

    def value(self, key: tuple) -> Any: ...

    def keys(self, kind: str) -> list[tuple]: ...

    def rights(self, key: tuple) -> int: ...

    async def commit(self, ops: list[tuple]) -> dict[str, Any]: ...

    def links_live(self) -> int: ...

    async def request_rights(self, key: tuple, amount: int) -> None: ...

    async def wait_for(self, predicate: Callable[[], bool], seconds: float) -> bool: ...

    def entry_of(self, key: tuple) -> tuple[int, int] | None: ...

    def ack_of(self, key: tuple) -> str | None: ...

    def may_write(self, key: tuple) -> bool: ...


Commit = Callable[[list[tuple]], Awaitable[dict[str, Any]]]


def stock_key(branch: str, sku: str) -> tuple:
    return ("stock", branch, sku)


def balance_key(member: str) -> tuple:
    return ("member", member, "balance")


def now_ms() -> int:
    return int(time.time() * 1000)


def day_of(at_ms: int) -> str:
    """The UTC calendar day of a time, ``YYYY-MM-DD`` (roll-ups group by it)."""
    return time.strftime("%Y-%m-%d", time.gmtime(at_ms / 1000))


def fingerprint(request: BaseModel, *extra: Any) -> str:
    """A digest of what the client asked for, to tell a retry from a different request."""
    data = [request.model_dump(mode="python"), *extra]
    return hashlib.blake2b(canonical(data), digest_size=16).hexdigest()


def checked_total(field: str, amount: int) -> int:
    if amount > MAX_AMOUNT:
        raise InvalidRequest.of(field, f"the total {amount} is above the largest amount {MAX_AMOUNT}")
    return amount


def ident(field: str, value: Any) -> str:
    """A path identifier (member id, order id...): 1..128 printable ASCII, no spaces."""
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not all("!" <= c <= "~" for c in value):
        raise InvalidRequest.of(field, "must be 1..128 printable ASCII characters without spaces")
    return value
