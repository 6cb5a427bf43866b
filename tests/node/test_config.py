"""``node.toml``: defaults for a small shop, a round trip through ``render_config``, and a
one-line refusal naming the key for everything a person could mistype."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from crdt_types import InvalidInput
from node.config import (
    MAX_CONFIG_BYTES,
    MAX_PEERS_LISTED,
    ConfigError,
    NodeConfig,
    StorageSection,
    SyncSection,
    load_config,
    parse_address,
    parse_config,
    render_config,
)


def test_an_empty_file_is_the_defaults_and_they_serve_a_small_shop():
    config = parse_config("")
    assert config == NodeConfig()
    assert (config.listen, config.relay, config.api_listen, config.api_enabled) == ("127.0.0.1:0", False,
                                                                                    "127.0.0.1:0", True)
    assert config.peers == config.anchors == () and config.discovery_enabled is False
    assert config.sync.max_handshakes == 8
    assert (config.sync.dial_backoff_min_ms, config.sync.dial_backoff_max_ms) == (500, 30_000)
    assert config.storage.snapshot_every == 1000
    assert config.address == ("127.0.0.1", 0) and config.dial == ()


def test_every_section_is_read():
    config = parse_config("""
[node]
listen = "0.0.0.0:7001"
relay = true

[peers]
static = ["127.0.0.1:7002", "[::1]:7003"]
anchors = ["127.0.0.1:7100", "127.0.0.1:7002"]

[api]
listen = "127.0.0.1:8080"
enabled = false

[discovery]
enabled = true

[sync]
have_interval_ms = 1000
ping_interval_ms = 2000
ping_timeout_ms = 6000
max_handshakes = 4
dial_backoff_min_ms = 100
dial_backoff_max_ms = 1000

