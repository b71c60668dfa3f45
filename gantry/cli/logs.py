"""`gantry logs NAME [-f] [--tail N]`: a replica's stdout and stderr.

Asks the leading controller where the replica runs (Cluster.ListReplicas,
then Cluster.ListNodes for that node's agent_url) and reads the node
agent's HTTP endpoint GET <agent_url>/logs/<replica>?tail=N&follow=1.
NAME is a replica, or a deployment (then its first replica by name).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import quote

import aiohttp

from gantry.cli.common import call
from gantry.cli.errors import CLIError
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, types_pb2


def pick_replica(name: str, replicas: list[types_pb2.Replica]) -> types_pb2.Replica:
    """The replica called NAME, else the first of deployment NAME (pure)."""
    for r in replicas:
        if r.name == name:
            return r
    mine = sorted((r for r in replicas if r.deployment == name), key=lambda r: r.name)
    if not mine:
        raise CLIError(f"no replica or deployment named {name!r}", 3)
    running = [r for r in mine if r.phase == "Running"] or mine
    return running[0]


def logs_url(agent_url: str, replica: str, *, tail: int | None, follow: bool) -> str:
    query = []
    if tail is not None:
        query.append(f"tail={tail}")
    if follow:
        query.append("follow=1")
    base = agent_url.rstrip("/")
    return f"{base}/logs/{quote(replica, safe='')}" + ("?" + "&".join(query) if query else "")


async def _read(url: str, out: object) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    text = (await resp.text()).strip().splitlines()
                    raise CLIError(
                        f"agent answered {resp.status}: {text[0] if text else ''}".strip(),
                        3 if resp.status == 404 else 1,
                    )
                async for chunk in resp.content.iter_any():
                    out.write(chunk)  # type: ignore[attr-defined]
                    out.flush()  # type: ignore[attr-defined]
    except aiohttp.ClientError as exc:
        raise CLIError(f"cannot read logs from {url}: {exc}", 7) from None


def cmd_logs(args: argparse.Namespace) -> int:
    if args.tail is not None and args.tail < 0:
        raise CLIError(f"--tail: expected a number >= 0, got {args.tail}", 2)
    replicas = call(
        args,
        lambda ch: cluster_pb2_grpc.ClusterStub(ch).ListReplicas(cluster_pb2.ListReplicasRequest()),
    ).replicas
    replica = pick_replica(args.name, list(replicas))
    if not replica.node:
        raise CLIError(f"replica {replica.name} is not placed on a node yet", 3)
    nodes = call(
        args, lambda ch: cluster_pb2_grpc.ClusterStub(ch).ListNodes(cluster_pb2.ListNodesRequest())
    ).nodes
    node = next((n for n in nodes if n.name == replica.node), None)
    if node is None or not node.agent_url:
        raise CLIError(f"node {replica.node} of replica {replica.name} has no agent URL", 3)
    if replica.name != args.name:
        print(f"(logs of replica {replica.name})", file=sys.stderr)
    url = logs_url(node.agent_url, replica.name, tail=args.tail, follow=args.follow)
    try:
        asyncio.run(_read(url, sys.stdout.buffer))
    except KeyboardInterrupt:
        pass
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("logs", help="print a replica's stdout and stderr")
    p.add_argument("name", help="replica name, or a deployment (its first replica)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--tail", type=int, help="only the last N lines")
    p.set_defaults(func=cmd_logs)
