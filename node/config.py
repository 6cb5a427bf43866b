"""A node's settings: ``node.toml`` in its data directory, read with ``tomllib``.

Every setting has a default that serves a small shop, so an empty file is a working
configuration and ``tillmesh join`` writes only what its flags say. The file is typed by
hand on a till by someone who is not a developer: an unknown key or a wrong type is refused
at start with one line naming the key and what was expected, rather than ignored (a typo
such as ``anchor =`` for ``anchors =`` would otherwise silently leave a branch unlinked).
Integers are integers: ``5000`` is a number of milliseconds, ``5000.0`` and ``"5000"`` are
refused, and so are booleans where a number belongs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from crdt_types import InvalidInput
from gossip import EngineConfig, ping_interval_for

__all__ = [
    "ConfigError", "NodeConfig", "SyncSection", "StorageSection", "PosSection", "load_config", "parse_config", "render_config",
    "parse_address", "MAX_CONFIG_BYTES", "MAX_PEERS_LISTED",
]

MAX_CONFIG_BYTES = 64 * 1024
MAX_PEERS_LISTED = 256  # gossip.MAX_PEERS: more could never be connected at once anyway
MAX_PORT = 65535
MAX_MS = 24 * 3600 * 1000  # no timer in a shop needs more than a day


class ConfigError(InvalidInput):
    """``node.toml`` cannot be used: the message names the key and what was expected."""


def parse_address(text: Any, what: str, *, allow_any_port: bool) -> tuple[str, int]:
    """Split ``"host:port"`` (or ``"[v6]:port"``) into its parts.

    Args:
        text: the address as written.
        what: the setting's name, for the error.
        allow_any_port: whether port 0 ("any free port", for listening) is allowed.
    Returns:
        ``(host, port)``.
    Raises:
        ConfigError: not a string of that form, an empty host, or a port out of range.
    """
    lowest = 0 if allow_any_port else 1
    expected = f"{what}: expected \"host:port\" with a port {lowest}..{MAX_PORT}"
    if not isinstance(text, str) or len(text) > 300:
        raise ConfigError(f"{expected}, got {text!r}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"{expected} (write an IPv6 host in brackets), got {text!r}")
    if not sep or not host or any(c.isspace() for c in host):
        raise ConfigError(f"{expected}, got {text!r}")
    if not (port_text.isascii() and port_text.isdigit()) or not lowest <= int(port_text) <= MAX_PORT:
        raise ConfigError(f"{expected}, got {text!r}")
    return host, int(port_text)


@dataclass(frozen=True)
class SyncSection:
    """``[sync]``: replication timers (ms) and connection limits.

    The interval defaults are ``gossip.EngineConfig``'s; the dial backoff doubles from the
    minimum up to the maximum while a peer stays unreachable.
    """

    have_interval_ms: int = EngineConfig.have_interval_ms
    ping_interval_ms: int = EngineConfig.ping_interval_ms  # with only ping_timeout_ms set: ping_interval_for() it
    ping_timeout_ms: int = EngineConfig.ping_timeout_ms
    max_handshakes: int = 8
    dial_backoff_min_ms: int = 500
    dial_backoff_max_ms: int = 30_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            top = 256 if f.name == "max_handshakes" else MAX_MS
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ConfigError(f"sync.{f.name}: expected an integer 1..{top}, got {value!r}")
        if self.dial_backoff_min_ms > self.dial_backoff_max_ms:
            raise ConfigError(f"sync.dial_backoff_min_ms ({self.dial_backoff_min_ms}) is above "
                              f"sync.dial_backoff_max_ms ({self.dial_backoff_max_ms})")
        if self.ping_timeout_ms <= self.ping_interval_ms:
            raise ConfigError(f"sync.ping_timeout_ms ({self.ping_timeout_ms}) must be above "
                              f"sync.ping_interval_ms ({self.ping_interval_ms}), or every link would time out")


@dataclass(frozen=True)
class StorageSection:
    """``[storage]``: how often (in entries) a replica snapshot is written."""

    snapshot_every: int = 1000

    def __post_init__(self) -> None:
        value = self.snapshot_every
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
            raise ConfigError(f"storage.snapshot_every: expected an integer 1..10000000, got {self.snapshot_every!r}")


@dataclass(frozen=True)
class PosSection:
    """``[pos]``: the shop's rules on this device.

    ``rights_wait_ms``: how long a member charge beyond this device's escrow rights waits for
    another device to transfer rights before it is refused (409 ``insufficient_rights``,
    nothing written). ``approval_above``: a sale whose total (minor units) is above this needs
    a manager's approval; 0 means no sale needs one.
    """

    rights_wait_ms: int = 3_000
    approval_above: int = 100_000

    def __post_init__(self) -> None:
        for name, low, top in (("rights_wait_ms", 0, 60_000), ("approval_above", 0, 2**53 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
                raise ConfigError(f"pos.{name}: expected an integer {low}..{top}, got {value!r}")


# Where each setting lives in node.toml: (section, key) -> NodeConfig field. The file groups
# settings for people; code reads one flat object (``config.relay``, ``config.peers``), with
# the timers kept together in ``config.sync``.
_FLAT = {
    ("node", "listen"): "listen",
    ("node", "relay"): "relay",
    ("peers", "static"): "peers",
    ("peers", "anchors"): "anchors",
    ("api", "listen"): "api_listen",
    ("api", "enabled"): "api_enabled",
    ("discovery", "enabled"): "discovery_enabled",
}
_NESTED = {"sync": SyncSection, "storage": StorageSection, "pos": PosSection}
_SECTIONS = ("node", "peers", "api", "discovery", "sync", "storage", "pos")


@dataclass(frozen=True)
class NodeConfig:
    """The whole of ``node.toml``; ``NodeConfig()`` is the defaults.

    Attributes:
        listen: ``[node] listen``, host:port for peer connections (port 0: any free one).
        relay: ``[node] relay``, run as a blind relay (anchor).
        peers: ``[peers] static``, devices to keep a link to (host:port).
        anchors: ``[peers] anchors``, anchors to keep a link to (host:port).
        api_listen: ``[api] listen``, host:port of the local HTTP API.
        api_enabled: ``[api] enabled``.
        discovery_enabled: ``[discovery] enabled``: find peers of this network on the LAN by DNS-SD.
        sync: ``[sync]``, timers and connection limits.
        storage: ``[storage]``.
        pos: ``[pos]``, the shop's rules (rights wait, approval threshold).
    Raises:
        ConfigError: on construction, a value of the wrong type or range.
    """

    listen: str = "127.0.0.1:0"
    relay: bool = False
    peers: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    api_listen: str = "127.0.0.1:0"
    api_enabled: bool = True
    discovery_enabled: bool = False
    sync: SyncSection = field(default_factory=SyncSection)
    storage: StorageSection = field(default_factory=StorageSection)
    pos: PosSection = field(default_factory=PosSection)

    def __post_init__(self) -> None:
        for (section, key), name in _FLAT.items():
            object.__setattr__(self, name, _typed(section, key, getattr(self, name), _DEFAULT_VALUES[name]))
        parse_address(self.listen, "node.listen", allow_any_port=True)
        parse_address(self.api_listen, "api.listen", allow_any_port=True)
        for name, key in (("peers", "static"), ("anchors", "anchors")):
            for item in getattr(self, name):
                parse_address(item, f"peers.{key}", allow_any_port=False)
        for name, cls in _NESTED.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}: expected a {cls.__name__}, got {getattr(self, name)!r}")

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port)."""
        return parse_address(self.listen, "node.listen", allow_any_port=True)

    @property
    def api_address(self) -> tuple[str, int]:
        """``api_listen`` as (host, port)."""
        return parse_address(self.api_listen, "api.listen", allow_any_port=True)

    @property
    def dial(self) -> tuple[tuple[str, int], ...]:
        """Every address to keep a link to, static peers first, each once."""
        seen: dict[tuple[str, int], None] = {}
        for item in (*self.peers, *self.anchors):
            seen.setdefault(parse_address(item, "peers", allow_any_port=False), None)
        return tuple(seen)


