"""One simulation run: a chain built from a scenario, run in virtual time, then checked.

``Simulation(scenario).run()`` builds the authority and every device (each enrolled as an
installer would, from its token), links them (a LAN per branch, WAN paths to anchors),
starts the workload and the faults, runs to the scenario's duration, then heals
everything and lets the chain settle (at most ``final_heal_s``), and checks the
invariants: no negative balance, no acknowledged write lost, one digest among the members,
no fork. The result is a ``Result``: a summary (JSON-able), samples over time, and the
raw figures for plots.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gossip import Authority, EngineConfig, Engine, Entry, MemoryFeedStore, import_token, import_tokens
from gossip.testing import T0, seeded
from gossip import DeviceKey

from node.pos import POS_ESCROW, POS_POLICY, POS_SCHEMA

from ._device import Clock, Device, DialPolicy
from ._faults import Faults
from ._loop import US_PER_S, Loop
from ._metrics import Metrics, percentile
from ._network import LinkSpec, Network
from ._scenario import Scenario, ScenarioError, replay_command_for
from ._trace import Trace
from ._workload import Workload

__all__ = ["Simulation", "Result", "derive_seed", "replay_command"]

CONVERGENCE_CHECK_US = US_PER_S  # how often the final settling checks the digests


def derive_seed(seed: int, concern: str) -> int:
    """One independent seed per concern (network, workload, faults, a device's randomness)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{concern}".encode(), digest_size=8).digest(), "big")


def replay_command(scenario: Scenario) -> str:
    return replay_command_for(scenario.source, scenario.seed, scenario.overrides)


@dataclass
class Result:
    summary: dict[str, Any]
    samples: list[dict[str, Any]]
    metrics: Metrics
    pair_bytes: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(self.summary["invariants"].values())


class Simulation:
    """A run of one scenario with one seed.

    Args:
        scenario: a checked ``Scenario``.
        store_factory: makes each device's store (default ``MemoryFeedStore``); tests plant
            faulty stores through it.
        progress: called as ``progress(virtual_us, total_us)`` at every sample.
        engine_factory: ``engine_factory(device_name, keyring, store, random_bytes, now,
            config)``; the default builds the real ``Engine`` with the POS schema, policy and
            escrow keys the node uses.
    """

    def __init__(self, scenario: Scenario, *, store_factory: Callable[[], Any] = MemoryFeedStore,
                 progress: Callable[[int, int], None] | None = None, measure_engine: bool = True) -> None:
        if scenario.experiment:
            raise ScenarioError(f"{scenario.source}: an [experiment] scenario runs with `tillmesh sim run`, which hands it to simulations._experiment")
        self.scenario = scenario
        self.run_spec = scenario.section("run")
        self.store_factory, self.progress = store_factory, progress
        seed = scenario.seed
        self.loop = Loop()
        self.trace = Trace()
        self.metrics = Metrics()
        self.devices: dict[str, Device] = {}
        self.network = Network(self.loop, random.Random(derive_seed(seed, "network")), self.trace, self.devices)
        self.faults_rng = random.Random(derive_seed(seed, "faults"))
        self.workload_rng = random.Random(derive_seed(seed, "workload"))
        self.dial_rng = random.Random(derive_seed(seed, "dial"))
        self.until_us = self.run_spec["duration_s"] * US_PER_S
        sync = scenario.section("sync")
        self.engine_config = EngineConfig(have_interval_ms=sync["have_interval_ms"],
                                          ping_interval_ms=sync["ping_interval_ms"],
                                          ping_timeout_ms=sync["ping_timeout_ms"],
                                          snapshot_every=sync["snapshot_every"])
        dial = scenario.section("dial")
        self.dial_policy = DialPolicy(dial["base_ms"], dial["cap_ms"])
        self.timer = time.perf_counter if measure_engine else None
        self.authority = Authority.create(seeded(derive_seed(seed, "authority")), T0)
        self.anchor_names: list[str] = []
        self.branches: list[str] = []
        self._skews = {s["device"]: s for s in scenario.lists["skew"]}
        self._build()
        self.faults = Faults(self, self.faults_rng)
        self._check_names()
        offices = [d for d in self.devices.values() if "manager" in d.roles]
        tills = [d for d in self.devices.values() if d.roles == ("cashier",)]
        self.workload = Workload(self.loop, self.workload_rng, scenario.section("workload"),
                                 self.run_spec["start_hour"], tills, offices, self.until_us)

    # -- building the chain ---------------------------------------------------------------------

    def _build(self) -> None:
        chain = self.scenario.section("chain")
        branches = chain["branches"]
        self.branches = [f"b{i:03d}" for i in range(branches)] if isinstance(branches, int) else list(branches)
        net = self.scenario.values
        self.lan = LinkSpec("lan", **net["network.lan"])
        self.wan = LinkSpec("wan", **net["network.wan"])
        plan: list[tuple[str, str, tuple[str, ...]]] = []
        for i in range(chain["anchors"]):
            plan.append((f"anchor{i + 1}", "cloud", ("relay",)))
        for branch in self.branches:
            if chain["backoffice"]:
                plan.append((f"{branch}-office", branch, ("manager",)))
            for t in range(chain["tills"]):
                plan.append((f"{branch}-till{t + 1}", branch, ("cashier",)))
        keys, numbers = {}, {}
        key_random = seeded(derive_seed(self.scenario.seed, "device keys"))
        for name, branch, roles in plan:
            keys[name] = DeviceKey.generate(key_random)
            numbers[name] = self.authority.enroll(keys[name].public, name=name, branch=branch, roles=roles,
                                                  now_ms=T0).number
        # Every device verifies its token, as an installer would; the feed all of them
        # carry is verified once (import_tokens), not once per device: at a thousand
        # devices that was most of the set-up.
        tokens = ((self.authority.token(numbers[name]), keys[name]) for name, _, _ in plan)
        for (name, branch, roles), imported in zip(plan, import_tokens(tokens)):
            self._add_device(name, branch, roles, imported)
        self.anchor_names = [name for name, _, roles in plan if "relay" in roles]
        self._link_all()

    def _add_device(self, name: str, branch: str, roles: tuple[str, ...], imported: tuple) -> Device:
        """``imported``: what ``import_token`` gave for the device's token."""
        keyring, cert, feed = imported
        store = self.store_factory()
        for entry in feed:
            store.append(entry.origin, entry.seq, entry.hash, entry.encode())
        store.flush()
        random_bytes = seeded(derive_seed(self.scenario.seed, f"engine {name}"))
        config = self.engine_config

        def make_engine(store: Any, now: Any, keyring=keyring) -> Engine:
            # Each boot gets the keyring as the token gave it; later authority entries come
            # from the store, as on a real device.
            return Engine(keyring.copy(), store, random_bytes=random_bytes, now=now, policy=POS_POLICY,
                          schema=POS_SCHEMA, escrow=POS_ESCROW, config=config)

        skew = self._skews.get(name, {"skew_ms": 0, "drift_ppm": 0.0})
        device = Device(loop=self.loop, network=self.network, observer=self.metrics, rng=self.dial_rng, name=name,
                        number=cert.number, branch=branch, roles=tuple(roles), make_engine=make_engine, store=store,
                        clock=Clock(T0, skew["skew_ms"], skew["drift_ppm"]), flush_ms=self.run_spec["flush_ms"],
                        dial_policy=self.dial_policy, timer=self.timer)
        self.devices[name] = device
        return device

    def _link_all(self) -> None:
        chain = self.scenario.section("chain")
        anchors = self.anchor_names
        for i, a in enumerate(anchors):  # anchors mesh among themselves
            for b in anchors[i + 1:]:
                self._link(a, b, self.wan)
        for b_index, branch in enumerate(self.branches):
            local = [d.name for d in self.devices.values() if d.branch == branch]
            if chain["branch_lan"]:
                for i, a in enumerate(local):
                    for b in local[i + 1:]:
                        self._link(a, b, self.lan)
            for name in local:
                for k in range(min(chain["anchors_per_member"], len(anchors))):
                    self._link(name, anchors[(b_index + k) % len(anchors)], self.wan)

    def _link(self, dialer: str, listener: str, spec: LinkSpec) -> None:
        self.network.link(dialer, listener, spec)
        self.devices[dialer].targets.append(listener)

    def _check_names(self) -> None:
        names = set(self.devices)
        lists = self.scenario.lists
        source = self.scenario.source

        def need(where: str, name: str, *, anchor: bool = False) -> None:
            if name not in names or (anchor and name not in self.anchor_names):
                what = "anchors" if anchor else "devices"
                known = self.anchor_names if anchor else sorted(names)
                shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
                raise ScenarioError(f"{source}: {where}: unknown device {name!r}; the {what} are {shown}")

        for i, part in enumerate(lists["partition"]):
            for name in part["devices"]:
                need(f"partition[{i}].devices", name)
            for group in part["groups"]:
                for name in group:
                    need(f"partition[{i}].groups", name)
        for i, outage in enumerate(lists["anchor_outage"]):
            for name in outage["anchors"]:
                need(f"anchor_outage[{i}].anchors", name, anchor=True)
        for table in ("crash", "leave", "revoke", "skew"):
            for i, item in enumerate(lists[table]):
                need(f"{table}[{i}].device", item["device"])
        for i, join in enumerate(lists["join"]):
            if join["branch"] not in self.branches:
                raise ScenarioError(f"{source}: join[{i}].branch: unknown branch {join['branch']!r}; "
                                    f"the branches are {', '.join(self.branches[:12])}")

    def members(self) -> list[Device]:
        return [d for d in self.devices.values() if not d.is_anchor]

    # -- churn ----------------------------------------------------------------------------------

    def _publish(self, branch: str) -> None:
        """Hand the authority's newest entries to a device of ``branch`` (as an admin
        would, through the back office); gossip carries them on."""
        entries = [entry.encode() for entry in self.authority.feed]
        for device in self.devices.values():
            if device.branch == branch and device.up and not device.is_anchor and device.name not in self.metrics.excluded:
                device.import_entries(entries)
                return

    def join(self, branch: str, roles: tuple[str, ...]) -> None:
        n = sum(1 for d in self.devices.values() if d.branch == branch and d.name.split("-")[-1].startswith("new"))
        name = f"{branch}-new{n + 1}"
        key = DeviceKey.generate(seeded(derive_seed(self.scenario.seed, f"key {name}")))
        now_ms = T0 + self.loop.now // 1000
        number = self.authority.enroll(key.public, name=name, branch=branch, roles=roles, now_ms=now_ms).number
        device = self._add_device(name, branch, roles, import_token(self.authority.token(number), key))
        b_index = self.branches.index(branch)
        for other in [d.name for d in self.devices.values() if d.branch == branch and d.name != name]:
            self._link(name, other, self.lan)
        anchors = self.anchor_names
        for k in range(min(self.scenario.section("chain")["anchors_per_member"], len(anchors))):
            self._link(name, anchors[(b_index + k) % len(anchors)], self.wan)
        self._publish(branch)
        self.trace.event(self.loop.now, "join", name)
        device.start()

    def leave(self, name: str) -> None:
        device = self.devices[name]
        self.metrics.excluded.add(name)
        self.metrics.device_down(name, self.loop.now)
        self.trace.event(self.loop.now, "leave", name)
        device.leave()

    def revoke(self, name: str) -> None:
        device = self.devices[name]
        cutoff = self.metrics.acked.get(device.number, 0)
        now_ms = T0 + self.loop.now // 1000
        self.authority.revoke(device.number, cutoff, now_ms)
        self.metrics.revoked[device.number] = cutoff
        self.metrics.excluded.add(name)
        self.metrics.device_down(name, self.loop.now)
        self.trace.event(self.loop.now, "revoke", name, cutoff)
        self._publish(device.branch)

    # -- running --------------------------------------------------------------------------------

    def _sample(self) -> None:
        loop, metrics = self.loop, self.metrics
        local_only = live = 0
        up = 0
        for device in self.members():
            if device.up:
                up += 1
                status = device.status()
                local_only += status.acks.local
                live += sum(1 for p in status.peers if p.state == "live")
        window_start = loop.now - self.run_spec["sample_s"] * US_PER_S
        row = {"t_s": round(loop.now / US_PER_S, 3), "members_up": up, "unsynced_entries": local_only,
               "live_sessions": live, "commits": metrics.commits, "acknowledged": metrics.acked_count,
               "bytes_lan": self.network.kind_bytes.get("lan", 0), "bytes_wan": self.network.kind_bytes.get("wan", 0),
               "incidents": sum(metrics.incidents.values())}
        for kind in ("lan", "wan"):
            at, values = metrics.staleness_at.get(kind), metrics.staleness.get(kind)
            recent = []
            if at is not None:
                i = len(at)
                while i > 0 and at[i - 1] > window_start:
                    i -= 1
                recent = values[i:]
            row[f"staleness_{kind}_p50_ms"] = percentile(recent, 50)
            row[f"staleness_{kind}_p90_ms"] = percentile(recent, 90)
        metrics.samples.append(row)
        if self.progress is not None:
            self.progress(loop.now, self.until_us)
        if loop.now < self.until_us:
            loop.after(self.run_spec["sample_s"] * US_PER_S, self._sample)

    def _converged(self) -> bool:
        members = [d for d in self.members() if d.up and d.name not in self.metrics.excluded]
        statuses = [d.status() for d in members]
        if len({s.digest for s in statuses}) > 1:
            return False
        final = self.metrics.heals[-1]
        return final.converged_us is not None

    def run(self) -> Result:
        started = time.perf_counter()
        for device in self.devices.values():
            device.start()
        self.workload.start()
        self.faults.schedule(self.scenario)
        self.loop.after(0, self._sample)
        self.loop.run(self.until_us)
        # The final heal: no more load, no more faults; everything back; let it settle.
        self.workload.stop()
        self.faults.heal_everything()
        self.metrics.heal("final heal", self.loop.now, self.members())
        settle_until = self.loop.now + self.run_spec["final_heal_s"] * US_PER_S
        settled_at = None
        while self.loop.now < settle_until:
            self.loop.run(min(settle_until, self.loop.now + CONVERGENCE_CHECK_US))
            if self._converged():
                settled_at = self.loop.now
                break
        wall = time.perf_counter() - started
        return self._result(wall, settled_at)

    # -- the verdict ----------------------------------------------------------------------------

    def _result(self, wall_s: float, settled_at: int | None) -> Result:
        metrics, members = self.metrics, [d for d in self.members() if d.up and d.name not in self.metrics.excluded]
        statuses = {d.name: d.status() for d in members}
        digests: dict[bytes | None, int] = {}
        for status in statuses.values():
            digests[status.digest] = digests.get(status.digest, 0) + 1
        majority = max(digests.values()) if digests else 0
        mismatched = len(statuses) - majority
        negative = 0
        for device in members:
            for key in self.workload.member_keys():
                value = device.value(key)
                if isinstance(value, int) and value < 0:
                    negative += 1
        lost = self._lost_acknowledged(statuses)
        for device in members:  # the bytes of the sessions still open at the end
            for peer in statuses[device.name].peers:
                if hasattr(peer.handle, "conn"):
                    metrics.add_bytes(device, peer.handle, peer.bytes_sent, peer.payload_bytes_sent)
        for device in self.devices.values():
            if device.is_anchor and device.up:
                for peer in device.status().peers:
                    if hasattr(peer.handle, "conn"):
                        metrics.add_bytes(device, peer.handle, peer.bytes_sent, peer.payload_bytes_sent)
        engine_s = sum(d.engine_seconds for d in self.devices.values())
        virtual_s = self.loop.now / US_PER_S
        bytes_by_kind = {kind: {"sent": sent, "payload": payload, "metadata": sent - payload,
                                "metadata_share": round((sent - payload) / sent, 4) if sent else None}
                         for kind, (sent, payload) in sorted(metrics.link_bytes.items())}
        convergence = metrics.convergence_s()
        digest = self.trace.hexdigest()
        summary = {
            "scenario": self.scenario.name, "source": self.scenario.source, "seed": self.scenario.seed,
            "devices": len(self.devices), "members": len(self.members()), "anchors": len(self.anchor_names),
            "duration_s": self.run_spec["duration_s"], "virtual_s": round(virtual_s, 3),
            "settled_after_s": None if settled_at is None else round((settled_at - self.until_us) / US_PER_S, 3),
            "wall_s": round(wall_s, 3), "speedup": round(virtual_s / wall_s, 1) if wall_s else None,
            "events": self.loop.events, "engine_share": round(engine_s / wall_s, 3) if wall_s else None,
            "messages": self.network.sent_messages,
            "workload": dict(self.workload.counts), "commits": metrics.commits, "acknowledged": metrics.acked_count,
            "engine_writes": metrics.engine_writes, "staleness": metrics.staleness_summary(),
            "convergence": [{"heal": h.label, "at_s": round(h.at_us / US_PER_S, 3), "converged_after_s": c}
                            for h, c in zip(metrics.heals, convergence)],
            "bytes": bytes_by_kind,
            "unsynced_entries_max": max((s["unsynced_entries"] for s in metrics.samples), default=0),
            "incidents": dict(sorted(metrics.incidents.items())),
            "incident_log": metrics.incident_log[:50],
            "invariants": {"negative_balances": negative, "lost_acknowledged_writes": lost,
                           "digest_mismatches": mismatched, "forks": metrics.incidents.get("fork", 0),
                           "unconverged_final_heal": 0 if settled_at is not None else 1},
            "trace_events": self.trace.events, "trace_digest": digest,
            "replay": replay_command(self.scenario),
        }
        return Result(summary, metrics.samples, metrics, dict(metrics.pair_bytes))

    def _lost_acknowledged(self, statuses: dict[str, Any]) -> int:
        """Writes acknowledged to their caller that the chain no longer has: missing from
        their origin's own store (or another entry in their place), or never applied by
        some member after the final heal."""
        metrics = self.metrics
        lost = 0
        by_number = {d.number: d for d in self.devices.values()}
        for origin, seq in metrics.acked.items():
            seq = metrics.valid_upto(origin, seq)
            device = by_number.get(origin)
            if device is None or device.name in metrics.excluded or seq <= 0:
                continue
            head = device.store.head(origin)
            held = head.seq if head else 0
            lost += max(0, seq - held)
            for name, status in statuses.items():
                if name != device.name:
                    lost += max(0, seq - status.applied.get(origin, 0)) if status.is_member else 0
        for (origin, seq), want in metrics.acked_hashes.items():
            device = by_number.get(origin)
            if device is None or device.name in metrics.excluded or seq > metrics.valid_upto(origin, seq):
                continue
            data = device.store.get(origin, seq)
            if data is not None and Entry.decode(data).hash != want:
                lost += 1  # another entry now stands at an acknowledged seq
        return lost
