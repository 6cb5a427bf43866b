"""The discrete-event loop: virtual time in integer microseconds and one ordered queue.

Events at the same instant run in the order they were scheduled (a sequence number breaks
ties), so a run depends on nothing but its inputs and seeds: no wall clock, no threads, no
set or hash order. Handlers are plain callables; cancelling is the handler's business (a
timer checks that it is still the one its owner wants), which keeps the loop to a heap push
and a heap pop per event.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

__all__ = ["Loop", "US_PER_MS", "US_PER_S"]

US_PER_MS = 1_000
US_PER_S = 1_000_000


class Loop:
    """Virtual time (``now``, µs) and the events still to come."""

    __slots__ = ("now", "events", "_queue", "_seq", "_stopped")

    def __init__(self) -> None:
        self.now = 0
        self.events = 0  # events run so far
        self._queue: list[tuple[int, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self._stopped = False

    def at(self, time_us: int, handler: Callable[..., Any], *args: Any) -> None:
        """Run ``handler(*args)`` at ``time_us`` (not before now)."""
        if time_us < self.now:
            time_us = self.now
        self._seq += 1
        heapq.heappush(self._queue, (time_us, self._seq, handler, args))

    def after(self, delay_us: int, handler: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + max(0, int(delay_us)), handler, *args)

    def stop(self) -> None:
        """End ``run`` after the event now running."""
        self._stopped = True

    def run(self, until_us: int) -> None:
        """Run every event due up to ``until_us``; time then stands at ``until_us``."""
        queue, pop = self._queue, heapq.heappop
        self._stopped = False
        while queue and queue[0][0] <= until_us and not self._stopped:
            time_us, _, handler, args = pop(queue)
            self.now = time_us
            self.events += 1
            handler(*args)
        if not self._stopped:
            self.now = max(self.now, until_us)

    @property
    def pending(self) -> int:
        return len(self._queue)
