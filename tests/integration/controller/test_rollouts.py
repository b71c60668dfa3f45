"""Rollouts through the Cluster API on a real etcd with fake agents: canary, promote, abort, undo."""

from __future__ import annotations

from ctlharness import Api, Fleet, deployment, endpoint_table, wait_for

from gantry.v1 import cluster_pb2


async def _route(api: Api, name: str):
    table = await endpoint_table(api.chan)
    return next(r for r in table.routes if r.deployment == name)


async def test_canary_promote_abort_and_undo(controllers) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        for n in ("n1", "n2"):
            fleet.agent(n, [c1.address])
        api = Api(fleet.client([c1.address]))
        await wait_for(lambda: api.nodes_ready(2), deadline=30, what="2 nodes")
        await api.apply(deployment("web", 2, host="web.test"))
        await wait_for(lambda: api.converged("web", 2), deadline=30, what="2 ready")

        resp = await api.call(
            "StartCanary",
            cluster_pb2.StartCanaryRequest(name="web", image="busybox:2", weight=20, replicas=1),
        )
        assert resp.rollout.type == "Canary" and resp.rollout.canary_revision == 2

        async def canary_serving() -> bool:
            reps = await api.replicas("web")
            canary = [r for r in reps if r.track == "canary" and r.ready]
            stable = [r for r in reps if r.track == "stable" and r.ready and r.revision == 1]
            route = await _route(api, "web")
            return len(canary) == 1 and len(stable) == 2 and route.canary_weight == 20

        await wait_for(
            canary_serving, deadline=40, what="canary beside the full stable set, weight 20"
        )
        canary = next(r for r in await api.replicas("web") if r.track == "canary")
        assert canary.template.image == "busybox:2" and canary.revision == 2

        await api.call("Promote", cluster_pb2.RolloutRequest(name="web"))

        async def promoted() -> bool:
            st = await api.call("RolloutStatus", cluster_pb2.RolloutRequest(name="web"))
            reps = await api.replicas("web")
            return (
                st.rollout.phase == "Succeeded"
                and len(reps) == 2
                and all(r.track == "stable" and r.revision == 2 and r.ready for r in reps)
            )

        await wait_for(promoted, deadline=60, what="stable set on revision 2")
        assert (await _route(api, "web")).canary_weight == 0
        assert (await api.get("web")).spec.template.image == "busybox:2"

        await api.call(
            "StartCanary", cluster_pb2.StartCanaryRequest(name="web", image="busybox:3", weight=10)
        )
        await wait_for(
            lambda: _has_canary(api, "web", 3), deadline=40, what="second canary running"
        )
        aborted = await api.call("Abort", cluster_pb2.RolloutRequest(name="web"))
        assert aborted.rollout.canary_weight == 0

        async def back_on_stable() -> bool:
            reps = await api.replicas("web")
            return (
                (await _route(api, "web")).canary_weight == 0
                and all(r.track == "stable" and r.revision == 2 for r in reps)
                and len(reps) == 2
            )

        await wait_for(back_on_stable, deadline=40, what="canary removed after abort")

        history = await api.call("RolloutHistory", cluster_pb2.RolloutRequest(name="web"))
        assert [r.revision for r in history.revisions] == [1, 2, 3]
        await api.call("RolloutUndo", cluster_pb2.RolloutUndoRequest(name="web", to_revision=1))

        async def undone() -> bool:
            reps = await api.replicas("web")
            return len(reps) == 2 and all(r.revision == 1 and r.ready for r in reps)

        await wait_for(undone, deadline=60, what="rolled back to revision 1")
        assert (await api.get("web")).spec.template.image == "busybox"


async def _has_canary(api: Api, name: str, revision: int) -> bool:
    reps = await api.replicas(name)
    return any(r.track == "canary" and r.revision == revision and r.ready for r in reps)


async def test_a_controller_restart_mid_canary_resumes_it(controllers) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        for n in ("n1", "n2"):
            fleet.agent(n, [c1.address])
        api = Api(fleet.client([c1.address]))
        await wait_for(lambda: api.nodes_ready(2), deadline=30, what="2 nodes")
        await api.apply(deployment("web", 2, host="web.test"))
        await wait_for(lambda: api.converged("web", 2), deadline=30, what="2 ready")
        await api.call(
            "StartCanary",
            cluster_pb2.StartCanaryRequest(name="web", image="busybox:2", weight=30, replicas=1),
        )

        async def paused_at_weight() -> bool:
            st = await api.call("RolloutStatus", cluster_pb2.RolloutRequest(name="web"))
            route = await _route(api, "web")
            return st.rollout.phase == "Paused" and route.canary_weight == 30

        await wait_for(paused_at_weight, deadline=40, what="canary paused at weight 30")
        before = await api.call("RolloutStatus", cluster_pb2.RolloutRequest(name="web"))
        canaries = {r.name for r in await api.replicas("web") if r.track == "canary"}

        c1.kill9()
        c1.start()  # the same controller, started again: everything comes from etcd

        await wait_for(paused_at_weight, deadline=60, what="the canary resumed after the restart")
        after = await api.call("RolloutStatus", cluster_pb2.RolloutRequest(name="web"))
        assert (after.rollout.step, after.rollout.canary_revision) == (
            before.rollout.step,
            before.rollout.canary_revision,
        )
        assert {r.name for r in await api.replicas("web") if r.track == "canary"} == canaries

        await api.call("Promote", cluster_pb2.RolloutRequest(name="web"))

        async def promoted() -> bool:
            reps = await api.replicas("web")
            st = await api.call("RolloutStatus", cluster_pb2.RolloutRequest(name="web"))
            return st.rollout.phase == "Succeeded" and all(
                r.revision == 2 and r.ready for r in reps
            )

        await wait_for(promoted, deadline=60, what="promotion after the restart")
