"""Two controllers: the standby redirects, and takes over within the TTL when the leader dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import pytest
from ctlharness import Api, Fleet, deployment, leader_of, wait_for

from gantry.v1 import cluster_pb2, cluster_pb2_grpc

TTL = 5


async def test_killing_the_leader_hands_over_and_work_goes_on(controllers) -> None:
    c1 = controllers("c1", ttl=TTL)
    await wait_for(lambda: _leads(c1.address), deadline=20, what="c1 leads")
    c2 = controllers("c2", ttl=TTL)
    both = [c1.address, c2.address]
    await wait_for(lambda: _follows(c2.address, c1.address), deadline=20, what="c2 stands by")

    async with grpc.aio.insecure_channel(c2.address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await cluster_pb2_grpc.ClusterStub(ch).List(cluster_pb2.ListRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == f"not leader; leader={c1.address}"

    async with Fleet() as fleet:
        for n in ("n1", "n2"):
            fleet.agent(n, both)
        api = Api(fleet.client(both))
        await api.apply(deployment("web", 2))
        await wait_for(lambda: api.converged("web", 2), deadline=30, what="2 ready")
        before = {r.name for r in await api.replicas("web")}

        killed = time.monotonic()
        c1.kill9()
        # Within the TTL (the lease expires 3.3-5 s after the last refresh), plus the
        # new term's fsynced etcd writes: a generous deadline on a shared machine.
        await wait_for(lambda: _leads(c2.address), deadline=2 * TTL, what="c2 takes over")
        print(f"handover after kill -9: {time.monotonic() - killed:.2f}s (TTL {TTL}s)")

        await api.scale("web", 4)
        await wait_for(lambda: api.converged("web", 4), deadline=40, what="4 ready under c2")
        after = {r.name for r in await api.replicas("web")}
        assert len(after) == 4 and before <= after, "a controller failover moves no replica"
        for node in ("n1", "n2"):
            events = (await api.describe(node, kind="node")).events
            assert not any(e.reason == "NodeNotReady" for e in events), f"{node} was never lost"


async def test_graceful_stop_hands_over_at_once(controllers) -> None:
    c1 = controllers("c1", ttl=TTL)
    await wait_for(lambda: _leads(c1.address), deadline=20, what="c1 leads")
    c2 = controllers("c2", ttl=TTL)
    await wait_for(lambda: _follows(c2.address, c1.address), deadline=20, what="c2 stands by")
    await asyncio.to_thread(c1.stop)  # SIGTERM: the lease is revoked on the way out
    assert c1.svc is not None and c1.svc.proc.returncode == 0, "an orderly exit"
    await wait_for(lambda: _leads(c2.address), deadline=TTL + 3, what="c2 takes over")


async def _leads(address: str) -> bool:
    return (await leader_of(address)).is_leader


async def _follows(address: str, leader: str) -> bool:
    resp = await leader_of(address)
    return not resp.is_leader and resp.leader_address == leader


async def test_a_paused_leader_is_deposed_and_steps_down(controllers) -> None:
    c1 = controllers("c1", ttl=TTL)
    await wait_for(lambda: _leads(c1.address), deadline=20, what="c1 leads")
    c2 = controllers("c2", ttl=TTL)
    both = [c1.address, c2.address]
    async with Fleet() as fleet:
        for n in ("n1", "n2"):
            fleet.agent(n, both)
        api = Api(fleet.client(both))
        await api.apply(deployment("web", 2))
        await wait_for(lambda: api.converged("web", 2), deadline=30, what="2 ready")
        assert c1.svc is not None
        os.kill(c1.svc.pid, signal.SIGSTOP)  # a long GC pause, a frozen VM...
        try:
            await wait_for(lambda: _leads(c2.address), deadline=TTL + 5, what="c2 takes over")
            await api.scale("web", 3)
            await wait_for(lambda: api.converged("web", 3), deadline=30, what="3 ready under c2")
        finally:
            os.kill(c1.svc.pid, signal.SIGCONT)
        await wait_for(
            lambda: _follows(c1.address, c2.address), deadline=TTL + 5, what="c1 steps down"
        )
        await api.scale("web", 1)
        await wait_for(lambda: api.converged("web", 1), deadline=30, what="1 ready")
        assert (await api.get("web")).spec.replicas == 1
