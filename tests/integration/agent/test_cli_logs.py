"""`gantry logs`: finds the replica's node through a (fake) controller, reads the agent."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from agent import http
from agent.logs import LogStore
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, types_pb2


class FakeCluster(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, address: str, agent_url: str) -> None:
        self.address = address
        self.agent_url = agent_url

    async def Leader(self, request, context):  # type: ignore[no-untyped-def]
        return cluster_pb2.LeaderResponse(leader_address=self.address, is_leader=True)

    async def ListReplicas(self, request, context):  # type: ignore[no-untyped-def]
        return cluster_pb2.ListReplicasResponse(
            replicas=[
                types_pb2.Replica(name="web-b", deployment="web", node="n1", phase="Running"),
                types_pb2.Replica(name="web-a", deployment="web", node="n1", phase="Running"),
                types_pb2.Replica(name="lost-1", deployment="lost", node="n9", phase="Running"),
            ]
        )

    async def ListNodes(self, request, context):  # type: ignore[no-untyped-def]
        return cluster_pb2.ListNodesResponse(
            nodes=[types_pb2.Node(name="n1", agent_url=self.agent_url)]
        )


@contextlib.asynccontextmanager
async def setup(tmp_path: Path) -> AsyncIterator[str]:
    store = LogStore(tmp_path / "logs")
    for name in ("web-a", "web-b"):
        store.prepare(name).write_bytes(
            b"".join(b"%s line %d\n" % (name.encode(), i) for i in range(5))
        )
    runner, port = await http.start(types.SimpleNamespace(logs=store), "127.0.0.1", 0)  # type: ignore[arg-type]
    server = grpc.aio.server()
    gport = server.add_insecure_port("127.0.0.1:0")
    address = f"127.0.0.1:{gport}"
    cluster_pb2_grpc.add_ClusterServicer_to_server(
        FakeCluster(address, f"http://127.0.0.1:{port}"), server
    )
    await server.start()
    try:
        yield address
    finally:
        await server.stop(0)
        await runner.cleanup()


async def gantry_logs(address: str, *argv: str) -> tuple[int, str, str]:
    code = (
        "import argparse, sys\n"
        "from gantry.cli import logs\n"
        "from gantry.cli.errors import CLIError\n"
        "p = argparse.ArgumentParser(); p.add_argument('--controller', action='append')\n"
        "p.add_argument('--state-dir'); sub = p.add_subparsers(); logs.register(sub)\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "try:\n    sys.exit(a.func(a))\n"
        "except CLIError as e:\n    print(f'error: {e}', file=sys.stderr); sys.exit(e.code)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        "--controller",
        address,
        "logs",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_logs_of_replica_with_tail(tmp_path: Path) -> None:
    async with setup(tmp_path) as address:
        code, out, err = await gantry_logs(address, "web-b", "--tail", "2")
    assert code == 0, err
    assert out == "web-b line 3\nweb-b line 4\n"


async def test_logs_of_deployment_picks_first_replica(tmp_path: Path) -> None:
    async with setup(tmp_path) as address:
        code, out, err = await gantry_logs(address, "web")
    assert code == 0, err
    assert out.startswith("web-a line 0\n") and out.count("\n") == 5
    assert "web-a" in err


async def test_unknown_name_and_unknown_node(tmp_path: Path) -> None:
    async with setup(tmp_path) as address:
        code, _, err = await gantry_logs(address, "nope")
        assert code == 3 and err.strip() == "error: no replica or deployment named 'nope'"
        code, _, err = await gantry_logs(address, "lost-1")
        assert code == 3 and "node n9" in err and "Traceback" not in err
        code, _, err = await gantry_logs(address, "web-a", "--tail", "-1")
        assert code == 2 and "--tail" in err
