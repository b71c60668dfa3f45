"""What the CLI's command modules share: finding the controllers, calling them.

Calls go through gantry.client.LeaderChannel, so any controller address may
be given; the leader is found and followed. Controller errors become one
line for the user (CLIError) here, once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from gantry.cli.errors import CLIError
from gantry.client import ControllerError, LeaderChannel, parse_addresses
from gantry.config import state_dir_from

T = TypeVar("T")

DEFAULT_CONTROLLER = "127.0.0.1:17070"

# One table: controller status code -> CLI exit code.
EXIT_CODES = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.INVALID_ARGUMENT: 4,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.ABORTED: 6,
    grpc.StatusCode.UNAVAILABLE: 7,
    grpc.StatusCode.FAILED_PRECONDITION: 7,
    grpc.StatusCode.DEADLINE_EXCEEDED: 7,
}


def controller_addresses(args: argparse.Namespace) -> list[str]:
    """--controller flags, else $GANTRY_CONTROLLER, else the local cluster's."""
    given: Sequence[str] = getattr(args, "controller", None) or []
    if given:
        return parse_addresses(given)
    if os.environ.get("GANTRY_CONTROLLER"):
        return parse_addresses([os.environ["GANTRY_CONTROLLER"]])
    saved = state_dir_from(os.environ, getattr(args, "state_dir", None)) / "cluster.json"
    try:
        data = json.loads(Path(saved).read_text())
        return [f"{data['host']}:{data['controller_port']}"]
    except (OSError, ValueError, KeyError):
        return [DEFAULT_CONTROLLER]


def call(
    args: argparse.Namespace,
    fn: Callable[[grpc.aio.Channel], Awaitable[T]],
    *,
    deadline: float = 15.0,
) -> T:
    """Run one call against the leading controller; errors become CLIError."""

    async def go() -> T:
        leader = LeaderChannel(controller_addresses(args))
        try:
            return await leader.call(fn, deadline=deadline)
        finally:
            await leader.close()

    try:
        return asyncio.run(go())
    except ControllerError as exc:
        code = EXIT_CODES.get(exc.code, 1) if exc.code else 7
        raise CLIError(str(exc).splitlines()[0] if str(exc) else "controller error", code) from None


def stream(args: argparse.Namespace, fn: Callable[[grpc.aio.Channel], Awaitable[None]]) -> None:
    """Run a long call (watch, follow) until it ends or the user interrupts."""
    try:
        call(args, fn, deadline=24 * 3600.0)
    except KeyboardInterrupt:
        pass
