"""Scenario files: TOML, every key known, typed and checked, with a default that makes sense.

``load(path, overrides)`` reads a file, applies ``--set key=value`` overrides (dotted
paths: ``workload.sales_per_till_hour=60``), and returns a ``Scenario``; anything wrong is
one ``ScenarioError`` naming the file, the key and what was expected. The whole table of
keys is ``SCHEMA`` (``tillmesh sim keys`` prints it).
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gossip import EngineConfig, ping_interval_for

__all__ = ["Scenario", "ScenarioError", "SCHEMA", "LISTS", "load", "loads", "parse_override", "replay_command_for"]

MAX_SCENARIO_BYTES = 1 << 20


class ScenarioError(ValueError):
    """A scenario file (or an override) that cannot be run; the message names the key."""


# --- what a value may be ----------------------------------------------------------------------

def _int(lo: int, hi: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: type(v) is int and lo <= v <= hi), f"an integer >= {lo} and <= {hi}"


# Every number has an upper bound: a value past it (inf, 1e308) would turn into an endless
# loop, an overflow in the virtual clock or a zero rate, never into a result.
MAX_MS = 3_600_000  # one hour, for latencies and the flush time
MAX_S = 10_000_000  # about four months of virtual time
MAX_PER_HOUR = 100_000  # arrivals of one kind per device and hour
MAX_SEED = 2**63 - 1


def _num(lo: float, hi: float) -> tuple[Callable[[Any], bool], str]:
    what = f"a finite number >= {lo} and <= {hi}"
    return (lambda v: type(v) in (int, float) and lo <= v <= hi), what  # nan fails both comparisons


def _one_of(*options: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in options), "one of " + ", ".join(repr(o) for o in options)


def _str_list(allowed: tuple[str, ...] | None = None) -> tuple[Callable[[Any], bool], str]:
    what = "a list of strings" + (f" from {', '.join(allowed)}" if allowed else "")
    return (lambda v: isinstance(v, list) and all(isinstance(x, str) and (not allowed or x in allowed) for x in v)), what


def _choices(allowed: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    check, _ = _str_list(allowed)
    return ((lambda v: check(v) and len(v) > 0 and len(set(v)) == len(v)),
            f"a non-empty list of distinct strings from {', '.join(allowed)}")


_BOOL = ((lambda v: type(v) is bool), "true or false")
_STR = ((lambda v: isinstance(v, str) and 0 < len(v) <= 200), "a non-empty string")
# run.name becomes a directory name under --out: nothing that could climb out of it.
_NAME = ((lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", v) is not None),
         "a name of letters, digits, '-', '_' and '.' (not starting with '.'), at most 100")
_BRANCHES = ((lambda v: (type(v) is int and 1 <= v <= 1000) or (
    isinstance(v, list) and 0 < len(v) <= 1000 and all(isinstance(x, str) and x for x in v) and len(set(v)) == len(v))),
    "an integer 1..1000 or a list of distinct branch names")
_GROUPS = ((lambda v: isinstance(v, list) and len(v) >= 2 and all(
    isinstance(g, list) and g and all(isinstance(x, str) for x in g) for g in v)), "a list of at least two device lists")
_MS, _S, _RATE = _num(0, MAX_MS), _num(0, MAX_S), _num(0, MAX_PER_HOUR)
_LINK = {
    "latency_ms": (_MS, None), "jitter_ms": (_MS, 0.0), "bandwidth_kbps": (_int(0, 10**9), 0),
    "loss": (_num(0, 1), 0.0), "connect_timeout_ms": (_int(1, MAX_MS), 3000),
}

# section -> key -> ((check, expected), default); a default of None means required.
SCHEMA: dict[str, dict[str, tuple[tuple[Callable[[Any], bool], str], Any]]] = {
    "run": {"name": (_NAME, "scenario"), "duration_s": (_int(1, MAX_S), 3600), "seed": (_int(0, MAX_SEED), 1),
            "sample_s": (_int(1, MAX_S), 60), "final_heal_s": (_int(0, MAX_S), 900), "start_hour": (_int(0, 23), 8),
            "flush_ms": (_MS, 1.0), "description": (((lambda v: isinstance(v, str)), "a string"), "")},
    "chain": {"branches": (_BRANCHES, ["central"]), "tills": (_int(0, 100), 3), "backoffice": (_BOOL, True),
              "anchors": (_int(0, 64), 1), "anchors_per_member": (_int(1, 64), 2),
              "branch_lan": (_BOOL, True)},
    "network.lan": {**_LINK, "latency_ms": (_MS, 0.5), "jitter_ms": (_MS, 0.3),
                    "bandwidth_kbps": (_int(0, 10**9), 100_000)},
    "network.wan": {**_LINK, "latency_ms": (_MS, 30.0), "jitter_ms": (_MS, 10.0),
                    "bandwidth_kbps": (_int(0, 10**9), 10_000)},
    "sync": {"have_interval_ms": (_int(100, MAX_MS), EngineConfig.have_interval_ms),
             "ping_interval_ms": (_int(100, MAX_MS), EngineConfig.ping_interval_ms),
             "ping_timeout_ms": (_int(100, MAX_MS), EngineConfig.ping_timeout_ms),
             "snapshot_every": (_int(0, 10**9), EngineConfig.snapshot_every)},
    "dial": {"base_ms": (_int(1, MAX_MS), 500), "cap_ms": (_int(1, MAX_MS), 30_000)},
    "workload": {"sales_per_till_hour": (_RATE, 30.0), "day_shape": (_one_of("shop", "flat"), "shop"),
                 "skus": (_int(1, 100_000), 200), "members": (_int(0, 100_000), 40),
                 "member_pay_share": (_num(0, 1), 0.15), "price_changes_hour": (_RATE, 2.0),
                 "topups_hour": (_RATE, 3.0), "order_edits_hour": (_RATE, 4.0),
                 "opening_stock": (_int(0, 10**12), 500), "lines_max": (_int(1, 20), 3)},
    "random_faults": {"partitions_hour": (_RATE, 0.0), "partition_mean_s": (_num(1, MAX_S), 300.0),
                      "crashes_hour": (_RATE, 0.0), "crash_down_s": (_S, 60.0)},
    "experiment": {"kind": (_one_of("protocols"), "protocols"), "nodes": (_int(2, 1000), 15),
                   "degree": (_int(1, 100), 4), "topologies": (_choices(("mesh", "tree")), ["tree", "mesh"]),
                   "protocols": (_choices(("tillmesh", "delta", "bp_rr")), ["tillmesh", "delta", "bp_rr"]),
                   # at most one write per node and millisecond: the write schedule's period is in µs
                   "writes_per_node_s": (_num(0, 1000), 1.0), "sync_interval_ms": (_int(1, MAX_MS), 1000),
                   "latency_ms": (_MS, 10.0)},
}
# Tables that may repeat ([[partition]] ...): key -> ((check, expected), default).
LISTS: dict[str, dict[str, tuple[tuple[Callable[[Any], bool], str], Any]]] = {
    "partition": {"at_s": (_S, None), "for_s": (_S, None), "devices": (_str_list(), []),
                  "groups": (_GROUPS, [])},
    "anchor_outage": {"at_s": (_S, None), "for_s": (_S, None), "anchors": (_str_list(), [])},
    "crash": {"at_s": (_S, None), "device": (_STR, None), "down_s": (_S, 30.0)},
    # about three years either way: a device's clock stays a valid timestamp
    "skew": {"device": (_STR, None), "skew_ms": (_int(-10**11, 10**11), 0), "drift_ppm": (_num(-1e6, 1e6), 0.0)},
    "join": {"at_s": (_S, None), "branch": (_STR, None), "roles": (_str_list(), ["cashier"])},
    "leave": {"at_s": (_S, None), "device": (_STR, None)},
    "revoke": {"at_s": (_S, None), "device": (_STR, None)},
}


@dataclass
class Scenario:
    """A checked scenario: ``section(name)`` is a dict of every key of that section."""

    source: str
    values: dict[str, dict[str, Any]]
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    experiment: bool = False  # the file has an [experiment] section: a protocol comparison
    overrides: tuple[str, ...] = ()  # the --set overrides applied, for the replay command

    def section(self, name: str) -> dict[str, Any]:
        return self.values[name]

    @property
    def name(self) -> str:
        return self.values["run"]["name"]

    @property
    def seed(self) -> int:
        return self.values["run"]["seed"]

    def with_seed(self, seed: int) -> "Scenario":
        other = copy.deepcopy(self)
        other.values["run"]["seed"] = seed
        return other

    def as_dict(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.values), **copy.deepcopy(self.lists)}


def _sections(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Flatten ``[network.lan]`` into ``network.lan``."""
    flat: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "network" and isinstance(value, dict):
            for sub, table in value.items():
                flat[f"network.{sub}"] = table
        else:
            flat[name] = value
    return flat


