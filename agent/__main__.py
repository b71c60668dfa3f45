"""`python -m agent`: the node agent's entry point.

Order matters: the runtime (whose isolation core forks a pre-warmed helper)
starts BEFORE anything creates a thread (grpc, asyncio's default executor),
then asyncio.run serves the agent. SIGTERM/SIGINT only set the stop flag;
the agent then shuts down in order and leaves containers running unless
--stop-containers-on-exit is given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.settings import AgentSettings, SettingsError, split_host_port, validate
from gantry.config import ConfigError, load_settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent", description="Gantry node agent")
    p.add_argument("--config", type=Path, help="TOML file with an [agent] table")
    p.add_argument("--controller", help="controller addresses host:port[,host:port...]")
    p.add_argument("--name", help="node name (default: host name)")
    p.add_argument("--address", help="node address published ports answer on")
    p.add_argument("--listen", help="HTTP listen host:port (/metrics, /healthz, /logs)")
    p.add_argument("--agent-url", help="URL clients use for this agent's HTTP server")
    p.add_argument("--state-dir", help="state directory (containers, logs, images, bundles)")
    p.add_argument("--runtime", choices=("core", "runc"), help="isolation runtime")
    p.add_argument("--prefix", help="name prefix of every host object (<= 8 chars)")
    p.add_argument("--registry", help="default image registry host:port")
    p.add_argument("--subnet", help="container subnet of this node (CIDR)")
    p.add_argument("--labels", help="node labels k=v,k=v")
    p.add_argument("--cpu-millis", type=int, help="CPU capacity (default: measured)")
    p.add_argument("--memory-bytes", type=int, help="memory capacity (default: measured)")
    p.add_argument(
        "--stop-containers-on-exit",
        action="store_true",
        default=None,
        help="stop every container when the agent exits (default: leave them running)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING")
    return p


def settings_from(args: argparse.Namespace) -> AgentSettings:
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k != "config" and v is not None
    }
    return load_settings(AgentSettings, section="agent", file=args.config, overrides=overrides)


async def serve(settings: AgentSettings, runtime: Any) -> None:
    from agent import http
    from agent.agent import Agent, make_provisioner

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    provisioner = await make_provisioner(settings)
    agent = Agent(settings, runtime=runtime, provisioner=provisioner)
    host, port = split_host_port(settings.listen, what="listen")
    runner, agent.bound_port = await http.start(agent, host, port)
    logging.getLogger("gantry.agent").info(
        "agent %s serving http on %s:%d", agent.name, host, agent.bound_port
    )
    try:
        await agent.run(stop)
    finally:
        await runner.cleanup()
        close = getattr(provisioner, "close", None)
        if close is not None:
            await close()


def make_runtime(settings: AgentSettings) -> Any:
    """The runtime the settings name. The core forks its helper here: no thread may exist."""
    root = settings.state_dir / "runtime"
    if settings.runtime == "runc":
        from agent.runtime.runc import Runc

        return Runc(state_dir=root, prefix=settings.prefix)
    from agent.runtime.core import Core

    if threading.active_count() != 1:
        raise SystemExit("agent: a thread exists before the core's fork; refusing to fork")
    return Core.prefork(state_dir=root, prefix=settings.prefix)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        validate(settings)
    except (ConfigError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    runtime = make_runtime(settings)  # before any thread exists: the core forks its helper
    try:
        asyncio.run(serve(settings, runtime))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # start-up failures (network, state dir, runtime): one line
        logging.getLogger("gantry.agent").debug("agent failed", exc_info=True)
        print(f"error: agent: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        close = getattr(runtime, "close", None)
        if close is not None:
            close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
