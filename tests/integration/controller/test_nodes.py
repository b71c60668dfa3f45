"""Node lifecycle: a silent node is NotReady at once, its replicas move after the grace
period, and when it returns its stale replicas are no longer assigned to it. A busy but
alive node is not declared lost."""

from __future__ import annotations

import asyncio
import sys
import time

from ctlharness import Api, Fleet, deployment, endpoint_table, wait_for

from gantry import procs


async def test_lost_node_replicas_move_and_stale_ones_stop(controllers) -> None:
    c1 = controllers("c1", grace=3.0)
    async with Fleet() as fleet:
        agents = {n: fleet.agent(n, [c1.address]) for n in ("n1", "n2", "n3")}
        api = Api(fleet.client([c1.address]))
        await wait_for(lambda: api.nodes_ready(3), deadline=30, what="3 nodes ready")
        await api.apply(deployment("web", 3, host="web.test"))
        await wait_for(lambda: api.converged("web", 3), deadline=30, what="3 ready")
        victims = {r.name for r in await api.replicas("web", node="n1")}
        assert len(victims) == 1

        lost = time.monotonic()
        await agents["n1"].pause()
        await wait_for(lambda: _status(api, "n1", "NotReady"), deadline=10, what="n1 NotReady")
        not_ready_after = time.monotonic() - lost
        table = await endpoint_table(api.chan)
        web = next(r for r in table.routes if r.deployment == "web")
        assert all(e.node != "n1" for e in web.endpoints), "a NotReady node leaves discovery"

        async def moved() -> bool:
            reps = await api.replicas("web")
            return await api.converged("web", 3) and all(r.node != "n1" for r in reps)

        await wait_for(moved, deadline=30, what="replicas replaced on n2/n3")
        print(
            f"NotReady after {not_ready_after:.1f}s, replaced after {time.monotonic() - lost:.1f}s"
        )
        assert {r.name for r in await api.replicas("web")}.isdisjoint(victims)
        describe = await api.describe("n1", kind="node")
        assert any(e.reason == "NodeNotReady" for e in describe.events)

        n1 = agents["n1"]
        assert victims <= set(n1.running), "the silent node still runs its old replica"
        sets_before = n1.assignment_sets
        n1.resume()
        await wait_for(lambda: _status(api, "n1", "Ready"), deadline=15, what="n1 back")
        await wait_for(
            lambda: _true(n1.assignment_sets > sets_before), deadline=15, what="assignments"
        )
        assert victims.isdisjoint(n1.assigned), (
            "stale replicas are not assigned to the returning node"
        )
        assert victims.isdisjoint(n1.running), "so the node stops them"
        assert len(await api.replicas("web")) == 3


async def test_busy_node_is_not_declared_lost(controllers) -> None:
    c1 = controllers("c1", grace=3.0)
    # A process that takes a core (niced, as batch work on a node would be: it must
    # not starve etcd and the controller of this shared test machine) ...
    burners = [
        await asyncio.create_subprocess_exec(
            "nice", "-n", "19", sys.executable, "-c", "while True: pass", start_new_session=True
        )
        for _ in range(1)
    ]
    try:
        async with Fleet() as fleet:
            agent = fleet.agent("n1", [c1.address])
            api = Api(fleet.client([c1.address]))
            await api.apply(deployment("web", 2))
            await wait_for(lambda: api.converged("web", 2), deadline=30, what="2 ready")
            names = {r.name for r in await api.replicas("web")}
            agent.busy(2)  # ... and two CPU-bound threads in the agent's own process
            beats = agent.heartbeats
            window = asyncio.get_running_loop().time() + 4 * 3  # four lease TTLs
            while asyncio.get_running_loop().time() < window:
                nodes = await api.nodes()
                assert nodes["n1"].status == "Ready", (
                    f"a busy node was declared NotReady (heartbeats {agent.heartbeats - beats}, "
                    f"registrations {agent.registrations})"
                )
                assert {r.name for r in await api.replicas("web")} == names
                await asyncio.sleep(0.2)
            assert agent.heartbeats > beats + 5, "heartbeats kept flowing under load"
    finally:
        for p in burners:
            await asyncio.to_thread(procs.stop_pid, p.pid, timeout=5)
            await p.wait()


async def _status(api: Api, node: str, status: str) -> bool:
    return (await api.nodes())[node].status == status


async def _true(v: bool) -> bool:
    return v
