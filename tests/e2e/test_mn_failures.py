"""A lost leader and a lost node on a three-node cluster, under load.

These tests break the cluster, so they get their own (module-scoped) one,
apart from tests/e2e/test_mn_traffic.py; the controller test runs first
because the node test leaves a node behind a cut-and-restored link.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from typing import Any

from gantry import netlab
from gantry.labcluster import AGENT_PORT, CONTROLLER_PORTS, LabCluster


def fetch_json(c: LabCluster, url: str) -> Any:
    def get() -> Any:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - lab address
            return json.loads(resp.read())

    return netlab.in_netns(c.lab.ns("ctl"), get)


def per_second(answers: list[Any], t0: float) -> str:
    """'second: N ok, M failed' lines, for a failure message."""
    ok: Counter[int] = Counter(int(a.at - t0) for a in answers if a.status == 200)
    bad: Counter[int] = Counter(int(a.at - t0) for a in answers if a.status != 200)
    errors = Counter(a.error or str(a.status) for a in answers if a.status != 200)
    rows = [f"{s}s: {ok[s]} ok, {bad[s]} failed" for s in range(max([*ok, *bad, 0]) + 1)]
    return "; ".join(rows) + f"; errors {dict(errors)}"


def leading(c: LabCluster) -> list[str]:
    """Names of the running controllers whose metrics say they lead."""
    out = []
    for i, port in enumerate(CONTROLLER_PORTS):
        name = f"controller-{i + 1}"
        if name not in c.processes:
            continue

        def metrics(url: str = f"http://{c.ctl}:{port + 1}/metrics") -> str:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - lab address
                return resp.read().decode()

        text = netlab.in_netns(c.lab.ns("ctl"), metrics)
        if "gantry_controller_is_leader 1.0" in text:
            out.append(name)
    return out


def test_killing_the_leader_changes_nothing_users_see(cluster: LabCluster, mn: Any) -> None:
    c = cluster
    mn.apply(c, mn.deployment(c, "lead", replicas=3))
    mn.wait_for("3 replicas ready", lambda: mn.ready_on(c, "lead", 3), timeout=120)
    (leader,) = mn.wait_for("one leader", lambda: leading(c) if len(leading(c)) == 1 else None)
    ld = mn.load(c, "lead").start()
    try:
        t0 = time.monotonic()
        mn.wait_for("answers", lambda: len(ld.since(t0)) >= 50)
        c.stop(leader, kill=True)  # SIGKILL: no goodbye, its lease must expire
        c.gantry("scale", "lead", "--replicas", "5", timeout=90)
        (standby,) = mn.wait_for("the standby leading", lambda: leading(c) or None)
        assert standby != leader
        five = mn.wait_for("5 replicas ready", lambda: mn.ready_on(c, "lead", 5), timeout=120)
        names = {r["name"] for r in five}
        t5 = time.monotonic()
        mn.wait_for("all 5 answering through the proxy", lambda: names <= mn.serving(ld, t5))
    finally:
        answers = ld.stop()
    assert not [a for a in answers if a.status != 200], mn.fail_text(answers)


def test_lost_node_is_replaced_and_its_stale_replicas_stopped(cluster: LabCluster, mn: Any) -> None:
    c = cluster
    mn.apply(c, mn.deployment(c, "lose", replicas=6))
    six = mn.wait_for("6 replicas ready", lambda: mn.ready_on(c, "lose", 6), timeout=120)
    victim = "n1"
    lost = {r["name"] for r in six if r["node"] == victim}
    assert lost, Counter(r["node"] for r in six)
    # Requests in flight to (or sent on idle proxy connections to) the cut node's
    # replicas hang until the client gives up; with enough workers, and a short
    # client timeout, some are always free to get answers from the other nodes.
    ld = mn.load(c, "lose", workers=12, timeout=3.0).start()
    try:
        t0 = time.monotonic()
        mn.wait_for("answers", lambda: len(ld.since(t0)) >= 50)
        t_cut = time.monotonic()
        c.lab.cut(victim)  # the agent and its containers vanish from the network

        def replaced() -> list[dict[str, Any]] | None:
            reps = mn.ready_on(c, "lose", 6)
            return reps if reps and all(r["node"] != victim for r in reps) else None

        moved = mn.wait_for("replicas replaced on the other nodes", replaced, timeout=120)
        fresh = {r["name"] for r in moved} - {r["name"] for r in six}
        assert len(fresh) == len(lost), (fresh, lost)
        t_moved = time.monotonic()
        mn.wait_for("the new replicas answering", lambda: fresh <= mn.serving(ld, t_moved))
        t_served = time.monotonic()
        # traffic kept flowing: successful answers in every second of the outage
        ok_seconds = {int(a.at - t_cut) for a in ld.since(t_cut) if a.status == 200}
        missing = [s for s in range(int(t_served - t_cut)) if s not in ok_seconds]
        assert not missing, (
            f"seconds after the cut without a successful answer: {missing}; "
            + per_second(ld.since(t_cut), t_cut)
        )

        c.lab.restore(victim)
        agent = f"http://{c.lab.addresses[victim]}:{AGENT_PORT}/replicas"

        def stale_stopped() -> bool:
            held = fetch_json(c, agent)
            running = [
                s
                for s in held
                if s.get("replica") in lost and s.get("phase") in ("Starting", "Running")
            ]
            return not running

        mn.wait_for(
            f"{victim}'s stale replicas stopped after its return", stale_stopped, timeout=90
        )
        assert not lost & {r["name"] for r in mn.replicas(c, "lose")}
        t_back = time.monotonic()
        mn.wait_for("answers after the node's return", lambda: len(ld.since(t_back)) >= 200)
        assert not lost & mn.serving(ld, t_back)
    finally:
        answers = ld.stop()
    during = [a for a in answers if a.at >= t_cut]
    print(f"node loss: {mn.fail_text(during)}")
