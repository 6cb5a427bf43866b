"""The ``tillmesh`` command line: set up a network, enroll devices, run and inspect nodes.

Admin commands (``network init``, ``device add``, ``revoke``) work on an authority directory
that stays on the owner's admin machine; node commands (``join``, ``run``, ``anchor``,
``import-authority``, ``status``) work on one device's data directory.

The people who type these are installers and shop owners, not developers, so every refusal
is one line on stderr, ``tillmesh: error: ...``, saying what was wrong and what to do, with
exit status 2; and a refused command changes nothing (files are written to a temporary
name and renamed into place only once everything has been checked). Keys are never printed
or logged; the two exceptions are deliberate and said so in ``--help``: ``device add`` prints
the new device's join bundle, a secret meant to be carried to that device only, which
``join`` reads (from stdin when given ``-``, so it does not end up in the shell history or
in ``ps``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

from crdt_types import TillmeshError

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 2
API_TIMEOUT_S = 10.0


class UsageError(Exception):
    """A command line that cannot be carried out; the message is the one line to print."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line (``UsageError``), not usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _address(what: str, *, allow_any_port: bool):
    def parse(text: str) -> str:
        from .config import ConfigError, parse_address

        try:
            parse_address(text, what, allow_any_port=allow_any_port)
        except ConfigError as exc:
            message = str(exc)
            raise argparse.ArgumentTypeError(message.removeprefix(f"{what}: ")) from None
        return text

    parse.__name__ = "HOST:PORT"
    return parse


