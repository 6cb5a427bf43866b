"""Faults on a schedule or at random: partitions and heals, anchor outages, crashes and
restarts, and churn (devices joining, leaving, being revoked).

Scheduled faults come from the scenario's ``[[partition]]``, ``[[anchor_outage]]``,
``[[crash]]``, ``[[join]]``, ``[[leave]]`` and ``[[revoke]]`` tables; random ones from
``[random_faults]`` and the faults RNG. Cuts are counted per link, so overlapping
partitions heal a link only when the last of them ends. Every heal and restart starts a
convergence measurement (``Metrics.heal``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from ._loop import US_PER_S

if TYPE_CHECKING:
    from ._sim import Simulation

__all__ = ["Faults"]


class Faults:
    def __init__(self, sim: "Simulation", rng: random.Random) -> None:
        self.sim, self.rng = sim, rng
        self.cut_count: dict[frozenset, int] = {}
        self.active = True
        self.crashed: set[str] = set()

    # -- partitions -----------------------------------------------------------------------------

    def _cut(self, pairs: list[frozenset]) -> None:
        if not self.active:
            return
        for pair in pairs:
            n = self.cut_count.get(pair, 0)
            self.cut_count[pair] = n + 1
            if n == 0:
                self.sim.network.cut(*pair)

    def _heal(self, pairs: list[frozenset], label: str) -> None:
        if not self.active:
            return  # the final heal has healed everything already
        for pair in pairs:
            n = self.cut_count.get(pair, 0)
            if n <= 1:
                self.cut_count.pop(pair, None)
                self.sim.network.heal(*pair)
            else:
                self.cut_count[pair] = n - 1
        self.sim.metrics.heal(label, self.sim.loop.now, self.sim.members())

    def isolating(self, names: list[str]) -> list[frozenset]:
        inside = set(names)
        return [pair for pair in self.sim.network.links if len(pair & inside) == 1]

    def splitting(self, groups: list[list[str]]) -> list[frozenset]:
        group_of = {name: i for i, group in enumerate(groups) for name in group}
        out = []
        for pair in self.sim.network.links:
            a, b = sorted(pair)
            if a in group_of and b in group_of and group_of[a] != group_of[b]:
                out.append(pair)
        return out

    def partition(self, pairs: list[frozenset], at_s: float, for_s: float, label: str) -> None:
        loop = self.sim.loop
        loop.at(int(at_s * US_PER_S), self._cut, pairs)
        loop.at(int((at_s + for_s) * US_PER_S), self._heal, pairs, label)

    # -- devices --------------------------------------------------------------------------------

    def crash(self, name: str, down_s: float) -> None:
        device = self.sim.devices[name]
        if not self.active or not device.up or device.left:
            return
        device.crash()
        self.crashed.add(name)
        self.sim.metrics.device_down(name, self.sim.loop.now)
        self.sim.loop.after(int(down_s * US_PER_S), self.restart, name)

    def restart(self, name: str) -> None:
        device = self.sim.devices[name]
        if device.up or device.left:
            return
        self.crashed.discard(name)
        device.start()
        self.sim.metrics.heal(f"restart {name}", self.sim.loop.now, self.sim.members())

    # -- the schedule ---------------------------------------------------------------------------

    def schedule(self, scenario: Any) -> None:
        sim, loop = self.sim, self.sim.loop
        lists = scenario.lists
        for i, part in enumerate(lists["partition"]):
            pairs = self.isolating(part["devices"]) if part["devices"] else self.splitting(part["groups"])
            what = ", ".join(part["devices"]) if part["devices"] else " | ".join(",".join(g) for g in part["groups"])
            self.partition(pairs, part["at_s"], part["for_s"], f"partition {i} healed ({what})")
        for i, outage in enumerate(lists["anchor_outage"]):
            anchors = outage["anchors"] or sim.anchor_names
            pairs = [pair for pair in sim.network.links if pair & set(anchors)]
            self.partition(pairs, outage["at_s"], outage["for_s"], f"anchor outage {i} over ({', '.join(anchors)})")
        for crash in lists["crash"]:
            loop.at(int(crash["at_s"] * US_PER_S), self.crash, crash["device"], crash["down_s"])
        for join in lists["join"]:
            loop.at(int(join["at_s"] * US_PER_S), self._while_active, sim.join, join["branch"], tuple(join["roles"]))
        for leave in lists["leave"]:
            loop.at(int(leave["at_s"] * US_PER_S), self._while_active, sim.leave, leave["device"])
        for revoke in lists["revoke"]:
            loop.at(int(revoke["at_s"] * US_PER_S), self._while_active, sim.revoke, revoke["device"])
        random_faults = scenario.section("random_faults")
        if random_faults["partitions_hour"] > 0:
            self._next_random(random_faults["partitions_hour"], self._random_partition, random_faults)
        if random_faults["crashes_hour"] > 0:
            self._next_random(random_faults["crashes_hour"], self._random_crash, random_faults)

    def _while_active(self, action, *args) -> None:
        if self.active:  # nothing happens after the run's end: the final heal is quiet
            action(*args)

    def _next_random(self, per_hour: float, action, spec: dict) -> None:
        delay = int(self.rng.expovariate(per_hour / 3600.0) * US_PER_S)
        if self.sim.loop.now + delay < self.sim.until_us:
            self.sim.loop.after(delay, self._random, per_hour, action, spec)

    def _random(self, per_hour: float, action, spec: dict) -> None:
        if not self.active:
            return
        action(spec)
        self._next_random(per_hour, action, spec)

    def _random_partition(self, spec: dict) -> None:
        members = [d for d in self.sim.members() if d.up]
        if not members:
            return
        victim = members[self.rng.randrange(len(members))]
        for_s = self.rng.expovariate(1.0 / spec["partition_mean_s"])
        pairs = self.isolating([victim.name])
        self._cut(pairs)
        self.sim.loop.after(int(for_s * US_PER_S), self._heal, pairs, f"random partition of {victim.name} healed")

    def _random_crash(self, spec: dict) -> None:
        members = [d for d in self.sim.members() if d.up]
        if members:
            self.crash(members[self.rng.randrange(len(members))].name, spec["crash_down_s"])

    # -- the end --------------------------------------------------------------------------------

    def heal_everything(self) -> None:
        """The final heal: every cut healed, every crashed device back up."""
        self.active = False
        pairs = list(self.cut_count)
        self.cut_count.clear()
        for pair in pairs:
            self.sim.network.heal(*pair)
        for name in sorted(self.crashed):
            device = self.sim.devices[name]
            if not device.left:
                device.start()
        self.crashed.clear()
