"""`python -m controller`: run one controller until SIGTERM or SIGINT.

    python -m controller --listen 127.0.0.1:7070 --metrics 127.0.0.1:7071 \
        --etcd 127.0.0.1:2379 --id c1 [--node-grace 3] [--leader-ttl 5] [--config FILE]

Settings: defaults < FILE [controller] < GANTRY_CONTROLLER_* < flags. Signals
only set a flag; shutdown then runs in order (see controller.server).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from controller.server import Controller
from controller.settings import ControllerSettings
from gantry.config import ConfigError, load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m controller", description="Gantry controller")
    p.add_argument("--config", type=Path, help="TOML file with a [controller] table")
    p.add_argument("--listen", help="gRPC host:port (Cluster, Nodes, Discovery, health)")
    p.add_argument("--advertise", help="address clients reach this controller at")
    p.add_argument("--metrics", help="/metrics host:port ('' disables)")
    p.add_argument("--etcd", help="etcd endpoints host:port[,host:port]")
    p.add_argument("--id", help="this controller's id in the election")
    p.add_argument("--node-grace", type=float, dest="node_grace")
    p.add_argument("--leader-ttl", type=int, dest="leader_ttl")
    p.add_argument("--node-ttl", type=int, dest="node_ttl")
    p.add_argument("--drain-seconds", type=float, dest="drain_seconds")
    p.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return p.parse_args(argv)


async def serve(settings: ControllerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    controller = Controller(settings)
    try:
        await controller.start()
    except BaseException:
        await controller.stop(grace=0.5)
        raise
    try:
        await stop.wait()
    finally:
        await controller.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {
        k: getattr(args, k)
        for k in (
            "listen",
            "advertise",
            "metrics",
            "etcd",
            "id",
            "node_grace",
            "leader_ttl",
            "node_ttl",
            "drain_seconds",
        )
    }
    try:
        settings = load_settings(
            ControllerSettings, section="controller", file=args.config, overrides=overrides
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
