"""The node's recent alerts, with repeats folded into one row.

A device that keeps failing the same way (a revoked till that redials every 30 s, a peer that
keeps breaking the protocol) would otherwise write a log line and a status-page row per attempt,
and push every other alert off the page. An alert equal to one seen less than
``REPEAT_WINDOW_MS`` ago (same kind, device and detail) counts as a repeat of that row: it is
neither logged nor listed again. The first one after the window is, with how often the last row
repeated.
"""

from __future__ import annotations

import collections
from typing import Any

__all__ = ["RecentAlerts", "REPEAT_WINDOW_MS"]

REPEAT_WINDOW_MS = 10 * 60 * 1000


class RecentAlerts:
    """The last ``size`` distinct alerts, as the status page lists them (oldest first)."""

    def __init__(self, size: int, repeat_window_ms: int = REPEAT_WINDOW_MS) -> None:
        self.rows: collections.deque = collections.deque(maxlen=size)
        self._window = repeat_window_ms
        self._open: dict[tuple, dict[str, Any]] = {}  # (kind, device, detail) -> its newest row

    def add(self, alert: Any, at_ms: int) -> str | None:
        """Record ``alert``; returns the line to log, or None for a repeat inside the window."""
        key = (alert.kind.value, alert.origin, alert.detail)
        row = self._open.get(key)
        if row is not None and 0 <= at_ms - row["at_ms"] < self._window:  # (a clock set back opens a row)
            row["repeats"] += 1
            row["last_ms"] = at_ms
            return None
        line = f"alert {alert.kind.value} (device {alert.origin}): {alert.detail}"
        if row is not None and row["repeats"]:
            line += f" (the last one repeated {row['repeats']} times)"
        row = {"kind": alert.kind.value, "device": alert.origin, "detail": alert.detail,
               "entry": list(alert.entry) if alert.entry else None, "at_ms": at_ms, "repeats": 0, "last_ms": at_ms}
        if len(self.rows) == self.rows.maxlen:
            oldest = self.rows[0]
            oldest_key = (oldest["kind"], oldest["device"], oldest["detail"])
            if self._open.get(oldest_key) is oldest:
                del self._open[oldest_key]
        self.rows.append(row)
        self._open[key] = row
        return line

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)
