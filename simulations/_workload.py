"""The shop's day as load: sales, stock, prices, member money and open orders.

Every op goes through ``Device.commit`` and so through the engine with the schema and
policy the node uses (``node.pos``): nothing here is a copy of the domain's rules, and a
refusal (too few rights for a member charge) is the engine's. Arrivals are Poisson, with a
rate per till that follows the hour of a shop's day (``day_shape = "shop"``: a quiet
morning, a lunch peak, an evening bump) drawn by thinning, from the workload's own RNG.
"""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Any

from crdt_types import InsufficientRights, TillmeshError

from ._device import Device
from ._loop import US_PER_S, Loop

__all__ = ["Workload", "day_rate", "SHOP_DAY"]

# Relative sales rate by hour of the day (mean over 08:00-20:00 is 1.0).
SHOP_DAY = {7: 0.1, 8: 0.35, 9: 0.5, 10: 0.7, 11: 1.0, 12: 2.2, 13: 2.0, 14: 0.9, 15: 0.75, 16: 0.8,
            17: 1.3, 18: 1.3, 19: 0.5, 20: 0.1}
_PEAK = max(SHOP_DAY.values())


def day_rate(shape: str, hour: float) -> float:
    """The rate factor at ``hour`` (0..24) of the day."""
    if shape == "flat":
        return 1.0
    return SHOP_DAY.get(int(hour) % 24, 0.02)


def _member_key(member: int) -> tuple:
    return ("member", f"m{member:05d}", "balance")