[storage]
snapshot_every = 50
""")
    assert config.listen == "0.0.0.0:7001" and config.relay is True
    assert config.peers == ("127.0.0.1:7002", "[::1]:7003")
    assert config.anchors == ("127.0.0.1:7100", "127.0.0.1:7002")
    assert config.dial == (("127.0.0.1", 7002), ("::1", 7003), ("127.0.0.1", 7100))  # each once
    assert config.api_address == ("127.0.0.1", 8080) and config.api_enabled is False
    assert config.discovery_enabled is True
    assert config.sync == SyncSection(1000, 2000, 6000, 4, 100, 1000)
    assert config.storage == StorageSection(50)
    assert parse_config(render_config(config)) == config
    assert parse_config(render_config(config, full=True)) == config


def test_render_writes_only_what_differs_from_the_defaults():
    assert "[" not in render_config(NodeConfig())
    text = render_config(NodeConfig(peers=("127.0.0.1:7001",), relay=True))
    assert "static = [\"127.0.0.1:7001\"]" in text and "relay = true" in text and "[sync]" not in text


@pytest.mark.parametrize("text, named", [
    ("[nod]\nrelay = true", "'nod'"),
    ("relay = true", "'relay'"),
    ("[node]\nrealy = true", "node.realy"),
    ("[peers]\nanchor = []", "peers.anchor"),
    ("[sync]\nhave_interval = 5", "sync.have_interval"),
    ("[node]\nrelay = 1", "node.relay"),
    ("[node]\nrelay = \"yes\"", "node.relay"),
    ("[node]\nlisten = 7001", "node.listen"),
    ("[node]\nlisten = \"7001\"", "node.listen"),
    ("[node]\nlisten = \"host:99999\"", "node.listen"),
    ("[node]\nlisten = \":7001\"", "node.listen"),
    ("[node]\nlisten = \"::1:7001\"", "node.listen"),
    ("[api]\nlisten = \"127.0.0.1:-1\"", "api.listen"),
    ("[api]\nenabled = \"false\"", "api.enabled"),
    ("[peers]\nstatic = \"127.0.0.1:7001\"", "peers.static"),
    ("[peers]\nstatic = [7001]", "peers.static"),
    ("[peers]\nstatic = [\"127.0.0.1:0\"]", "peers.static"),  # port 0 cannot be dialled
    ("[peers]\nanchors = [\"anchor\"]", "peers.anchors"),
    ("[sync]\nhave_interval_ms = 5000.0", "sync.have_interval_ms"),
    ("[sync]\nhave_interval_ms = \"5000\"", "sync.have_interval_ms"),
    ("[sync]\nhave_interval_ms = true", "sync.have_interval_ms"),
    ("[sync]\nhave_interval_ms = 0", "sync.have_interval_ms"),
    ("[sync]\nmax_handshakes = -1", "sync.max_handshakes"),
    ("[sync]\nmax_handshakes = 100000", "sync.max_handshakes"),
    ("[sync]\ndial_backoff_min_ms = 60000", "sync.dial_backoff_min_ms"),
    ("[sync]\nping_interval_ms = 60000", "sync.ping_timeout_ms"),
    ("[storage]\nsnapshot_every = 0", "storage.snapshot_every"),
    ("[storage]\nsnapshot_every = 1.5", "storage.snapshot_every"),
    ("node = 1", "node"),
    ("[[node]]\nrelay = true", "node"),
    ("[node.extra]\nx = 1", "node.extra"),
    ("[node\nrelay = true", "not valid TOML"),
])
def test_a_mistake_is_one_line_naming_the_key(text, named):
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="DATA/node.toml")
    message = str(refused.value)
    assert named in message and message.startswith("DATA/node.toml: ") and "\n" not in message
    assert isinstance(refused.value, InvalidInput)


def test_limits_on_size_and_peer_lists():
    with pytest.raises(ConfigError, match="larger than"):
        parse_config("#" * (MAX_CONFIG_BYTES + 1))
    many = ", ".join(f'"127.0.0.1:{7000 + i}"' for i in range(MAX_PEERS_LISTED + 1))
    with pytest.raises(ConfigError, match="peers.static: at most"):
        parse_config(f"[peers]\nstatic = [{many}]")
    with pytest.raises(ConfigError):
        parse_config(b"[node]")  # type: ignore[arg-type]


def test_constructing_a_config_checks_it_too():
    with pytest.raises(ConfigError, match="node.relay"):
        NodeConfig(relay="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="peers.static"):
        NodeConfig(peers=("no-port",))
    with pytest.raises(ConfigError, match="sync.max_handshakes"):
        SyncSection(max_handshakes=2.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sync"):
        NodeConfig(sync={"max_handshakes": 2})  # type: ignore[arg-type]
    assert NodeConfig(peers=["127.0.0.1:1"]).peers == ("127.0.0.1:1",)  # type: ignore[arg-type]


def test_load_config_reads_a_file_and_names_it_when_it_cannot(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text("[node]\nrelay = true\n")
    assert load_config(path).relay is True
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    path.write_bytes(b"[node]\nlisten = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    path.write_text("[node]\nrelay = maybe\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


@pytest.mark.parametrize("text, any_port, expected", [
    ("127.0.0.1:7001", False, ("127.0.0.1", 7001)),
    ("till-1.local:1", False, ("till-1.local", 1)),
    ("[fe80::1]:65535", False, ("fe80::1", 65535)),
    ("0.0.0.0:0", True, ("0.0.0.0", 0)),
])
def test_addresses(text, any_port, expected):
    assert parse_address(text, "x", allow_any_port=any_port) == expected


@pytest.mark.parametrize("text", ["", "host", "host:", ":1", "host:port", "host:65536", "a b:1", "[::1]1",
                                  "::1:80", "host:+1", "host:٣"])
def test_bad_addresses(text):
    with pytest.raises(ConfigError, match="x: expected"):
        parse_address(text, "x", allow_any_port=False)


hosts = st.sampled_from(["127.0.0.1", "0.0.0.0", "till-1.local", "[::1]"])
addresses = st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(1, 65535))
listen = st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(0, 65535))


@st.composite
def configs(draw):
    low = draw(st.integers(1, 10_000))
    interval = draw(st.integers(1, 100_000))
    return NodeConfig(
        listen=draw(listen), relay=draw(st.booleans()),
        peers=tuple(draw(st.lists(addresses, max_size=4))), anchors=tuple(draw(st.lists(addresses, max_size=4))),
        api_listen=draw(listen), api_enabled=draw(st.booleans()), discovery_enabled=draw(st.booleans()),
        sync=SyncSection(have_interval_ms=draw(st.integers(1, 100_000)), ping_interval_ms=interval,
                         ping_timeout_ms=draw(st.integers(interval + 1, 200_000)),
                         max_handshakes=draw(st.integers(1, 256)), dial_backoff_min_ms=low,
                         dial_backoff_max_ms=draw(st.integers(low, 100_000))),
        storage=StorageSection(draw(st.integers(1, 10_000_000))),
    )


@given(configs(), st.booleans())
def test_render_then_parse_is_the_same_config(config, full):
    assert parse_config(render_config(config, full=full)) == config


@pytest.mark.parametrize("timeout", [1_000, 30_000, 45_000, 59_999])
def test_a_sync_section_that_sets_only_the_ping_timeout_stays_valid(timeout):
    # Written for the older defaults (a ping after 15 s), such a file must still start a node:
    # the interval becomes two thirds of a timeout set below the default interval.
    config = parse_config(f"[sync]\nping_timeout_ms = {timeout}\n")
    assert config.sync.ping_timeout_ms == timeout
    assert config.sync.ping_interval_ms == min(40_000, timeout * 2 // 3) < timeout


def test_engine_config_refuses_a_timeout_not_above_the_ping_interval():
    from gossip import EngineConfig, ping_interval_for

    with pytest.raises(InvalidInput, match="ping_timeout_ms"):
        EngineConfig(ping_timeout_ms=30_000)
    assert EngineConfig(ping_timeout_ms=30_000, ping_interval_ms=ping_interval_for(30_000)).ping_interval_ms == 20_000
