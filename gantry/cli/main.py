"""Entry point of the `gantry` command: parses arguments, dispatches, maps errors.

Each command group lives in its own module under gantry/cli/ and exposes
`register(subparsers)`, which adds its sub-commands with `func` set to a
callable taking the parsed namespace and returning an exit code. Errors
reach the user as one line on stderr and a non-zero exit code, never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gantry.cli.errors import CLIError

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "gantry.cli.cluster",
    "gantry.cli.deploy",
    "gantry.cli.rollout",
    "gantry.cli.logs",
    "gantry.cli.images",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gantry", description="Gantry: a container orchestrator.")
    parser.add_argument(
        "--state-dir", help="state directory (default $GANTRY_STATE_DIR or /var/lib/gantry)"
    )
    parser.add_argument(
        "--controller",
        action="append",
        help="controller address host:port; repeat for several (default from the local cluster)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    # The global options are accepted after the command too: `gantry up --state-dir X`.
    for sub in subparsers.choices.values():
        if not any("--state-dir" in a.option_strings for a in sub._actions):
            sub.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if not any("--controller" in a.option_strings for a in sub._actions):
            sub.add_argument(
                "--controller", action="append", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
