"""Waiting on real processes from outside (the demo, benchmarks, tests): poll a condition
against a deadline, never a bare sleep standing in for "long enough"."""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["wait_until", "POLL_S"]

POLL_S = 0.05


def wait_until(condition: Callable[[], Any], timeout: float, what: str, *,
               error: type[Exception] = TimeoutError) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; raise
    ``error`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)  # noqa: sleep-ok  (polling a real process against a deadline)
