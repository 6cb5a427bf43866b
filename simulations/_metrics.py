"""What a run measured, collected as it happens (the devices' ``Observer``).

- staleness: for every entry a member applied, the time from its commit on the origin,
  by the kind of link it last came over (lan, wan);
- convergence after each heal: the time until every member that is up has applied every
  entry acknowledged anywhere at the moment of the heal;
- bytes per link, split into entry payload and protocol metadata (the engines' own counts);
- entries held only locally, sampled over time;
- acknowledged writes: every commit reported durable to its caller, checked at the end;
- incidents: the engines' alerts, by kind.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict
from typing import Any

from ._device import Device, Observer
from ._loop import US_PER_MS, US_PER_S
from ._network import End

__all__ = ["Metrics", "percentile"]

KEEP_INCIDENTS = 200  # incidents kept with their detail (all are counted)


def percentile(values, q: float) -> float | None:
    """Nearest-rank percentile of a sequence (None when empty)."""
    if not len(values):
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class _Heal:
    __slots__ = ("label", "at_us", "target", "remaining", "converged_us")

    def __init__(self, label: str, at_us: int, target: dict[int, int], remaining: dict[str, set[int]]) -> None:
        self.label, self.at_us, self.target, self.remaining = label, at_us, target, remaining
        self.converged_us: int | None = None


class Metrics(Observer):
    """The observer of every device of one run."""

    def __init__(self) -> None:
        self.commit_us: dict[tuple[int, int], int] = {}
        self.acked: dict[int, int] = {}  # origin -> highest seq acknowledged to its caller
        self.acked_count = 0
        # Of those, entries the engine wrote on its own (rights it grants to a device that
        # asked), not a commit of the workload: why "acknowledged" can exceed "commits".
        self.engine_writes = 0
        self.acked_hashes: dict[tuple[int, int], bytes] = {}
        self.commits = 0
        self.applied_max: dict[str, dict[int, int]] = defaultdict(dict)  # device -> origin -> highest seq
        self.staleness: dict[str, array] = defaultdict(lambda: array("d"))  # link kind -> ms
        self.staleness_at: dict[str, array] = defaultdict(lambda: array("q"))  # when (µs), same order
        self.incidents: Counter = Counter()
        self.incident_log: list[dict[str, Any]] = []
        self.heals: list[_Heal] = []
        self.link_bytes: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # kind -> [sent, payload]
        self.pair_bytes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.samples: list[dict[str, Any]] = []
        self.revoked: dict[int, int] = {}  # origin -> cutoff seq
        self.excluded: set[str] = set()  # devices out of the convergence checks (revoked, left)

    # -- the observer -------------------------------------------------------------------------

    def committed(self, device: Device, committed: Any, now_us: int) -> None:
        self.commits += 1
        self.commit_us[(committed.origin, committed.seq)] = now_us

    def acknowledged(self, device: Device, committed: Any, now_us: int) -> None:
        self.acked_count += 1
        if (committed.origin, committed.seq) not in self.commit_us:
            self.engine_writes += 1
        self.acked_hashes[(committed.origin, committed.seq)] = committed.hash
        if committed.seq > self.acked.get(committed.origin, 0):
            self.acked[committed.origin] = committed.seq

    def applied(self, device: Device, change: Any, via: str | None, now_us: int) -> None:
        origin, seq = change.origin, change.seq
        seen = self.applied_max[device.name]
        if seq > seen.get(origin, 0):
            seen[origin] = seq
        if origin != device.number:
            at = self.commit_us.get((origin, seq))
            if at is not None:
                kind = via or "local"
                self.staleness[kind].append((now_us - at) / US_PER_MS)
                self.staleness_at[kind].append(now_us)
        for heal in self.heals:
            if heal.converged_us is None:
                left = heal.remaining.get(device.name)
                if left and origin in left and seq >= heal.target[origin]:
                    left.discard(origin)
                    if not left:
                        del heal.remaining[device.name]
                        if not heal.remaining:
                            heal.converged_us = now_us

    def alert(self, device: Device, alert: Any, now_us: int) -> None:
        kind = alert.kind.value
        self.incidents[kind] += 1
        if len(self.incident_log) < KEEP_INCIDENTS:
            self.incident_log.append({"t_s": round(now_us / US_PER_S, 3), "device": device.name, "kind": kind,
                                      "origin": alert.origin, "detail": alert.detail})

    def link_closed(self, device: Device, end: End, sent: int, payload: int) -> None:
        self.add_bytes(device, end, sent, payload)

    def add_bytes(self, device: Device, end: End, sent: int, payload: int) -> None:
        kind = end.conn.spec.kind
        totals = self.link_bytes[kind]
        totals[0] += sent
        totals[1] += payload
        pair = self.pair_bytes[tuple(sorted((end.name, end.peer)))]
        pair[0] += sent
        pair[1] += payload

    # -- convergence ----------------------------------------------------------------------------

    def heal(self, label: str, now_us: int, members: list[Device]) -> None:
        """Something came back (a link, an anchor, a device): from now, time how long until
        every member that is up has applied everything acknowledged so far."""
        target = {o: s for o, s in self.acked.items() if self.valid_upto(o, s) > 0}
        target = {o: self.valid_upto(o, s) for o, s in target.items()}
        remaining = {}
        for device in members:
            if not device.up or device.name in self.excluded:
                continue
            seen = self.applied_max[device.name]
            left = {o for o, s in target.items() if o != device.number and seen.get(o, 0) < s}
            if left:
                remaining[device.name] = left
        heal = _Heal(label, now_us, target, remaining)
        if not remaining:
            heal.converged_us = now_us
        self.heals.append(heal)

    def device_down(self, name: str, now_us: int) -> None:
        """A device went down: it no longer holds up a heal's convergence."""
        for heal in self.heals:
            if heal.converged_us is None and heal.remaining.pop(name, None) is not None and not heal.remaining:
                heal.converged_us = now_us

    def valid_upto(self, origin: int, seq: int) -> int:
        cutoff = self.revoked.get(origin)
        return seq if cutoff is None else min(seq, cutoff)

    def convergence_s(self) -> list[float | None]:
        return [None if h.converged_us is None else round((h.converged_us - h.at_us) / US_PER_S, 3)
                for h in self.heals]

    # -- summaries ------------------------------------------------------------------------------

    def staleness_summary(self) -> dict[str, dict[str, float | int | None]]:
        out = {}
        for kind in sorted(self.staleness):
            values = self.staleness[kind]
            out[kind] = {"count": len(values), "p50_ms": _r(percentile(values, 50)),
                         "p90_ms": _r(percentile(values, 90)), "p99_ms": _r(percentile(values, 99)),
                         "max_ms": _r(max(values) if len(values) else None)}
        return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
