"""Apply, scale and delete converge; unchanged applies write nothing; dry runs write nothing."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from ctlharness import Api, Fleet, deployment, etcd_snapshot, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gantry.client import ControllerError
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, discovery_pb2, discovery_pb2_grpc

STATE = ("/gantry/deployments/", "/gantry/replicas/", "/gantry/revisions/")


async def test_apply_scale_delete_converge(controllers, etcd: str) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        for n in ("n1", "n2", "n3"):
            fleet.agent(n, [c1.address])
        api = Api(fleet.client([c1.address]))
        await wait_for(lambda: api.nodes_ready(3), deadline=30, what="3 nodes ready")
        web = deployment("web", 3, host="web.test")
        assert await api.apply(web) == ["created"]
        await wait_for(lambda: api.converged("web", 3), deadline=30, what="3 ready replicas")
        nodes = {r.node for r in await api.replicas("web")}
        assert nodes == {"n1", "n2", "n3"}, "replicas of one deployment spread over the nodes"

        before = await etcd_snapshot(etcd, *STATE)
        assert await api.apply(web) == ["unchanged"]
        assert await etcd_snapshot(etcd, *STATE) == before, "an unchanged apply writes nothing"

        await api.scale("web", 5)
        await wait_for(lambda: api.converged("web", 5), deadline=30, what="scaled up to 5")
        await api.scale("web", 2)
        await wait_for(lambda: api.converged("web", 2), deadline=30, what="scaled down to 2")
        d = await api.get("web")
        assert (d.spec.replicas, d.status.ready_replicas, d.metadata.generation) == (2, 2, 3)

        await api.delete("web")
        await wait_for(
            lambda: _empty(etcd, "/gantry/replicas/web/"), deadline=30, what="replicas removed"
        )
        with pytest.raises(ControllerError) as err:
            await api.get("web")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert await _empty(etcd, "/gantry/revisions/web/"), "history goes with the deployment"
        assert await _empty(etcd, "/gantry/events/deployment/web/"), "and so do its events"


async def _empty(etcd: str, prefix: str) -> bool:
    return not await etcd_snapshot(etcd, prefix)


async def test_dry_run_and_configured(controllers, etcd: str) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        fleet.agent("n1", [c1.address])
        api = Api(fleet.client([c1.address]))
        assert await api.apply(deployment("api", 1), dry_run=True) == ["created"]
        assert await etcd_snapshot(etcd, *STATE) == {}, "a dry run writes nothing"
        assert await api.apply(deployment("api", 1)) == ["created"]
        await wait_for(lambda: api.converged("api", 1), deadline=30, what="1 ready replica")
        before = await etcd_snapshot(etcd, *STATE)
        assert await api.apply(deployment("api", 1, image="busybox:2"), dry_run=True) == [
            "configured"
        ]
        assert await etcd_snapshot(etcd, *STATE) == before
        # A template change is a new revision; the replica is replaced by one of it.
        assert await api.apply(deployment("api", 1, image="busybox:2")) == ["configured"]

        async def rolled() -> bool:
            reps = await api.replicas("api")
            return len(reps) == 1 and reps[0].revision == 2 and reps[0].ready

        await wait_for(rolled, deadline=30, what="rolled to revision 2")
        revs = await etcd_snapshot(etcd, "/gantry/revisions/api/")
        assert len(revs) == 2


async def test_health_reflection_metrics_discovery(controllers) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        fleet.agent("n1", [c1.address])
        api = Api(fleet.client([c1.address]))
        await api.apply(deployment("shop", 2, host="shop.test"))
        await wait_for(lambda: api.converged("shop", 2), deadline=30, what="2 ready")
        ch = fleet.client([c1.address]).channel(c1.address)
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        services = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for answer in services:
            listed = {s.name for s in answer.list_services_response.service}
        assert {"gantry.v1.Cluster", "gantry.v1.Nodes", "gantry.v1.Discovery"} <= listed
        stream = discovery_pb2_grpc.DiscoveryStub(ch).Watch(
            discovery_pb2.DiscoveryRequest(proxy_id="p1", admin_url="http://127.0.0.1:1/admin")
        )
        try:
            async for table in stream:
                shop = [r for r in table.routes if r.deployment == "shop"]
                if shop and len(shop[0].endpoints) == 2:
                    break
        finally:
            stream.cancel()
        assert shop[0].host == "shop.test"
        assert {e.address for e in shop[0].endpoints} == {"127.0.0.1"}
        assert all(e.port > 0 and not e.draining for e in shop[0].endpoints)
        text = await asyncio.to_thread(_fetch, f"http://{c1.metrics}/metrics")
        for name in (
            "gantry_controller_reconcile_seconds",
            "gantry_controller_queue_depth",
            "gantry_controller_scheduling_attempts_total",
            "gantry_controller_is_leader 1.0",
        ):
            assert name in text


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
        return r.read().decode()


async def test_unplaceable_replica_waits_with_reasons_and_is_placed_when_room_appears(
    controllers,
) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        fleet.agent("small", [c1.address], memory_bytes=32 * 2**20)
        api = Api(fleet.client([c1.address]))
        await api.apply(deployment("big", 1))  # asks for 64Mi

        async def explained() -> bool:
            d = await api.describe("big")
            return any(
                e.reason == "FailedScheduling" and "0/1 nodes: 1 insufficient memory" in e.message
                for e in d.events
            )

        await wait_for(explained, deadline=30, what="pending reason in describe")
        assert await api.replicas("big") == []

        ch = fleet.client([c1.address]).channel(c1.address)
        stream = cluster_pb2_grpc.ClusterStub(ch).Watch(
            cluster_pb2.WatchRequest(kind="replicas", name="big")
        )
        fleet.agent("roomy", [c1.address])
        try:
            async with asyncio.timeout(30):
                async for ev in stream:
                    if ev.type in ("ADDED", "MODIFIED") and ev.replica.ready:
                        break
        finally:
            stream.cancel()
        assert ev.replica.node == "roomy" and ev.replica.deployment == "big"
