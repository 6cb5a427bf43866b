"""The admin and node commands of ``tillmesh``, run in-process through ``node.cli.main``.

Every refusal must be one line on stderr with exit status 2, and must leave the directories
exactly as they were (compared file by file, modes included); keys must not appear in any
output except the join bundle that ``device add`` exists to print.
"""

from __future__ import annotations

import base64
import io
import json
import stat
import sys
import threading
import types
from pathlib import Path

import pytest
import trio

from gossip import AUTHORITY_NUMBER, Authority, DeviceKey, import_token
from gossip.testing import seeded
from node import cli
from node.admin import (
    AUTHORITY_BUNDLE_PREFIX,
    JOIN_PREFIX,
    AdminError,
    AuthorityDir,
    make_authority_bundle,
    make_join_bundle,
    parse_join_bundle,
)
from node.api import build_app, serve_api
from node.config import load_config
from node.storage import DataDir

T0 = 1_700_000_000_000


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def refused(self, *fragments: str) -> None:
        assert self.code == 2, (self.out, self.err)
        assert self.out == ""
        lines = self.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tillmesh: error: "), self.err
        for fragment in fragments:
            assert fragment in lines[0], lines[0]


@pytest.fixture
def tillmesh(capsys, monkeypatch):
    def run(*argv: str, stdin: str | None = None) -> Run:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``root`` with its mode and bytes (lock files aside: they hold a pid)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (stat.S_IMODE(p.stat().st_mode), p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*")) if p.name != "lock"}


@pytest.fixture
def admin(tmp_path, tillmesh) -> Path:
    path = tmp_path / "admin"
    result = tillmesh("network", "init", "--dir", path)
    assert result.code == 0, result.err
    return path


def add_device(tillmesh, admin: Path, name: str, *roles: str, branch: str = "central") -> str:
    args = ["device", "add", name, "--branch", branch, "--dir", admin]
    for role in roles or ("cashier",):
        args += ["--role", role]
    result = tillmesh(*args)
    assert result.code == 0, result.err
    return result.out.strip()


def secrets_of(admin: Path) -> list[str]:
    """Every secret of the authority directory as it could appear in output."""
    out = []
    for name in ("authority.key", "network.key"):
        raw = (admin / name).read_bytes()
        out += [raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("="), base64.b64encode(raw).decode()]
    return out


# --- network init ---------------------------------------------------------------------------


def test_network_init_creates_a_private_authority_directory(tmp_path, tillmesh):
    path = tmp_path / "admin"
    result = tillmesh("network", "init", "--dir", path)
    assert result.code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in ("authority.key", "network.key", "feed.cbor", "devices.json"):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600, name
    assert len((path / "authority.key").read_bytes()) == 32 and len((path / "network.key").read_bytes()) == 32
    assert json.loads((path / "devices.json").read_text()) == {}
    with AuthorityDir.open(path) as opened:
        network = opened.authority.network_id.hex()
        assert opened.authority.current_epoch == 0
    assert network in result.out
    assert not any(s in result.out + result.err for s in secrets_of(path))
    assert [p.name for p in tmp_path.iterdir()] == ["admin"]  # no temporary directory left


def test_network_init_takes_an_empty_directory(tmp_path, tillmesh):
    (tmp_path / "empty").mkdir()
    assert tillmesh("network", "init", "--dir", tmp_path / "empty").code == 0


def test_network_init_refuses_an_existing_directory_and_changes_nothing(tmp_path, tillmesh, admin):
    before = snapshot(admin)
    tillmesh("network", "init", "--dir", admin).refused("exists and is not empty")
    assert snapshot(admin) == before
    (tmp_path / "file").write_text("x")
    tillmesh("network", "init", "--dir", tmp_path / "file").refused("exists")
    tillmesh("network", "init", "--dir", tmp_path / "missing" / "admin").refused("does not exist")
    assert not (tmp_path / "missing").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin", "file"]


# --- device add -----------------------------------------------------------------------------


def test_device_add_prints_one_line_a_join_bundle_for_the_new_device(tillmesh, admin):
    result = tillmesh("device", "add", "till-1", "--branch", "central", "--role", "cashier", "--role", "stock",
                      "--dir", admin)
    assert result.code == 0
    lines = result.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(JOIN_PREFIX)
    token, seed = parse_join_bundle(lines[0])
    keyring, cert, _ = import_token(token, DeviceKey(seed))
    assert (cert.number, cert.name, cert.branch, cert.roles) == (1, "till-1", "central", ("cashier", "stock"))
    assert keyring.is_member
    assert "SECRET" in result.err and lines[0] not in result.err
    assert not any(s in result.err for s in secrets_of(admin))
    assert json.loads((admin / "devices.json").read_text()) == {
        "till-1": {"number": 1, "branch": "central", "roles": ["cashier", "stock"], "revoked_after": None}}
    second = add_device(tillmesh, admin, "till-2")
    assert import_token(*(lambda t, s: (t, DeviceKey(s)))(*parse_join_bundle(second)))[1].number == 2


def test_the_help_says_the_bundle_is_a_secret(tillmesh):
    result = tillmesh("device", "add", "--help")
    assert result.code == 0 and "SECRET" in result.out


@pytest.mark.parametrize("argv, fragment", [
    (["device", "add", "till-1", "--branch", "central", "--role", "cashier"], "taken"),
    (["device", "add", "authority", "--branch", "hq", "--role", "cashier"], "taken"),
    (["device", "add", "till-9", "--branch", "central", "--role", "wizard"], "invalid choice"),
    (["device", "add", "till-9", "--role", "cashier"], "--branch"),
    (["device", "add", "till-9", "--branch", "central"], "--role"),
    (["device", "add", "till\n9", "--branch", "central", "--role", "cashier"], "printable"),
    (["device", "add", " till-9", "--branch", "central", "--role", "cashier"], "printable"),
    (["device", "add", "x" * 65, "--branch", "central", "--role", "cashier"], "device name"),
    (["device", "add", "till-9", "--branch", "", "--role", "cashier"], "branch"),
    (["device", "add", "till-9", "--branch", "c", "--role", "cashier", "--unknown"], "unrecognized"),
    (["device", "remove", "till-1"], "invalid choice"),
])
def test_device_add_refusals_change_nothing(tillmesh, admin, argv, fragment):
    add_device(tillmesh, admin, "till-1")
    before = snapshot(admin)
    tillmesh(*argv, "--dir", admin).refused(fragment)
    assert snapshot(admin) == before


def test_device_add_refuses_what_is_not_an_authority_directory(tmp_path, tillmesh, admin):
    tillmesh("device", "add", "t", "--branch", "b", "--role", "cashier", "--dir", tmp_path / "nope").refused(
        "not a directory")
    (tmp_path / "other").mkdir()
    tillmesh("device", "add", "t", "--branch", "b", "--role", "cashier", "--dir", tmp_path / "other").refused(
        "authority.key")
    assert list((tmp_path / "other").iterdir()) == []


def test_a_readable_key_file_or_a_tampered_feed_is_refused(tillmesh, admin):
    add_device(tillmesh, admin, "till-1")
    (admin / "authority.key").chmod(0o644)
    before = snapshot(admin)
    tillmesh("device", "add", "t2", "--branch", "b", "--role", "cashier", "--dir", admin).refused("chmod 600")
    assert snapshot(admin) == before
    (admin / "authority.key").chmod(0o600)
    feed = bytearray((admin / "feed.cbor").read_bytes())
    feed[-5] ^= 1
    (admin / "feed.cbor").write_bytes(bytes(feed))
    before = snapshot(admin)
    tillmesh("device", "add", "t2", "--branch", "b", "--role", "cashier", "--dir", admin).refused("feed.cbor")
    assert snapshot(admin) == before


def test_two_admin_commands_at_once_are_refused(tillmesh, admin):
    before = snapshot(admin)
    with AuthorityDir.open(admin):
        tillmesh("device", "add", "t", "--branch", "b", "--role", "cashier", "--dir", admin).refused("in use")
    assert snapshot(admin) == before
    with AuthorityDir.open(admin):
        with pytest.raises(AdminError, match="in use"):
            AuthorityDir.open(admin)


# --- join -----------------------------------------------------------------------------------


def test_join_creates_the_data_directory_from_the_bundle_on_stdin(tmp_path, tillmesh, admin):
    bundle = add_device(tillmesh, admin, "till-1")
    data = tmp_path / "till-1"
    result = tillmesh("join", "-", "--data", data, "--listen", "127.0.0.1:7001", "--api-listen", "127.0.0.1:0",
                      "--peer", "127.0.0.1:7002", "--peer", "127.0.0.1:7003", "--anchor", "127.0.0.1:7100",
                      stdin=bundle + "\n")
    assert result.code == 0, result.err
    assert "device 1" in result.out and "till-1" in result.out
    token, seed = parse_join_bundle(bundle)
    output = result.out + result.err
    assert token not in output and seed.hex() not in output and bundle not in output
    config = load_config(data / "node.toml")
    assert config.listen == "127.0.0.1:7001" and config.relay is False
    assert config.peers == ("127.0.0.1:7002", "127.0.0.1:7003") and config.anchors == ("127.0.0.1:7100",)
    opened = DataDir.open(data)
    assert opened.device_seed() == seed and opened.token() == token
    assert opened.keyring()[1].name == "till-1"
    for name in ("device.key", "network.token", "api.token"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600


def test_join_of_a_relay_writes_relay_true(tmp_path, tillmesh, admin):
    bundle = add_device(tillmesh, admin, "anchor", "relay", branch="cloud")
    assert tillmesh("join", bundle, "--data", tmp_path / "a", "--relay").code == 0
    assert load_config(tmp_path / "a" / "node.toml").relay is True
    bundle = add_device(tillmesh, admin, "anchor-2", "relay", branch="cloud")
    result = tillmesh("join", bundle, "--data", tmp_path / "b")  # a relay is a relay, flag or not
    assert result.code == 0 and "relay" in result.out
    assert load_config(tmp_path / "b" / "node.toml").relay is True


def other_network_bundle() -> str:
    authority = Authority.create(seeded(11), T0)
    device = DeviceKey.generate(seeded(12))
    cert = authority.enroll(device.public, name="x", branch="b", roles=("cashier",), now_ms=T0)
    return make_join_bundle(authority.token(cert.number), device.seed)


@pytest.mark.parametrize("mangle, fragment", [
    (lambda b: b[:-10], "join bundle"),
    (lambda b: b + "x", "join bundle"),
    (lambda b: b.replace(JOIN_PREFIX, "tillmesh-join2:"), "tillmesh-join1:"),
    (lambda b: b[: len(JOIN_PREFIX) + 4] + "!" + b[len(JOIN_PREFIX) + 5:], "base64url"),
    (lambda b: "", "join bundle"),
    # A valid token with another device's seed: the certificate is not for that key.
    (lambda b: make_join_bundle(parse_join_bundle(b)[0], bytes(32)), "another device key"),
])
def test_join_refuses_a_bad_bundle_and_creates_nothing(tmp_path, tillmesh, admin, mangle, fragment):
    bundle = add_device(tillmesh, admin, "till-1")
    tillmesh("join", mangle(bundle), "--data", tmp_path / "data").refused(fragment)
    assert not (tmp_path / "data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin"]


@pytest.mark.parametrize("extra, fragment", [
    (["--relay"], "not as a relay"),
    (["--peer", "127.0.0.1:0"], "--peer"),
    (["--anchor", "nohost"], "--anchor"),
    (["--listen", "127.0.0.1:99999"], "--listen"),
])
def test_join_refuses_bad_flags_and_creates_nothing(tmp_path, tillmesh, admin, extra, fragment):
    bundle = add_device(tillmesh, admin, "till-1")
    tillmesh("join", bundle, "--data", tmp_path / "data", *extra).refused(fragment)
    assert not (tmp_path / "data").exists()


def test_join_refuses_an_existing_data_directory_and_leaves_it_alone(tmp_path, tillmesh, admin):
    first = add_device(tillmesh, admin, "till-1")
    second = add_device(tillmesh, admin, "till-2")
    data = tmp_path / "data"
    assert tillmesh("join", first, "--data", data).code == 0
    before = snapshot(data)
    tillmesh("join", second, "--data", data).refused("exists")
    assert snapshot(data) == before
    tillmesh("join", "-", "--data", tmp_path / "d2", stdin="").refused("stdin")
    tillmesh("join", other_network_bundle(), "--data", data).refused("exists")


# --- revoke and import-authority ------------------------------------------------------------


@pytest.fixture
def joined(tmp_path, tillmesh, admin) -> Path:
    data = tmp_path / "till-1"
    assert tillmesh("join", add_device(tillmesh, admin, "till-1"), "--data", data).code == 0
    add_device(tillmesh, admin, "till-2")
    return data


def authority_head(data: Path) -> int:
    store = DataDir.open(data).store()
    try:
        return store.head(AUTHORITY_NUMBER).seq
    finally:
        store.close()


def test_revoke_prints_the_authority_feed_and_a_stopped_node_imports_it(tillmesh, admin, joined):
    held = authority_head(joined)
    result = tillmesh("revoke", "till-2", "--last-valid-seq", 3, "--dir", admin)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(AUTHORITY_BUNDLE_PREFIX)
    with AuthorityDir.open(admin) as opened:
        feed = len(opened.authority.feed)
        assert opened.authority.keyring.revocations == {2: 3}
        assert opened.authority.current_epoch == 1
    assert json.loads((admin / "devices.json").read_text())["till-2"]["revoked_after"] == 3
    imported = tillmesh("import-authority", "-", "--data", joined, stdin=lines[0])
    assert imported.code == 0, imported.err
    assert f"{feed - held} new entries of {feed}" in imported.out
    assert authority_head(joined) == feed
    again = tillmesh("import-authority", lines[0], "--data", joined)
    assert again.code == 0 and f"0 new entries of {feed}" in again.out
    # A tighter cutoff is allowed; a looser one or the same is refused.
    assert tillmesh("revoke", "till-2", "--last-valid-seq", 1, "--dir", admin).code == 0
    before = snapshot(admin)
    tillmesh("revoke", "till-2", "--last-valid-seq", 1, "--dir", admin).refused("revoked already")
    assert snapshot(admin) == before


@pytest.mark.parametrize("argv, fragment", [
    (["revoke", "nobody", "--last-valid-seq", "3"], "no device named 'nobody'"),
    (["revoke", "till-1", "--last-valid-seq", "-1"], ">= 0"),
    (["revoke", "till-1", "--last-valid-seq", "three"], "invalid int"),
    (["revoke", "till-1"], "--last-valid-seq"),
    (["revoke", "authority", "--last-valid-seq", "0"], "no device named"),
])
def test_revoke_refusals_change_nothing(tillmesh, admin, argv, fragment):
    add_device(tillmesh, admin, "till-1")
    before = snapshot(admin)
    tillmesh(*argv, "--dir", admin).refused(fragment)
    assert snapshot(admin) == before


def forked_bundle(admin: Path) -> str:
    """The admin directory's feed from before the node's own grant (seq 4) on, with other,
    validly signed entries: what an admin directory restored from an old copy would publish."""
    with AuthorityDir.open(admin) as opened:
        authority = opened.authority
        restored = Authority.restore(authority.key, authority.keyring.network_key, seeded(1), authority.feed[:3])
    restored.enroll(DeviceKey.generate(seeded(2)).public, name="other", branch="b", roles=("cashier",), now_ms=T0)
    return make_authority_bundle(restored.feed)


@pytest.mark.parametrize("bundle, fragment", [
    (lambda admin: "tillmesh-authority1:AAAA", "authority bundle"),
    (lambda admin: "tillmesh1:AAAA", "tillmesh-authority1:"),
    (lambda admin: make_authority_bundle(Authority.create(seeded(5), T0).feed), "another network"),
    (forked_bundle, "forked"),
])
def test_import_authority_refuses_what_is_not_this_network_feed_and_stores_nothing(tillmesh, admin, joined, bundle,
                                                                                  fragment):
    text = bundle(admin)
    before = authority_head(joined)
    tillmesh("import-authority", text, "--data", joined).refused(fragment)
    assert authority_head(joined) == before


def test_import_authority_needs_a_data_directory(tmp_path, tillmesh, admin):
    with AuthorityDir.open(admin) as opened:
        bundle = opened.authority_bundle()
    tillmesh("import-authority", bundle, "--data", tmp_path / "none").refused("no data directory")


# --- against a running node's API -----------------------------------------------------------


class FakeNode:
    def __init__(self, token: str) -> None:
        self.api_token = token
        self.imported: list[list[bytes]] = []

    async def commit(self, ops):  # pragma: no cover - not used here
        raise AssertionError

    def value(self, key):  # pragma: no cover
        raise AssertionError

    def status(self) -> dict:
        return {"device": 1, "name": "till-1", "digest": "ab12", "vector": {"0": 5, "1": 3},
                "peers": [{"device": 2, "state": "live"}], "quarantined": []}

    def metrics(self) -> bytes:  # pragma: no cover
        return b""

    async def import_authority(self, entries: list[bytes]) -> int:
        self.imported.append(entries)
        return 2


class Served:
    """The API app over a fake node, served on 127.0.0.1 by ``serve_api`` in a thread of its own
    (the CLI under test is synchronous)."""

    def __init__(self, node: FakeNode, data: Path) -> None:
        self.node, self.data = node, data
        self.ready = threading.Event()
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(serve_api, build_app(self.node), "127.0.0.1", 0, self.stop.wait)
            self.ready.set()

    def __enter__(self) -> "Served":
        self.thread.start()
        assert self.ready.wait(timeout=20), "the API did not come up"
        (self.data / "ports.json").write_text(json.dumps({"peer": 1, "api": self.port}))
        return self

    def __exit__(self, *exc) -> None:
        trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


def api_token(data: Path) -> str:
    return (data / "api.token").read_text().strip()


def test_status_reads_the_running_node_through_its_api(tillmesh, joined):
    with Served(FakeNode(api_token(joined)), joined):
        as_json = tillmesh("status", "--data", joined, "--json")
        text = tillmesh("status", "--data", joined)
    assert as_json.code == 0 and json.loads(as_json.out) == FakeNode("").status()
    assert text.code == 0 and "digest: ab12" in text.out and "state=live" in text.out
    assert api_token(joined) not in as_json.out + text.out + text.err


def test_status_refusals(tmp_path, tillmesh, joined):
    tillmesh("status", "--data", joined).refused("ports.json", "running")
    tillmesh("status", "--data", tmp_path / "none").refused("no data directory")
    with Served(FakeNode("another-token-of-enough-length"), joined):
        tillmesh("status", "--data", joined).refused("401", "unauthorized")
    (joined / "ports.json").write_text("{\"api\": 1}")  # nobody listens on port 1
    tillmesh("status", "--data", joined).refused("cannot reach")
    (joined / "ports.json").write_text("garbage")
    tillmesh("status", "--data", joined).refused("unreadable")


def test_import_authority_goes_through_the_api_while_the_node_runs(tillmesh, admin, joined):
    with AuthorityDir.open(admin) as opened:
        bundle = opened.authority_bundle()
        feed = len(opened.authority.feed)
    node = FakeNode(api_token(joined))
    before = authority_head(joined)
    with DataDir.open(joined).lock(), Served(node, joined):  # the lock, as a running node holds it
        result = tillmesh("import-authority", bundle, "--data", joined)
    assert result.code == 0, result.err
    assert "2 new entries" in result.out
    assert len(node.imported) == 1 and len(node.imported[0]) == feed
    assert authority_head(joined) == before  # the database was left to the node


# --- run and anchor -------------------------------------------------------------------------


def test_run_without_a_runtime_is_one_clear_line(tillmesh, joined, monkeypatch):
    monkeypatch.setitem(sys.modules, "node.runtime", None)
    tillmesh("run", "--data", joined).refused("no node runtime")
    tillmesh("anchor", "--data", joined).refused("no node runtime")


def test_run_and_anchor_call_run_node(tillmesh, joined, monkeypatch):
    calls = []
    fake = types.ModuleType("node.runtime")
    fake.run_node = lambda path, *, relay: calls.append((Path(path), relay)) or 0
    monkeypatch.setitem(sys.modules, "node.runtime", fake)
    assert tillmesh("run", "--data", joined).code == 0
    assert tillmesh("anchor", "--data", joined).code == 0
    assert calls == [(joined, False), (joined, True)]


def test_run_refuses_a_bad_setting_before_starting(tmp_path, tillmesh, joined, monkeypatch):
    calls = []
    fake = types.ModuleType("node.runtime")
    fake.run_node = lambda path, *, relay: calls.append(path) or 0
    monkeypatch.setitem(sys.modules, "node.runtime", fake)
    (joined / "node.toml").write_text("[peers]\nanchor = [\"127.0.0.1:7100\"]\n")
    tillmesh("run", "--data", joined).refused("peers.anchor")
    tillmesh("run", "--data", tmp_path / "none").refused("no data directory")
    assert calls == []


def test_a_refusal_from_the_node_is_one_line(tillmesh, joined, monkeypatch):
    from node.storage import DataDirLocked

    def locked(path, *, relay):
        raise DataDirLocked(f"data directory {path} is in use by another node process")

    fake = types.ModuleType("node.runtime")
    fake.run_node = locked
    monkeypatch.setitem(sys.modules, "node.runtime", fake)
    tillmesh("run", "--data", joined).refused("in use")


# --- the command line itself ----------------------------------------------------------------


def test_help_and_usage(tillmesh):
    assert tillmesh("--help").code == 0
    tillmesh().refused("required")
    tillmesh("nonsense").refused("invalid choice")
    tillmesh("network").refused("required")
