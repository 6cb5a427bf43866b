"""The ``tillmesh`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tillmesh", description="Offline-first replication node for shops.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="three tills selling apart, then converging")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run

        return 0 if run(sys.stdout) else 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