class Workload:
    """Schedules and writes the load of one run.

    Args:
        spec: the scenario's ``[workload]`` section.
        start_hour: the hour of the day at virtual time 0.
        tills / offices: devices that sell / that manage (stock in, prices, top-ups).
    """

    def __init__(self, loop: Loop, rng: random.Random, spec: dict[str, Any], start_hour: int,
                 tills: list[Device], offices: list[Device], until_us: int) -> None:
        self.loop, self.rng, self.spec, self.start_hour = loop, rng, spec, start_hour
        self.tills, self.offices, self.until_us = tills, offices, until_us
        self.skus = [f"sku-{i:05d}" for i in range(spec["skus"])]
        # Zipf-like popularity: the cumulative weights for bisect.
        self._cumulative = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(self.skus))))
        self.counts = {"sales": 0, "sale_lines": 0, "member_charges": 0, "charges_refused": 0,
                       "rights_requests": 0, "topups": 0, "price_changes": 0, "order_edits": 0,
                       "receipts": 0, "refused": 0, "skipped_down": 0}
        self.expected_stock: dict[tuple[str, str], int] = {}
        self._sale_no: dict[str, int] = {}
        # A member tops up at her home branch: member m belongs to office m % len(offices).
        self._homes = {office.name: list(range(i, spec["members"], len(offices))) for i, office in enumerate(offices)}
        self.running = True

    def start(self) -> None:
        for office in self.offices:
            self.loop.after(0, self._opening_stock, office)
        per_hour = self.spec["sales_per_till_hour"]
        for till in self.tills:
            self._next(till, per_hour, self._sale, shaped=True)
        if self.offices:
            for office in self.offices:
                self._next(office, self.spec["topups_hour"], self._topup, shaped=True)
                self._next(office, self.spec["order_edits_hour"], self._order_edit, shaped=True)
            self._next(self.offices[0], self.spec["price_changes_hour"], self._price_change, shaped=False)

    def stop(self) -> None:
        self.running = False

    # -- arrivals -----------------------------------------------------------------------------

    def _next(self, device: Device, per_hour: float, action, *, shaped: bool) -> None:
        """Schedule the next arrival of a Poisson process whose rate follows the day."""
        if per_hour <= 0 or not self.running:
            return
        peak = per_hour * (_PEAK if shaped and self.spec["day_shape"] == "shop" else 1.0) / 3600.0
        t = self.loop.now
        while True:  # thinning: candidates at the peak rate, kept with rate(t) / peak
            t += int(self.rng.expovariate(peak) * US_PER_S)
            if t > self.until_us:
                return
            hour = self.start_hour + t / (3600 * US_PER_S)
            rate = per_hour * (day_rate(self.spec["day_shape"], hour) if shaped else 1.0) / 3600.0
            if self.rng.random() * peak <= rate:
                break
        self.loop.at(t, self._arrive, device, per_hour, action, shaped)

    def _arrive(self, device: Device, per_hour: float, action, shaped: bool) -> None:
        if not self.running:
            return
        if device.up:
            try:
                action(device)
            except (InsufficientRights, TillmeshError):
                self.counts["refused"] += 1
        else:
            self.counts["skipped_down"] += 1  # a till that is off sells nothing
        self._next(device, per_hour, action, shaped=shaped)

    # -- the ops --------------------------------------------------------------------------------

    def _sku(self) -> str:
        x = self.rng.random() * self._cumulative[-1]
        return self.skus[min(bisect.bisect_left(self._cumulative, x), len(self.skus) - 1)]

    def _opening_stock(self, office: Device) -> None:
        amount = self.spec["opening_stock"]
        if not amount or not office.up:
            return
        for start in range(0, len(self.skus), 50):
            ops = [("add", ("stock", office.branch, sku), amount) for sku in self.skus[start:start + 50]]
            office.commit(ops)
            self.counts["receipts"] += 1

    def _sale(self, till: Device) -> None:
        lines = {}
        for _ in range(self.rng.randint(1, self.spec["lines_max"])):
            sku = self._sku()
            lines[sku] = lines.get(sku, 0) + self.rng.randint(1, 2)
        total = sum(qty * (100 + (hash_sku(sku) % 2000)) for sku, qty in lines.items())
        number = self._sale_no[till.name] = self._sale_no.get(till.name, 0) + 1
        sale_id = f"{till.name}-{number:06d}"
        ops: list[tuple] = [("record", ("sale", sale_id),
                             {"till": till.name, "lines": [[sku, qty] for sku, qty in sorted(lines.items())],
                              "total": total})]
        ops += [("add", ("stock", till.branch, sku), -qty) for sku, qty in sorted(lines.items())]
        members = self.spec["members"]
        if members and self.rng.random() < self.spec["member_pay_share"]:
            key = _member_key(self.rng.randrange(members))
            try:
                till.commit([*ops, ("decrement", key, total)])
                self.counts["member_charges"] += 1
                self._sold(till, lines)
                return
            except InsufficientRights:
                # Too few rights here: ask for them (the largest holder answers) and take
                # this sale in cash, as a till would.
                self.counts["charges_refused"] += 1
                try:
                    till.request_rights(key, total)
                    self.counts["rights_requests"] += 1
                except TillmeshError:
                    pass
        till.commit(ops)
        self._sold(till, lines)

    def _sold(self, till: Device, lines: dict[str, int]) -> None:
        self.counts["sales"] += 1
        self.counts["sale_lines"] += len(lines)

    def _topup(self, office: Device) -> None:
        homes = self._homes.get(office.name)
        if not homes:
            return
        member = homes[self.rng.randrange(len(homes))]
        office.commit([("increment", _member_key(member), self.rng.randint(10, 50) * 100)])
        self.counts["topups"] += 1

    def _price_change(self, office: Device) -> None:
        sku = self._sku()
        price = self.rng.randint(50, 5000)
        if self.rng.random() < 0.3:  # a branch override
            office.commit([("set", ("price", office.branch, sku), price)])
        else:
            office.commit([("set", ("price", sku), price)])
        self.counts["price_changes"] += 1

    def _order_edit(self, office: Device) -> None:
        """An open order of the branch, edited from any of its devices."""
        branch = [d for d in self.tills if d.branch == office.branch and d.up] + [office]
        device = branch[self.rng.randrange(len(branch))]
        key = ("order", f"{office.branch}-{self.rng.randrange(8):02d}")
        if self.rng.random() < 0.3:
            device.commit([("set_field", key, "table", self.rng.randint(1, 30))])
        else:
            device.commit([("add_line", key, {"sku": self._sku(), "qty": self.rng.randint(1, 3)})])
        self.counts["order_edits"] += 1

    def member_keys(self) -> list[tuple]:
        return [_member_key(m) for m in range(self.spec["members"])]


def hash_sku(sku: str) -> int:
    """A stable price base per sku (not Python's hash(), which is salted per process)."""
    return int(sku.rsplit("-", 1)[1]) * 7919
