"""The discrete-event loop: virtual time in integer microseconds and one ordered queue.

Events at the same instant run in the order they were scheduled (a sequence number breaks
ties), so a run depends on nothing but its inputs and seeds: no wall clock, no threads, no
set or hash order. Handlers are plain callables; cancelling is the handler's business (a
timer checks that it is still the one its owner wants), which keeps the loop to a heap push
and a heap pop per event.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable

__all__ = ["Loop", "US_PER_MS", "US_PER_S"]

US_PER_MS = 1_000
US_PER_S = 1_000_000


class Loop:
    """Virtual time (``now``, µs) and the events still to come.

    ``queue`` and ``next_seq`` are open to one caller that schedules on every message (the
    network): ``heapq.heappush(loop.queue, (time_us, loop.next_seq(), handler, args))``
    with ``time_us >= now`` is ``at`` without its call.
    """

    __slots__ = ("now", "events", "queue", "next_seq", "_stopped")

    def __init__(self) -> None:
        self.now = 0
        self.events = 0  # events run so far
        self.queue: list[tuple[int, int, Callable[..., Any], tuple]] = []
        self.next_seq = itertools.count(1).__next__  # ties at one instant run in this order
        self._stopped = False

    def at(self, time_us: int, handler: Callable[..., Any], *args: Any) -> None:
        """Run ``handler(*args)`` at ``time_us`` (not before now)."""
        if time_us < self.now:
            time_us = self.now
        heapq.heappush(self.queue, (time_us, self.next_seq(), handler, args))

    def after(self, delay_us: int, handler: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + max(0, int(delay_us)), handler, *args)

    def stop(self) -> None:
        """End ``run`` after the event now running."""
        self._stopped = True

    def run(self, until_us: int) -> None:
        """Run every event due up to ``until_us``; time then stands at ``until_us``."""
        queue, pop = self.queue, heapq.heappop
        self._stopped = False
        ran = 0  # added to ``events`` at the end: one store per run, not per event
        try:
            while queue and queue[0][0] <= until_us:
                time_us, _, handler, args = pop(queue)
                self.now = time_us
                ran += 1
                handler(*args)
                if self._stopped:
                    return
        finally:
            self.events += ran
        self.now = max(self.now, until_us)

    @property
    def pending(self) -> int:
        return len(self.queue)
