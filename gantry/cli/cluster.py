"""`gantry up`, `gantry status`, `gantry down`: the local cluster."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gantry import launcher
from gantry.cli.errors import CLIError
from gantry.config import ConfigError, state_dir_from

PORT_FLAGS = (
    "etcd_port",
    "etcd_peer_port",
    "registry_port",
    "controller_port",
    "controller_metrics_port",
    "agent_port",
    "proxy_port",
    "proxy_admin_port",
)


def state_dir(args: argparse.Namespace) -> Path:
    return state_dir_from(os.environ, getattr(args, "state_dir", None))


def settings_from(args: argparse.Namespace) -> launcher.ClusterSettings:
    overrides = {
        name: getattr(args, name, None)
        for name in (*PORT_FLAGS, "prefix", "runtime", "proxy_workers")
    }
    if getattr(args, "no_images", False):
        overrides["build_images"] = False
    try:
        return launcher.load_cluster_settings(state_dir(args), overrides)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def cmd_up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    print(f"state directory {settings.state_dir}")
    try:
        launcher.up(settings)
    except launcher.LaunchError as exc:
        raise CLIError(str(exc)) from None
    print("cluster is up: 'gantry status' shows it, 'gantry down' stops it")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    rows = launcher.status(settings)
    print(f"{'PART':<11} {'STATE':<10} {'PID':>7}  LISTENS")
    for row in rows:
        state = "healthy" if row.healthy else ("unhealthy" if row.pid else "stopped")
        where = "  ".join(f"{k} {v}" for k, v in row.listens.items())
        print(f"{row.name:<11} {state:<10} {row.pid or '-':>7}  {where}")
    return 0 if all(r.healthy for r in rows) else 1


def cmd_down(args: argparse.Namespace) -> int:
    result = launcher.down(settings_from(args))
    if result.left:
        raise CLIError("could not remove: " + ", ".join(result.left))
    print("cluster is down")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser(
        "up", help="start a local cluster (etcd, registry, controller, agent, proxy)"
    )
    for name in PORT_FLAGS:
        up.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    up.add_argument(
        "--prefix", help="prefix of the host objects the agent creates (default gantry)"
    )
    up.add_argument("--runtime", choices=("core", "runc"), help="container runtime (default core)")
    up.add_argument(
        "--proxy-workers", type=int, dest="proxy_workers", help="proxy processes (default: cores)"
    )
    up.add_argument(
        "--no-images", action="store_true", help="do not build and push the demo images"
    )
    up.set_defaults(func=cmd_up)
    st = subparsers.add_parser("status", help="show the health of each part of the local cluster")
    st.set_defaults(func=cmd_status)
    dn = subparsers.add_parser("down", help="stop what 'gantry up' started and remove what it made")
    dn.set_defaults(func=cmd_down)
