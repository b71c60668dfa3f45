from __future__ import annotations

from ctlharness import Fleet, wait_for

from gantry.v1 import cluster_pb2, cluster_pb2_grpc, types_pb2


async def test_smoke(controllers) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        fleet.agent("n1", [c1.address])
        chan = fleet.client([c1.address])
        dep = types_pb2.Deployment(api_version="gantry/v1", kind="Deployment")
        dep.metadata.name = "web"
        dep.spec.replicas = 3
        dep.spec.template.image = "busybox"
        resp = await chan.call(
            lambda ch: cluster_pb2_grpc.ClusterStub(ch).Apply(
                cluster_pb2.ApplyRequest(deployments=[dep])
            )
        )
        assert resp.results[0].action == "created"

        async def ready():
            d = await chan.call(
                lambda ch: cluster_pb2_grpc.ClusterStub(ch).Get(cluster_pb2.GetRequest(name="web"))
            )
            return d.status.ready_replicas == 3 and d

        d = await wait_for(ready, deadline=30)
        print(d)
