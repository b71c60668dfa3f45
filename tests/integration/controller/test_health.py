"""The controller's grpc.health.v1 follows etcd: NOT_SERVING while etcd is down, SERVING again after."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from ctlharness import Ctl, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gantry import procs

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return int(resp.status)


async def test_health_is_not_serving_while_etcd_is_down(tmp_path: Path) -> None:
    client_port, peer_port = procs.free_port(), procs.free_port()
    etcd = procs.start_etcd(tmp_path, client_port=client_port, peer_port=peer_port)
    port, mport = procs.free_port(), procs.free_port()
    address = f"127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "controller", "--listen", address,
        "--metrics", f"127.0.0.1:{mport}", "--etcd", etcd.extra["endpoint"], "--id", "h1",
    ]  # fmt: skip
    ctl = Ctl("h1", address, f"127.0.0.1:{mport}", argv, tmp_path / "h1.log", env=dict(os.environ))
    try:
        ctl.start()
        await wait_for(lambda: _is(address, SERVING), deadline=20, what="SERVING")

        etcd.stop()
        await wait_for(lambda: _is(address, NOT_SERVING), deadline=20, what="NOT_SERVING")
        service = "gantry.v1.Cluster"
        assert await _status(address, service) == NOT_SERVING

        etcd = procs.start_etcd(tmp_path, client_port=client_port, peer_port=peer_port)
        await wait_for(lambda: _is(address, SERVING), deadline=30, what="SERVING again")
        assert await _status(address, service) == SERVING
    finally:
        ctl.stop()
        etcd.stop()


async def _is(address: str, want: int) -> bool:
    return await _status(address) == want
