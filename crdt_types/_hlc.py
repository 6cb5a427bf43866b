"""Hybrid logical clock (Kulkarni et al., 2014).

A stamp is 48 bits of milliseconds and 16 bits of logical counter, packed into one 64-bit
integer on the wire. Physical time is always passed in; the clock never reads one itself.

The clock is monotonic even when the physical clock steps backwards: it keeps the last
stamp and only ever moves forward from it. A remote stamp more than ``max_skew_ms`` ahead
of our physical time is *not* adopted (a device with a wrong date must not drag every
register of the shop into the future); the caller still merges the data and gets a
``ClockSkew`` report to record as an incident. Ties between equal stamps are broken by
replica id where stamps are compared (see ``LWWRegister``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._check import require_int, wire_int
from ._errors import InvalidInput

__all__ = ["Timestamp", "HLC", "ClockSkew", "DEFAULT_MAX_SKEW_MS"]

MAX_MS = 2**48 - 1
MAX_LOGICAL = 2**16 - 1
# Five minutes: tills are NTP-synced when online but drift while a basement is offline.
DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000


@dataclass(frozen=True, order=True, slots=True)
class Timestamp:
    """One HLC stamp; orders by (ms, logical)."""

    ms: int
    logical: int = 0

    def __post_init__(self) -> None:
        require_int("HLC milliseconds", self.ms, minimum=0, maximum=MAX_MS)
        require_int("HLC logical counter", self.logical, minimum=0, maximum=MAX_LOGICAL)

    def successor(self) -> "Timestamp":
        """The next stamp after this one."""
        if self.logical < MAX_LOGICAL:
            return Timestamp(self.ms, self.logical + 1)
        return Timestamp(self.ms + 1, 0)

    def pack(self) -> int:
        return (self.ms << 16) | self.logical

    @classmethod
    def unpack(cls, packed: Any) -> "Timestamp":
        value = wire_int(packed, "HLC stamp", maximum=2**64 - 1)
        return cls(value >> 16, value & MAX_LOGICAL)


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """A remote stamp that was too far ahead of local physical time to adopt."""

    remote: Timestamp
    physical_ms: int
    skew_ms: int


class HLC:
    """A hybrid logical clock for one replica.

    Args:
        max_skew_ms: how far ahead of local physical time a remote stamp may be and still
            be adopted.
        last: the last stamp this clock issued, to restore it after a restart.
    """

    __slots__ = ("_last", "max_skew_ms")

    def __init__(self, *, max_skew_ms: int = DEFAULT_MAX_SKEW_MS, last: Timestamp | None = None) -> None:
        self.max_skew_ms = require_int("max_skew_ms", max_skew_ms, minimum=0)
        if last is not None and not isinstance(last, Timestamp):
            raise InvalidInput(f"last must be a Timestamp, got {type(last).__name__}")
        self._last = last if last is not None else Timestamp(0, 0)

    @property
    def last(self) -> Timestamp:
        """The highest stamp issued or adopted; persist it to restore the clock."""
        return self._last

    def now(self, physical_ms: int) -> Timestamp:
        """Issue a stamp for a local event at physical time ``physical_ms``."""
        physical_ms = require_int("physical_ms", physical_ms, minimum=0, maximum=MAX_MS)
        self._last = self._advance(max(self._last.ms, physical_ms))
        return self._last

    def observe(self, remote: Timestamp, physical_ms: int) -> ClockSkew | None:
        """Take a remote stamp into account.

        Returns:
            ``None`` when the stamp was adopted, or a ``ClockSkew`` when it was further
            ahead than ``max_skew_ms`` and was therefore ignored.
        """
        if not isinstance(remote, Timestamp):
            raise InvalidInput(f"remote must be a Timestamp, got {type(remote).__name__}")
        physical_ms = require_int("physical_ms", physical_ms, minimum=0, maximum=MAX_MS)
        if remote.ms - physical_ms > self.max_skew_ms:
            return ClockSkew(remote, physical_ms, remote.ms - physical_ms)
        if remote > self._last:
            self._last = remote
        return None

    def witness(self, stamp: Timestamp) -> None:
        """Move the clock up to a stamp this replica itself wrote with (a register write
        stamped above the one it replaces): later stamps must be higher still."""
        if not isinstance(stamp, Timestamp):
            raise InvalidInput(f"stamp must be a Timestamp, got {type(stamp).__name__}")
        if stamp > self._last:
            self._last = stamp

    def _advance(self, ms: int) -> Timestamp:
        if ms > self._last.ms:
            return Timestamp(ms, 0)
        if self._last.logical < MAX_LOGICAL:
            return Timestamp(self._last.ms, self._last.logical + 1)
        # 65,536 events in one millisecond: borrow the next millisecond rather than wrap.
        if self._last.ms == MAX_MS:
            raise InvalidInput("HLC exhausted: milliseconds and logical counter are both at their maximum")
        return Timestamp(self._last.ms + 1, 0)

    def __repr__(self) -> str:
        return f"HLC(last={self._last}, max_skew_ms={self.max_skew_ms})"
