"""Scheduler benchmark: 100,000 replicas (1,000 deployments of 100) onto 1,000 nodes.

Two runs over the same simulated cluster (1,000 nodes of 40 cpu / 96 GiB;
requests mixed per deployment from 50m..500m cpu and 64Mi..1Gi; ~55% full):

1. pure: `controller.scheduler.schedule` alone, no I/O (median of 3 runs),
   plus the whole pure core per deployment (reconcile -> names -> schedule);
2. persisted: the controller's real write path: a real etcd
   (gantry.procs.start_etcd), this process elected leader through
   `controller.election.Election`, each deployment reconciled and scheduled
   by the pure core, and its replica records (`controller.loop.new_replica_record`)
   written through `controller.store.Store.txn_batched` in fenced
   transactions of up to 100 operations that also compare the deployment's
   mod_revision, as the control loop does; several deployments in flight.

Prints a table and, as the last line, one JSON object with
pure_placements_per_s, persisted_placements_per_s, nodes, replicas, alloc_cv
(coefficient of variation of the nodes' allocated cpu fraction after the
pure run). `--quick` persists 20,000 of the replicas and finishes in < 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller import keys  # noqa: E402
from controller.model import Capacity, DeploymentState, GiB, NodeState  # noqa: E402
from controller.reconcile import reconcile  # noqa: E402
from controller.scheduler import (  # noqa: E402
    Placement,
    PlacementRequest,
    Snapshot,
    requests_for,
    schedule,
)

CPU_CHOICES = ["50m", "100m", "200m", "250m", "500m"]
MEM_CHOICES = ["64Mi", "128Mi", "256Mi", "512Mi", "1Gi"]


def make_nodes(n: int, *, mixed: bool = False) -> list[NodeState]:
    """n nodes of 40 cpu / 96 GiB; `mixed`: half 48 cpu / 128 GiB, half 32 cpu / 64 GiB."""
    nodes = []
    for i in range(n):
        cap = Capacity(40000, 96 * GiB, 400)
        if mixed:
            cap = Capacity(48000, 128 * GiB, 400) if i % 2 else Capacity(32000, 64 * GiB, 300)
        nodes.append(NodeState(f"node-{i:04d}", capacity=cap, labels={"zone": f"z{i % 3}"}))
    return nodes


def make_deployments(n: int, per: int, rng: random.Random) -> list[DeploymentState]:
    out = []
    for d in range(n):
        template = {
            "image": f"app{d}:v1",
            "resources": {
                "requests": {"cpu": rng.choice(CPU_CHOICES), "memory": rng.choice(MEM_CHOICES)}
            },
        }
        out.append(
            DeploymentState.from_manifest(
                {
                    "metadata": {"name": f"app{d:04d}"},
                    "spec": {"replicas": per, "template": template},
                }
            )
        )
    return out


def all_requests(deps: list[DeploymentState], per: int) -> list[PlacementRequest]:
    reqs: list[PlacementRequest] = []
    for d in deps:
        reqs += requests_for(d, (f"{d.name}-{j:05d}" for j in range(per)))
    return reqs


def cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else 0.0


def run_pure(
    nodes: list[NodeState], reqs: list[PlacementRequest], seed: int
) -> tuple[float, float, int]:
    snap = Snapshot(nodes)
    t0 = time.perf_counter()
    out = schedule(reqs, snap, random.Random(seed))
    dt = time.perf_counter() - t0
    placed = sum(1 for p in out if isinstance(p, Placement))
    return placed / dt, cv(snap.cpu_fractions()), len(out) - placed


def plan_deployment(
    d: DeploymentState, nodes: list[NodeState], snap: Snapshot, rng: random.Random
) -> list[Placement]:
    """The pure core for one deployment: reconcile, name, schedule."""
    plan = reconcile(d, [], nodes, 0.0)
    names = [f"{d.name}-{j:05d}" for j in range(len(plan.place))]
    return [p for p in schedule(requests_for(d, names), snap, rng) if isinstance(p, Placement)]


def run_core(nodes: list[NodeState], deps: list[DeploymentState], seed: int) -> float:
    snap, rng = Snapshot(nodes), random.Random(seed)
    t0 = time.perf_counter()
    placed = sum(len(plan_deployment(d, nodes, snap, rng)) for d in deps)
    return placed / (time.perf_counter() - t0)


async def run_persisted(
    endpoint: str, nodes: list[NodeState], deps: list[DeploymentState], *, workers: int, seed: int
) -> tuple[float, int, int]:
    from controller.election import Election
    from controller.loop import Placement as LoopPlacement
    from controller.loop import new_replica_record
    from controller.store import ModIs, Put, Store

    store = Store([endpoint])
    # The deployments exist first, as after `gantry apply` (not timed).
    for start in range(0, len(deps), 100):
        batch = deps[start : start + 100]
        ops = [Put(keys.deployment(d.name), {"metadata": {"name": d.name}}) for d in batch]
        await store.txn([], ops, fenced=False)
    dep_rev = {i.key: i.mod_revision for i in (await store.list(keys.DEPLOYMENTS))[0]}
    election = Election(store, ident="bench", address="127.0.0.1:0", ttl=10)
    result: asyncio.Future[tuple[float, int, int]] = asyncio.get_running_loop().create_future()

    async def lead() -> None:
        snap, rng = Snapshot(nodes), random.Random(seed)
        epoch = store.fence.create_revision if store.fence else 0
        queue = list(reversed(deps))
        txns = 0

        async def worker() -> int:
            nonlocal txns
            n = 0
            while queue:
                d = queue.pop()
                placed = plan_deployment(d, nodes, snap, rng)
                template = dict(d.template)
                pairs = []
                for p in placed:
                    lp = LoopPlacement(p.replica, d.name, p.node, d.revision, "stable", p.explain())
                    rec = new_replica_record(
                        lp, template, epoch=epoch, now=time.time(), drain_seconds=5.0
                    )
                    key = keys.replica(d.name, p.replica)
                    pairs.append((ModIs(key, 0), Put(key, rec)))
                guard = ModIs(keys.deployment(d.name), dep_rev[keys.deployment(d.name)])
                await store.txn_batched([guard], pairs, size=100)
                txns += -(-len(pairs) // 100)
                n += len(placed)
            return n

        t0 = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(workers)))
        dt = time.perf_counter() - t0
        result.set_result((sum(counts) / dt, sum(counts), txns))
        await asyncio.Event().wait()  # hold leadership until cancelled

    task = asyncio.create_task(election.run(lead), name="bench-election")
    try:
        rate, placed, txns = await asyncio.wait_for(result, timeout=600)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stored = 0
    for d in deps:  # per deployment: one list of everything exceeds the gRPC message limit
        stored += len((await store.list(keys.replicas(d.name)))[0])
    await store.close()
    if stored != placed:
        raise SystemExit(f"etcd holds {stored} replica records, expected {placed}")
    return rate, placed, txns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="persist 20,000 replicas; < 60 s")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--deployments", type=int, default=1000)
    ap.add_argument("--per", type=int, default=100, help="replicas per deployment")
    ap.add_argument("--workers", type=int, default=4, help="deployments written concurrently")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-etcd", action="store_true", help="skip the persisted run")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    nodes = make_nodes(args.nodes)
    deps = make_deployments(args.deployments, args.per, rng)
    reqs = all_requests(deps, args.per)
    n = len(reqs)

    runs = [run_pure(nodes, reqs, args.seed + i) for i in range(3)]
    pure = statistics.median(r[0] for r in runs)
    alloc_cv = runs[0][1]
    unplaced = runs[0][2]
    core = run_core(nodes, deps, args.seed)
    mixed_cv = run_pure(make_nodes(args.nodes, mixed=True), reqs, args.seed)[1]

    persisted = 0.0
    p_placed = txns = 0
    if not args.no_etcd:
        from gantry.procs import start_etcd

        persist_deps = deps[: 200 if args.quick else len(deps)]
        with tempfile.TemporaryDirectory(prefix="gantry-bench-") as tmp:
            etcd = start_etcd(Path(tmp))
            try:
                persisted, p_placed, txns = asyncio.run(
                    run_persisted(
                        etcd.extra["endpoint"],
                        nodes,
                        persist_deps,
                        workers=args.workers,
                        seed=args.seed,
                    )
                )
            finally:
                etcd.stop()

    rows = [
        ("nodes", f"{args.nodes}"),
        ("replicas", f"{n} ({args.deployments} deployments x {args.per})"),
        ("pure scheduler (median of 3)", f"{pure:,.0f} placements/s"),
        ("pure core: reconcile+schedule", f"{core:,.0f} placements/s"),
        ("unplaced", f"{unplaced}"),
        ("alloc cpu fraction CV", f"{alloc_cv:.4f}"),
        ("  same on mixed node sizes", f"{mixed_cv:.4f} (cpu:memory ratios differ per size)"),
        ("persisted to etcd", f"{persisted:,.0f} placements/s ({p_placed} in {txns} txns)"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(
        json.dumps(
            {
                "pure_placements_per_s": round(pure),
                "persisted_placements_per_s": round(persisted),
                "nodes": args.nodes,
                "replicas": n,
                "alloc_cv": round(alloc_cv, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