def _check_table(source: str, where: str, table: Any, keys: dict) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ScenarioError(f"{source}: [{where}] must be a table")
    for key in table:
        if key not in keys:
            raise ScenarioError(f"{source}: {where}.{key}: unknown key; expected one of {', '.join(keys)}")
    out = {}
    for key, ((check, expected), default) in keys.items():
        if key in table:
            value = table[key]
            if not check(value):
                raise ScenarioError(f"{source}: {where}.{key}: expected {expected}, got {value!r}")
            out[key] = value
        elif default is None:
            raise ScenarioError(f"{source}: {where}.{key}: missing; expected {expected}")
        else:
            out[key] = copy.deepcopy(default)
    return out


def _build(raw: dict[str, Any], source: str) -> Scenario:
    flat = _sections(raw, source)
    for name in flat:
        if name not in SCHEMA and name not in LISTS:
            raise ScenarioError(f"{source}: [{name}]: unknown section; expected one of "
                                f"{', '.join([*SCHEMA, *LISTS])}")
    values = {name: _check_table(source, name, flat.get(name, {}), keys) for name, keys in SCHEMA.items()}
    sync, given = values["sync"], flat.get("sync", {})
    if "ping_timeout_ms" in given and "ping_interval_ms" not in given:
        sync["ping_interval_ms"] = ping_interval_for(sync["ping_timeout_ms"])
    if sync["ping_timeout_ms"] <= sync["ping_interval_ms"]:
        raise ScenarioError(f"{source}: sync.ping_timeout_ms: expected more than sync.ping_interval_ms "
                            f"({sync['ping_interval_ms']}), got {sync['ping_timeout_ms']}")
    if values["dial"]["cap_ms"] < values["dial"]["base_ms"]:
        raise ScenarioError(f"{source}: dial.cap_ms: expected at least dial.base_ms ({values['dial']['base_ms']}), "
                            f"got {values['dial']['cap_ms']}")
    chain = values["chain"]
    if "experiment" not in flat and not chain["branch_lan"] and chain["anchors"] == 0:
        raise ScenarioError(f"{source}: chain.anchors: expected at least 1 when chain.branch_lan is false, "
                            "got 0 (the devices would have no link at all)")
    lists: dict[str, list[dict[str, Any]]] = {}
    for name, keys in LISTS.items():
        items = flat.get(name, [])
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise ScenarioError(f"{source}: [[{name}]] must be an array of tables")
        lists[name] = [_check_table(source, f"{name}[{i}]", item, keys) for i, item in enumerate(items)]
    for i, part in enumerate(lists["partition"]):
        if bool(part["devices"]) == bool(part["groups"]):
            raise ScenarioError(f"{source}: partition[{i}]: give exactly one of devices or groups")
    return Scenario(source, values, lists, experiment="experiment" in flat)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` -> (dotted key, TOML value; a bare word is a string)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ScenarioError(f"--set {text!r}: expected key=value, e.g. workload.sales_per_till_hour=60")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def _apply_override(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) < 2:
        raise ScenarioError(f"--set {key}: expected section.key (e.g. run.duration_s)")
    *sections, last = parts
    table = raw
    for part in sections:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ScenarioError(f"--set {key}: {part} is not a table")
    table[last] = value


def loads(text: str, source: str = "<scenario>", overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    for text_override in overrides:
        _apply_override(raw, *parse_override(text_override))
    scenario = _build(raw, source)
    scenario.overrides = tuple(overrides)
    return scenario


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc.strerror}") from None
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{path}: larger than {MAX_SCENARIO_BYTES} bytes; not a scenario")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    return loads(text, str(path), overrides)


def replay_command_for(source: str, seed: int, overrides: tuple[str, ...] | list[str]) -> str:
    """The shell command (each word quoted) that runs ``source`` with ``seed`` and ``overrides``."""
    words = ["tillmesh", "sim", "run", source, "--seed", str(seed)]
    for override in overrides:
        words += ["--set", override]
    return shlex.join(words)
