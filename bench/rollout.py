"""Rollout figures on a three-node cluster of network-namespace hosts, under load.

    .venv/bin/python bench/rollout.py [--quick] [--weight 20] [--canary-replicas 2]

Starts its own gantry.labcluster.LabCluster (prefix "gb" + 6 hex chars: etcd,
registry, two controllers, three agents, the proxy) and runs constant load
through the proxy (gantry.loadgen: keep-alive GETs, every answer recorded)
while it performs, one after the other:

* scale 3 -> 10 -> 3 of deployment `web` (RollingUpdate, maxSurge 1,
  maxUnavailable 0); scale_to_serving_s = from the `gantry scale` command to
  the moment the last of the 10 replicas first answered through the proxy;
* a rolling update of `web` from hello:v1 to hello:v2;
* a canary of deployment `can` (Canary strategy: setWeight, analysis, pause;
  2 canary replicas unless --canary-replicas) promoted by its own analysis; canary_share_measured = the share of v2
  answers while the weight was held (percent);
* a canary of `can` aborted by hand (`gantry rollout abort`) while it serves;
* the loss of node n1 (its link cut: agent and containers unreachable);
  node_loss_to_serving_s = from the cut until every replacement replica
  answered through the proxy.

failed_requests counts non-200 answers over scale, rolling update, promote
and abort; the node loss's failures are reported on their own row. The
cluster is always destroyed (also on Ctrl-C or SIGTERM). Prints a table and,
as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gantry import loadgen, netlab  # noqa: E402
from gantry.labcluster import LabCluster  # noqa: E402

T = TypeVar("T")
GONE_PHASES = ("Terminating", "Exited", "Failed")
STATUS = re.compile(r"rollout:\s+(\w+) (\w+), step (\d+)")
WEIGHT = re.compile(r"canary (\d+)%")
LAST_CANARY = re.compile(r"last canary: (\w+)")


class BenchError(Exception):
    pass


def wait_for(what: str, cond: Callable[[], T | None], timeout: float = 120.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise BenchError(f"{what}: not within {timeout:.0f}s")


def manifest(c: LabCluster, name: str, image: str, replicas: int, strategy: dict[str, Any],
             env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    return c.demo_deployment(name, image=image, replicas=replicas, strategy=strategy, env=env)


@dataclass
class Bench:
    c: LabCluster

    def apply(self, doc: dict[str, Any]) -> None:
        path = self.c.workdir / f"{doc['metadata']['name']}-{secrets.token_hex(2)}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.c.gantry("apply", "-f", str(path))

    def replicas(self, name: str) -> list[dict[str, Any]]:
        out = json.loads(self.c.gantry("get", "replicas", name, "-o", "json").stdout)
        return [r for r in out if r.get("deployment") == name]

    def revision(self, name: str) -> int:
        (dep,) = json.loads(self.c.gantry("get", "deployments", name, "-o", "json").stdout)
        return int(dep.get("status", {}).get("revision", 0))

    def ready(self, name: str, want: int, revision: int | None = None,
              avoid: str = "") -> list[dict[str, Any]] | None:  # fmt: skip
        reps = self.replicas(name)
        live = [r for r in reps if r.get("phase") not in GONE_PHASES]
        ok = [r for r in live if r.get("ready") and r.get("node") != avoid]
        if revision is not None:
            ok = [r for r in ok if int(r.get("revision", 0)) == revision]
        return live if len(ok) == want == len(live) else None

    def rollout(self, name: str) -> tuple[str, int, str]:
        """(outcome or phase, canary weight, text) of `gantry rollout status`."""
        text = self.c.gantry("rollout", "status", name).stdout
        last, m, w = LAST_CANARY.search(text), STATUS.search(text), WEIGHT.search(text)
        phase = f"done:{last[1]}" if last else (m[2] if m else "")
        if m and m[1] == "Canary" and m[2] in ("Succeeded", "Aborted"):
            phase = f"done:{m[2]}"
        return phase, int(w[1]) if w else 0, text


def first_answers(ld: loadgen.Load, names: set[str], since: float) -> dict[str, float]:
    """When each replica in `names` first answered 200 since `since`."""
    out: dict[str, float] = {}
    for a in ld.since(since):
        if a.status == 200 and a.replica in names and a.replica not in out:
            out[a.replica] = a.at
    return out


def all_serving(ld: loadgen.Load, names: set[str], since: float) -> float | None:
    """The moment the last of `names` first answered, once all have."""
    seen = first_answers(ld, names, since)
    return max(seen.values()) if names and len(seen) == len(names) else None


@dataclass
class Row:
    phase: str
    seconds: float
    requests: int
    failed: int
    note: str = ""
    failures: str = ""


def phase_row(ld: loadgen.Load, phase: str, t0: float, t1: float, note: str = "") -> Row:
    window = [a for a in ld.since(t0) if a.at <= t1]
    bad = [a for a in window if a.status != 200]
    first: dict[str, float] = {}
    kinds: Counter[str] = Counter()
    for a in bad:
        kind = f"{a.status or 'no answer'} {a.error}".strip()
        kinds[kind] += 1
        first.setdefault(kind, a.at - t0)
    what = "; ".join(f"{n} x {k} (first at +{first[k]:.2f}s)" for k, n in kinds.items())
    return Row(phase, t1 - t0, len(window), len(bad), note, what)


def run(
    c: LabCluster, quick: bool, weight: int, canary_replicas: int
) -> tuple[list[Row], dict[str, Any]]:
    b = Bench(c)
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    window = 6 if quick else 15
    steps = [{"setWeight": weight},
             {"analysis": {"maxErrorRate": 0.05, "maxP99Ms": 2000, "windowSeconds": window,
                           "minRequests": 30}},
             {"pause": {"duration": "3s"}}]  # fmt: skip
    canary = {"type": "Canary", "canary": {"replicas": canary_replicas, "steps": steps}}
    b.apply(manifest(c, "web", "hello:v1", 3, rolling))
    b.apply(manifest(c, "can", "hello:v1", 3, canary))
    wait_for("web 3/3 ready", lambda: b.ready("web", 3))
    wait_for("can 3/3 ready", lambda: b.ready("can", 3))
    netns = c.lab.ns("ctl")
    web = loadgen.Load(c.proxy_url + "/", host="web.local", netns=netns, workers=4, max_seconds=600)
    can = loadgen.Load(c.proxy_url + "/", host="can.local", netns=netns, workers=4, max_seconds=600)
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    web.start()
    can.start()
    try:
        t = time.monotonic()
        wait_for("web and can answering", lambda: len(web.since(t)) > 50 and len(can.since(t)) > 50)
        print("load running; scaling web 3 -> 10", file=sys.stderr, flush=True)

        t_scale = time.monotonic()
        c.gantry("scale", "web", "--replicas", "10")
        ten = wait_for("web 10/10 ready", lambda: b.ready("web", 10))
        names = {r["name"] for r in ten}
        served = wait_for("all 10 answering", lambda: all_serving(web, names, t_scale))
        figures["scale_to_serving_s"] = round(served - t_scale, 2)
        rows.append(phase_row(web, "scale 3 -> 10", t_scale, served,
                              f"all 10 serving after {served - t_scale:.2f}s"))  # fmt: skip
        t_down = time.monotonic()
        c.gantry("scale", "web", "--replicas", "3")
        three = wait_for("web back to 3", lambda: len(b.replicas("web")) == 3 and b.ready("web", 3))
        kept = {r["name"] for r in three}
        t_settle = time.monotonic()
        wait_for("traffic on the 3 left", lambda: len(web.since(t_settle)) > 100)
        rows.append(phase_row(web, "scale 10 -> 3", t_down, time.monotonic(),
                              f"served by {len({a.replica for a in web.since(t_settle)} & kept)} replicas after"))  # fmt: skip

        print("rolling update web v1 -> v2", file=sys.stderr, flush=True)
        rev1 = b.revision("web")
        t_roll = time.monotonic()
        b.apply(manifest(c, "web", "hello:v2", 3, rolling))
        rev2 = wait_for("a new revision", lambda: (r := b.revision("web")) > rev1 and r)
        wait_for("web on v2", lambda: b.ready("web", 3, revision=rev2), timeout=180)
        t_v2 = time.monotonic()
        wait_for("v2 answering", lambda: len(web.since(t_v2)) > 100)
        versions = {a.version for a in web.since(t_v2) if a.status == 200}
        rows.append(phase_row(web, "rolling update", t_roll, time.monotonic(),
                              f"then served by {','.join(sorted(versions))}"))  # fmt: skip

        print(f"canary of can at {weight}%, promoted by analysis", file=sys.stderr, flush=True)
        t_can = time.monotonic()
        b.apply(manifest(c, "can", "hello:v2", 3, canary))
        held: list[float] = []

        def promoted() -> str | None:
            at = time.monotonic()
            phase, w, _ = b.rollout("can")
            if w == weight and phase in ("Analyzing", "Paused"):
                held.append(at)
            return phase if phase.startswith("done:") else None

        outcome = wait_for("the canary's outcome", promoted, timeout=240)
        if len(held) < 2:
            raise BenchError(f"weight {weight}% seen held only {len(held)} time(s)")
        in_step = [a for a in can.since(held[0] + 1.0) if a.at <= held[-1]]
        share = loadgen.share(in_step, "v2")
        figures["canary_weight_set"] = weight
        figures["canary_share_measured"] = round(100 * share, 2)
        t_after = time.monotonic()
        wait_for("v2 answering after the promotion", lambda: len(can.since(t_after)) > 100)
        rows.append(phase_row(can, "canary promote", t_can, time.monotonic(),
                              f"{outcome[5:]} (x{canary_replicas}); v2 {100 * share:.1f}% of {len(in_step)} at weight {weight}%"))  # fmt: skip

        print("canary of can aborted by hand", file=sys.stderr, flush=True)
        t_ab = time.monotonic()
        b.apply(manifest(c, "can", "hello:v1", 3, canary))
        wait_for("the canary (v1) serving", lambda: any(a.version == "v1" for a in can.since(t_ab)))
        c.gantry("rollout", "abort", "can")
        t_abort = time.monotonic()
        wait_for("canary replicas gone",
                 lambda: not [r for r in b.replicas("can") if r.get("track") == "canary"])  # fmt: skip
        t_gone = time.monotonic()
        wait_for("answers after the abort", lambda: len(can.since(t_gone)) > 100)
        back = {a.version for a in can.since(t_gone) if a.status == 200}
        rows.append(phase_row(can, "canary abort", t_ab, time.monotonic(),
                              f"gone {t_gone - t_abort:.1f}s after abort; then {','.join(sorted(back))}"))  # fmt: skip
        t_end = time.monotonic()
        span = [a for ld in (web, can) for a in ld.since(t_scale) if a.at <= t_end]
        figures["total_requests"] = len(span)
        figures["failed_requests"] = sum(1 for a in span if a.status != 200)
        rows.append(Row("(all four)", t_end - t_scale, len(span), figures["failed_requests"],
                        "both deployments, scale to abort"))  # fmt: skip

        before = b.replicas("web")
        victim = min(r["node"] for r in before)  # the first node holding a web replica
        print(f"losing node {victim} (link cut)", file=sys.stderr, flush=True)
        on_victim = {r["name"] for r in before if r.get("node") == victim}
        t_cut = time.monotonic()
        c.lab.cut(victim)
        moved = wait_for(
            f"web replaced off {victim}", lambda: b.ready("web", 3, revision=rev2, avoid=victim)
        )
        fresh = {r["name"] for r in moved} - {r["name"] for r in before}
        if len(fresh) != len(on_victim):
            raise BenchError(f"{len(on_victim)} replica(s) on {victim}, {len(fresh)} replaced")
        back_at = wait_for("replacements answering", lambda: all_serving(web, fresh, t_cut))
        figures["node_loss_to_serving_s"] = round(back_at - t_cut, 2)
        rows.append(phase_row(web, f"node loss ({victim})", t_cut, back_at,
                              f"{len(fresh)} replica(s) serving elsewhere after {back_at - t_cut:.2f}s"))  # fmt: skip
    finally:
        web.stop()
        can.stop()
    return rows, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter canary analysis (< 120 s)")
    parser.add_argument("--weight", type=int, default=20, help="canary weight, percent")
    parser.add_argument(
        "--canary-replicas",
        type=int,
        default=2,
        help="canary replicas (with 1, a connect to it that fails has no other to retry on)",
    )
    args = parser.parse_args()
    if args.canary_replicas < 1:
        parser.error(f"--canary-replicas: expected >= 1, got {args.canary_replicas}")
    if not 1 <= args.weight <= 99:
        parser.error(f"--weight: expected 1..99, got {args.weight}")

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gantry-bench-rollout-"))
    c = LabCluster("gb" + secrets.token_hex(3), workdir)
    left: list[str] = []
    keep = False  # the workdir (logs) stays when the bench fails
    try:
        c.start()
        print(f"cluster {c.prefix} up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        rows, figures = run(c, args.quick, args.weight, args.canary_replicas)
        keep = any(r.failed for r in rows)  # logs to explain the failures
    except (BenchError, RuntimeError, netlab.LabError, subprocess.SubprocessError) as exc:
        print(f"bench failed: {exc} (logs in {workdir})", file=sys.stderr)
        keep = True
        return 1
    except KeyboardInterrupt:
        print("interrupted; destroying the cluster", file=sys.stderr)
        return 130
    finally:
        left = c.destroy()
        if left:
            print(f"left behind: {left}", file=sys.stderr)
        elif not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"three-node lab cluster, constant load through the proxy ({time.monotonic() - started:.0f}s)"
    )
    print(f"{'phase':<18}{'seconds':>9}{'requests':>10}{'failed':>8}  note")
    for r in rows:
        print(f"{r.phase:<18}{r.seconds:>9.2f}{r.requests:>10}{r.failed:>8}  {r.note}")
    for r in rows:
        if r.failures:
            print(f"failed in {r.phase}: {r.failures}")
    if keep:
        print(f"logs kept in {workdir}")
    print(json.dumps({k: figures.get(k) for k in (
        "total_requests", "failed_requests", "scale_to_serving_s", "canary_weight_set",
        "canary_share_measured", "node_loss_to_serving_s")}))  # fmt: skip
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