_DEFAULT_VALUES = {f.name: f.default for f in fields(NodeConfig) if f.name in _FLAT.values()}


def _typed(section: str, name: str, value: Any, default: Any) -> Any:
    where = f"{section}.{name}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of \"host:port\" strings, got {value!r}")
        if len(value) > MAX_PEERS_LISTED:
            raise ConfigError(f"{where}: at most {MAX_PEERS_LISTED} entries, got {len(value)}")
        return tuple(value)
    raise AssertionError(f"no type rule for {where}")  # pragma: no cover


def parse_config(text: str, *, source: str = "node.toml") -> NodeConfig:
    """Parse the text of a ``node.toml``.

    Args:
        text: the TOML text.
        source: what to call it in errors.
    Returns:
        The configuration, defaults filled in.
    Raises:
        ConfigError: not TOML, an unknown section or key, or a value of the wrong type or range.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{source}: expected text, got {type(text).__name__}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    flat: dict[str, Any] = {}
    for section, body in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section or top-level key {section!r}; "
                              f"the sections are {list(_SECTIONS)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: {section} must be a [{section}] table, got {body!r}")
        cls = _NESTED.get(section)
        known = [f.name for f in fields(cls)] if cls else [k for s, k in _FLAT if s == section]
        for key in body:
            if key not in known:
                raise ConfigError(f"{source}: unknown key {section}.{key}; [{section}] takes {known}")
        try:
            if cls is not None:
                defaults = cls()
                typed = {k: _typed(section, k, v, getattr(defaults, k)) for k, v in body.items()}
                if section == "sync" and "ping_timeout_ms" in typed and "ping_interval_ms" not in typed:
                    typed["ping_interval_ms"] = ping_interval_for(typed["ping_timeout_ms"])
                flat[section] = cls(**typed)
            else:
                for key, value in body.items():
                    name = _FLAT[(section, key)]
                    flat[name] = _typed(section, key, value, _DEFAULT_VALUES[name])
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    try:
        return NodeConfig(**flat)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> NodeConfig:
    """Read and parse ``node.toml`` at ``path``.

    Returns:
        The configuration.
    Raises:
        ConfigError: the file cannot be read, is not UTF-8, or ``parse_config`` refuses it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_config(text, source=str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in escaped):
            raise ConfigError(f"cannot write a control character in {value!r}")
        return f'"{escaped}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise AssertionError(f"no TOML form for {value!r}")  # pragma: no cover


def render_config(config: NodeConfig, *, full: bool = False) -> str:
    """The TOML text of ``config``; ``parse_config`` reads it back to an equal config.

    Args:
        full: write every setting; by default only those that differ from the defaults
            (what a person wrote, not a wall of numbers nobody chose).
    Returns:
        TOML text, one ``[section]`` per section with something in it.
    """
    defaults = NodeConfig()
    out = ["# tillmesh node settings; every key left out has its default (see node/config.py)."]
    for section in _SECTIONS:
        cls = _NESTED.get(section)
        if cls is not None:
            current, base = getattr(config, section), getattr(defaults, section)
            pairs = [(f.name, getattr(current, f.name), getattr(base, f.name)) for f in fields(cls)]
        else:
            pairs = [(key, getattr(config, name), getattr(defaults, name))
                     for (s, key), name in _FLAT.items() if s == section]
        lines = [f"{key} = {_toml_value(value)}" for key, value, default in pairs if full or value != default]
        if lines:
            out += ["", f"[{section}]", *lines]
    return "\n".join(out) + "\n"
