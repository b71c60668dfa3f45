"""The store against a real etcd: compare-and-swap, fencing, batches, informers, election."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from ctlharness import settled, wait_for

from controller import keys
from controller.election import Election
from controller.errors import Conflict, NotLeader, StoreUnavailable
from controller.store import Fence, Informer, ModIs, Put, Store
from gantry import procs


def etcdctl(etcd: str, *args: str) -> str:
    out = subprocess.run(
        ["etcdctl", "--endpoints", etcd, *args],
        capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3"},
    )  # fmt: skip
    return out.stdout


async def make_leader(store: Store, ident: str) -> None:
    await store.txn(
        [ModIs(keys.LEADER, 0)], [Put(keys.LEADER, {"id": ident, "address": ident})], fenced=False
    )
    item = await store.get(keys.LEADER)
    assert item is not None
    store.fence = Fence(keys.LEADER, item.create_revision)


@settled
async def test_stale_mod_revision_conflicts_and_update_retries(etcd: str) -> None:
    store = Store([etcd])
    try:
        await make_leader(store, "a")
        await store.txn([ModIs("/gantry/x/k", 0)], [Put("/gantry/x/k", {"n": 0})])
        item = await store.get("/gantry/x/k")
        assert item is not None
        await store.txn([ModIs(item.key, item.mod_revision)], [Put(item.key, {"n": 1})])
        with pytest.raises(Conflict):
            await store.txn([ModIs(item.key, item.mod_revision)], [Put(item.key, {"n": 2})])

        async def bump() -> None:
            await store.update(item.key, lambda v: {"n": (v or {}).get("n", 0) + 1})

        await asyncio.gather(*(bump() for _ in range(20)))
        final = await store.get(item.key)
        assert final is not None and final.value == {"n": 21}, "no increment may be lost"
        assert '"n":21' in etcdctl(etcd, "get", item.key), "values are JSON readable with etcdctl"
    finally:
        await store.close()


@settled
async def test_deposed_leader_cannot_write(etcd: str) -> None:
    old, new = Store([etcd]), Store([etcd])
    try:
        await make_leader(old, "old")
        await old.txn([], [Put("/gantry/x/owner", {"by": "old"})])
        # The old leader's key goes (lease expiry, or a pause): someone else leads now.
        etcdctl(etcd, "del", keys.LEADER)
        await make_leader(new, "new")
        with pytest.raises(NotLeader) as err:
            await old.txn([], [Put("/gantry/x/owner", {"by": "old-again"})])
        assert err.value.leader_address == "new"
        assert old.fence is None, "a failed fence drops leadership at once"
        owner = await new.get("/gantry/x/owner")
        assert owner is not None and owner.value == {"by": "old"}
        with pytest.raises(NotLeader):
            await old.txn([], [Put("/gantry/x/owner", {"by": "old-3"})])
    finally:
        await old.close()
        await new.close()


@settled
async def test_batched_writes_are_all_or_nothing_per_chunk(etcd: str) -> None:
    store = Store([etcd])
    try:
        await make_leader(store, "a")
        pairs = [
            (ModIs(f"/gantry/b/{i:03d}", 0), Put(f"/gantry/b/{i:03d}", {"i": i}))
            for i in range(250)
        ]
        await store.txn_batched([], pairs, size=100)
        items, _ = await store.list("/gantry/b/")
        assert len(items) == 250
        # A second attempt at the same creations conflicts: nothing is doubled or overwritten.
        with pytest.raises(Conflict):
            await store.txn_batched([], pairs[:100], size=100)
        items, _ = await store.list("/gantry/b/")
        assert len(items) == 250 and all(i.mod_revision == i.create_revision for i in items)
    finally:
        await store.close()


@settled
async def test_informer_relists_after_compaction(etcd: str) -> None:
    store = Store([etcd])
    informer = Informer(store, "/gantry/i/", name="test")
    task = asyncio.create_task(informer.run(), name="informer-test")
    try:
        await make_leader(store, "a")
        await informer.synced.wait()
        await store.txn([], [Put("/gantry/i/a", {"v": 1})])
        await wait_for(
            lambda: _has(informer, "/gantry/i/a", {"v": 1}), deadline=10, what="watch event"
        )
        # Fall behind on purpose: stop watching, miss changes, lose them to compaction.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for v in range(2, 6):
            await store.txn([], [Put("/gantry/i/b", {"v": v})])
        etcdctl(etcd, "compaction", str(await store.revision()))
        assert "/gantry/i/b" not in informer.items
        task = asyncio.create_task(informer.run(), name="informer-test-2")
        await wait_for(lambda: _has(informer, "/gantry/i/b", {"v": 5}), deadline=10, what="relist")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def _has(informer: Informer, key: str, value: dict[str, int]) -> bool:
    return informer.items.get(key) == value


@settled
async def test_one_of_two_candidates_leads_and_the_other_takes_over(etcd: str) -> None:
    a, b = Store([etcd]), Store([etcd])
    ea = Election(a, ident="a", address="a:1", ttl=2)
    eb = Election(b, ident="b", address="b:1", ttl=2)
    terms: list[str] = []

    def lead_as(name: str):
        async def lead() -> None:
            terms.append(name)
            await asyncio.Event().wait()

        return lead

    ta = asyncio.create_task(ea.run(lead_as("a")), name="election-a")
    await wait_for(lambda: _true(ea.is_leader), deadline=10, what="a leads")
    tb = asyncio.create_task(eb.run(lead_as("b")), name="election-b")
    try:
        await wait_for(lambda: _true(eb.leader_id == "a"), deadline=10, what="b sees a")
        assert not eb.is_leader
        ta.cancel()  # a steps down (its term ends, its lease is revoked)
        await asyncio.gather(ta, return_exceptions=True)
        await wait_for(lambda: _true(eb.is_leader), deadline=15, what="b takes over")
        assert terms == ["a", "b"]
    finally:
        for t in (ta, tb):
            t.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
        await a.close()
        await b.close()


async def _true(v: bool) -> bool:
    return v


@settled
async def test_store_moves_to_the_next_endpoint_when_one_is_down(etcd: str) -> None:
    dead = f"127.0.0.1:{procs.free_port()}"
    store = Store([dead, etcd], timeout=2.0)
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("/gantry/x")
        assert await store.get("/gantry/x") is None, "the second endpoint answers"
    finally:
        await store.close()