def _parser() -> _Parser:
    from gossip import ROLES

    parser = _Parser(prog="tillmesh", description="Offline-first replication node for shops.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    network = commands.add_parser("network", help="create a network (admin machine)")
    network_commands = network.add_subparsers(dest="network_command", required=True, metavar="SUBCOMMAND",
                                              parser_class=_Parser)
    init = network_commands.add_parser(
        "init", help="create a new network in a new authority directory",
        description="Create a new network: its authority key, network key and authority feed, in a new "
                    "directory. Keep that directory on the admin machine, private and backed up: whoever holds "
                    "authority.key decides who belongs to the network.")
    init.add_argument("--dir", required=True, type=Path, metavar="ADMIN", help="the authority directory to create")

    device = commands.add_parser("device", help="enroll devices (admin machine)")
    device_commands = device.add_subparsers(dest="device_command", required=True, metavar="SUBCOMMAND",
                                            parser_class=_Parser)
    add = device_commands.add_parser(
        "add", help="enroll a device and print its join bundle (a SECRET)",
        description="Enroll a new device under a fresh key and print ONE line: its join bundle. The bundle is a "
                    "SECRET: it holds the device's private key and the network key. Carry it to that device "
                    "only (e.g. `tillmesh device add ... | ssh till tillmesh join - --data DIR`) and do not "
                    "store it anywhere else.")
    add.add_argument("name", help="the device's name, unique in the network (e.g. till-3)")
    add.add_argument("--branch", required=True, help="the branch it belongs to (e.g. central)")
    add.add_argument("--role", required=True, action="append", choices=sorted(ROLES), dest="roles",
                     help="a role; repeat for several. `relay` makes a blind anchor that cannot read data")
    add.add_argument("--dir", required=True, type=Path, metavar="ADMIN", help="the authority directory")

    revoke = commands.add_parser(
        "revoke", help="revoke a device and print the authority bundle that carries it",
        description="Revoke a device after its entry LAST_VALID_SEQ (its later entries are dropped everywhere) "
                    "and roll a new data key it cannot open. Prints an authority bundle (not secret): give it "
                    "to any one node with `tillmesh import-authority`; the others learn it from that node.")
    revoke.add_argument("name", help="the device's name")
    revoke.add_argument("--last-valid-seq", required=True, type=int, metavar="N",
                        help="its last entry that stays valid (0: none)")
    revoke.add_argument("--dir", required=True, type=Path, metavar="ADMIN", help="the authority directory")

    join = commands.add_parser(
        "join", help="create this device's data directory from its join bundle",
        description="Create this device's data directory from the join bundle `tillmesh device add` printed. "
                    "Pass `-` to read the bundle from stdin (it is a secret: on the command line it would be "
                    "in the shell history and visible in `ps`).")
    join.add_argument("bundle", metavar="BUNDLE", help="the join bundle, or - to read it from stdin")
    join.add_argument("--data", required=True, type=Path, metavar="DIR", help="the data directory to create")
    join.add_argument("--listen", type=_address("--listen", allow_any_port=True), metavar="HOST:PORT",
                      help="where peers connect (default 127.0.0.1:0, any free port)")
    join.add_argument("--api-listen", type=_address("--api-listen", allow_any_port=True), metavar="HOST:PORT",
                      help="where the local API listens (default 127.0.0.1:0, any free port)")
    join.add_argument("--peer", action="append", default=[], type=_address("--peer", allow_any_port=False),
                      metavar="HOST:PORT", help="a device to keep a link to; repeat for several")
    join.add_argument("--anchor", action="append", default=[], type=_address("--anchor", allow_any_port=False),
                      metavar="HOST:PORT", help="an anchor to keep a link to; repeat for several")
    join.add_argument("--relay", action="store_true", help="this device is a relay (enrolled with --role relay)")

    importer = commands.add_parser(
        "import-authority", help="bring an authority bundle (revocations, new devices) into a node",
        description="Take in the authority bundle `tillmesh revoke` printed. A running node takes it through "
                    "its local API; a stopped one directly into its database.")
    importer.add_argument("bundle", metavar="BUNDLE", help="the authority bundle, or - to read it from stdin")
    importer.add_argument("--data", required=True, type=Path, metavar="DIR", help="the node's data directory")

    run = commands.add_parser("run", help="run this device's node until SIGINT/SIGTERM")
    run.add_argument("--data", required=True, type=Path, metavar="DIR", help="the node's data directory")
    anchor = commands.add_parser("anchor", help="run this device's node as a blind relay (anchor)")
    anchor.add_argument("--data", required=True, type=Path, metavar="DIR", help="the node's data directory")

    status = commands.add_parser("status", help="show a running node's status (through its local API)")
    status.add_argument("--data", required=True, type=Path, metavar="DIR", help="the node's data directory")
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    demo = commands.add_parser(
        "demo", help="a small chain in real processes on 127.0.0.1: selling, a partition, a kill -9, converging",
        description="Start a small chain on this machine's loopback, each device its own `tillmesh run` or "
                    "`tillmesh anchor` process set up with the CLI; sell through the HTTP API, cut the basement "
                    "till off, charge a member whose rights are in another branch, kill a till mid-burst and "
                    "restart it, heal, and print every device's view. Leaves nothing running; writes "
                    "results/demo/ (summary.json, node logs). Exit 1 unless every member converged.")
    demo.add_argument("--in-process", action="store_true",
                      help="the deterministic demo instead: the engines in one process with virtual time")

    from simulations._cli import add_commands as add_sim_commands

    add_sim_commands(commands, _Parser)
    return parser


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _read_argument(value: str, what: str) -> str:
    """The argument itself, or one line of stdin for ``-``."""
    if value != "-":
        return value.strip()
    line = sys.stdin.readline()
    if not line.strip():
        raise UsageError(f"expected the {what} on stdin, got nothing")
    return line.strip()


# --- admin commands -------------------------------------------------------------------------


def _network_init(args: argparse.Namespace) -> int:
    from .admin import AuthorityDir

    with AuthorityDir.create(args.dir) as admin:
        network = admin.authority.network_id.hex()
    _say(f"created network {network} in {args.dir}")
    _note(f"keep {args.dir} on this machine, private and backed up: its authority.key decides who belongs to "
          f"the network. Next: `tillmesh device add NAME --branch B --role R --dir {args.dir}`")
    return EXIT_OK


def _device_add(args: argparse.Namespace) -> int:
    from .admin import AuthorityDir

    with AuthorityDir.open(args.dir) as admin:
        bundle = admin.add_device(args.name, branch=args.branch, roles=args.roles)
        info = admin.devices[args.name]
    _say(bundle)
    _note(f"enrolled {info.name} as device {info.number} (branch {info.branch}, roles {', '.join(info.roles)}). "
          f"The line above is a SECRET join bundle for that device only: `tillmesh join - --data DIR` there.")
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from .admin import AuthorityDir

    with AuthorityDir.open(args.dir) as admin:
        number = admin.devices[args.name].number if args.name in admin.devices else None
        bundle = admin.revoke(args.name, args.last_valid_seq)
        epoch = admin.authority.current_epoch
    _say(bundle)
    _note(f"revoked {args.name} (device {number}) after seq {args.last_valid_seq}; data-key epoch {epoch} rolled. "
          f"Give the line above to any node: `tillmesh import-authority - --data DIR`.")
    return EXIT_OK


# --- node commands --------------------------------------------------------------------------


def _join(args: argparse.Namespace) -> int:
    from gossip import DeviceKey, import_token

    from .admin import parse_join_bundle
    from .config import NodeConfig, render_config
    from .storage import DataDir

    token, seed = parse_join_bundle(_read_argument(args.bundle, "join bundle"))
    keyring, cert, _ = import_token(token, DeviceKey(seed))
    if args.relay and not cert.is_relay:
        raise UsageError(f"--relay: this bundle enrolls {cert.name} with roles {', '.join(cert.roles)}, not as a "
                         f"relay; leave --relay out, or enroll a relay with `device add --role relay`")
    config = NodeConfig(listen=args.listen or NodeConfig.listen, api_listen=args.api_listen or NodeConfig.api_listen,
                        peers=tuple(args.peer), anchors=tuple(args.anchor), relay=cert.is_relay)
    DataDir.create(args.data, token=token, device_seed=seed, config_text=render_config(config))
    kind = "relay" if cert.is_relay else "member"
    command = "anchor" if cert.is_relay else "run"
    _say(f"joined network {keyring.network_id.hex()} as device {cert.number} ({cert.name}, branch {cert.branch}, "
         f"{kind}); data directory {args.data}")
    _note(f"start it with `tillmesh {command} --data {args.data}`; settings are in {args.data / 'node.toml'}")
    return EXIT_OK


def _api_base(data: Path) -> tuple[str, str]:
    """The URL of a running node's API and its token, from ``ports.json``, ``api.token`` and
    ``node.toml``."""
    from .config import load_config

    if not data.is_dir():
        raise UsageError(f"no data directory at {data} (create one with `tillmesh join`)")
    config = load_config(data / "node.toml")
    if not config.api_enabled:
        raise UsageError(f"the node's API is disabled in {data / 'node.toml'} ([api] enabled = false)")
    try:
        ports = json.loads((data / "ports.json").read_text())
    except FileNotFoundError:
        raise UsageError(f"{data / 'ports.json'} is missing: is the node running? "
                         f"(`tillmesh run --data {data}`)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{data / 'ports.json'} is unreadable ({exc})") from None
    port = ports.get("api") if isinstance(ports, dict) else None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise UsageError(f"{data / 'ports.json'} names no API port: is the node running with its API?")
    try:
        token = (data / "api.token").read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read {data / 'api.token'} ({exc.strerror})") from None
    host = config.api_address[0]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return (f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"), token


def _api_call(data: Path, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to the node's API; returns (status, decoded JSON body).

    Raises:
        UsageError: the node cannot be reached or answers with something that is not JSON.
    """
    base, token = _api_base(data)
    payload = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=payload, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    # No proxy: the node is on this machine, whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=API_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach the node's API at {base} ({reason}): is the node running?") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise UsageError(f"the node's API at {base} answered {status} with something that is not JSON") from None


def _refusal(status: int, body: Any) -> str:
    if isinstance(body, dict):
        return f"{status} {body.get('code', '')}: {body.get('detail', '')}".strip()
    return str(status)


def _show(value: Any, indent: str = "") -> list[str]:
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            if item and all(not isinstance(v, (dict, list)) for v in item.values()):
                lines.append(f"{indent}{key}: " + ", ".join(f"{k}={v}" for k, v in item.items()))
            else:
                lines.append(f"{indent}{key}:" + ("" if item else " none"))
                lines += _show(item, indent + "  ")
        elif isinstance(item, list):
            if all(isinstance(v, dict) for v in item) and item:
                lines.append(f"{indent}{key}: {len(item)}")
                for entry in item:
                    lines.append(f"{indent}  - " + " ".join(f"{k}={v}" for k, v in entry.items()))
            else:
                lines.append(f"{indent}{key}: " + (", ".join(str(v) for v in item) if item else "none"))
        else:
            lines.append(f"{indent}{key}: {item}")
    return lines


def _status(args: argparse.Namespace) -> int:
    status, body = _api_call(args.data, "GET", "/status")
    if status != 200:
        raise UsageError(f"the node refused the status request: {_refusal(status, body)}")
    if args.json:
        _say(json.dumps(body, indent=2, sort_keys=True))
    elif isinstance(body, dict):
        _say("\n".join(_show(body)))
    else:
        _say(str(body))
    return EXIT_OK


def _import_offline(data_dir: Any, entries: list[bytes]) -> int:
    """Take ``entries`` into a stopped node's store through an engine, all or nothing."""
    from gossip import AUTHORITY_NUMBER, Engine, Now

    from .admin import now_ms
    from .pos import POS_ESCROW, POS_POLICY, POS_SCHEMA

    keyring, _, _ = data_dir.keyring()
    store = data_dir.store()
    try:
        for seq, data in enumerate(entries, start=1):
            held = store.get(AUTHORITY_NUMBER, seq)
            if held is not None and held != data:
                # Taken in, this would be evidence of a forked authority feed: every node
                # would quarantine the authority. Refuse it here, before anything is stored.
                raise UsageError(f"the bundle's authority entry {seq} differs from the one this node holds: the "
                                 f"authority feed forked (was the admin directory restored from an old copy?)")
        now = Now(int(time.monotonic() * 1000), now_ms())
        engine = Engine(keyring, store, random_bytes=os.urandom, now=now, policy=POS_POLICY, schema=POS_SCHEMA,
                        escrow=POS_ESCROW)
        try:
            new = engine.import_entries(entries, now)
        except BaseException:
            store.discard_unflushed()  # the entries before a bad one are not kept either
            raise
        store.flush()
        return new
    finally:
        store.close()


def _import_authority(args: argparse.Namespace) -> int:
    from .admin import parse_authority_bundle, verify_authority_entries
    from .storage import DataDir, DataDirLocked

    text = _read_argument(args.bundle, "authority bundle")
    entries = parse_authority_bundle(text)
    data_dir = DataDir.open(args.data)
    keyring, _, _ = data_dir.keyring()
    verify_authority_entries(entries, keyring.authority_key, keyring.network_key)
    try:
        lock = data_dir.lock()
    except DataDirLocked:
        status, body = _api_call(args.data, "POST", "/authority", {"bundle": text})
        if status != 200:
            raise UsageError(f"the running node refused the bundle: {_refusal(status, body)}") from None
        new = body.get("imported") if isinstance(body, dict) else None
    else:
        with lock:
            new = _import_offline(data_dir, entries)
    _say(f"authority feed imported into {args.data}: {new} new entries of {len(entries)}")
    return EXIT_OK


def _run(args: argparse.Namespace, *, relay: bool) -> int:
    from .config import load_config

    try:
        from .runtime import run_node
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.runtime":
            raise
        raise UsageError("this installation has no node runtime (node/runtime.py is missing)") from None
    if not args.data.is_dir():
        raise UsageError(f"no data directory at {args.data} (create one with `tillmesh join`)")
    load_config(args.data / "node.toml")  # a bad setting is refused before anything starts
    try:
        status = run_node(args.data, relay=relay)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK if status is None else int(status)


def _demo(args: argparse.Namespace) -> int:
    if args.in_process:
        from ._demo import run

        return 0 if run(sys.stdout) else 1
    from ._demo_chain import run as run_chain

    return run_chain(sys.stdout)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "network":
        return _network_init(args)
    if args.command == "device":
        return _device_add(args)
    if args.command == "revoke":
        return _revoke(args)
    if args.command == "join":
        return _join(args)
    if args.command == "import-authority":
        return _import_authority(args)
    if args.command in ("run", "anchor"):
        return _run(args, relay=args.command == "anchor")
    if args.command == "status":
        return _status(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "sim":
        from simulations._cli import run_command

        return run_command(args)
    raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses it first


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run one ``tillmesh`` command.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` by default).
    Returns:
        The exit status: 0 done, 2 refused (one line on stderr, nothing changed); ``demo``
        returns 1 when the tills did not converge, ``run`` whatever the node's exit was.
    """
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        return _dispatch(args)
    except (UsageError, TillmeshError, OSError) as exc:
        _note(f"tillmesh: error: {_describe(exc)}")
    except BaseExceptionGroup as group:  # a refusal raised inside the node's nursery
        leaves = _leaves(group)
        known = [e for e in leaves if isinstance(e, (UsageError, TillmeshError, OSError))]
        if not known or len(known) != len([e for e in leaves if not isinstance(e, KeyboardInterrupt)]):
            raise
        _note(f"tillmesh: error: {_describe(known[0])}")
    return EXIT_ERROR


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, TillmeshError):
        where = f" ({exc.filename})" if exc.filename else ""
        return _one_line(f"{exc.strerror or exc}{where}")
    return _one_line(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
