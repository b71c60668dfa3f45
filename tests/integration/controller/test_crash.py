"""kill -9 of the controller while it places 50 replicas, then a restart: exactly 50."""

from __future__ import annotations

from collections import Counter

from ctlharness import Api, Fleet, deployment, etcd_snapshot, wait_for


async def test_kill9_mid_apply_then_restart_gives_exactly_50(controllers, etcd: str) -> None:
    # Small transactions make "in the middle" likely: 50 placements take 10 of them.
    c1 = controllers("c1", env={"GANTRY_CONTROLLER_TXN_OPS": "5"})
    async with Fleet() as fleet:
        for n in ("n1", "n2", "n3"):
            fleet.agent(n, [c1.address], cpu_millis=16000)
        api = Api(fleet.client([c1.address]))
        await wait_for(lambda: api.nodes_ready(3), deadline=30, what="3 nodes ready")
        assert await api.apply(deployment("big", 50)) == ["created"]
        await wait_for(
            lambda: _count(etcd, "/gantry/replicas/big/"), deadline=30, what="first placements"
        )
        c1.kill9()
        placed_at_kill = len(await etcd_snapshot(etcd, "/gantry/replicas/big/"))
        print(f"replicas placed when killed: {placed_at_kill}/50")
        c1.start()
        await wait_for(lambda: api.converged("big", 50), deadline=90, what="50 ready replicas")
        reps = await api.replicas("big")
        names = Counter(r.name for r in reps)
        assert len(reps) == 50 and max(names.values()) == 1, "none lost, none doubled"
        assert len(await etcd_snapshot(etcd, "/gantry/replicas/big/")) == 50
        running = sum(len(a.running) for a in fleet.agents)
        assert running == 50, (
            f"agents run {running} replicas ({placed_at_kill} were placed at the kill)"
        )


async def _count(etcd: str, prefix: str) -> int:
    return len(await etcd_snapshot(etcd, prefix))
