"""`make demo`: a local cluster, the shop application, scaling and a canary.

It runs the same `gantry` commands a person would type, shows each one, and
sends real traffic through the proxy to show what changed: which replicas
answer, and which share the canary gets. Everything it starts stays up for
exploring afterwards; `gantry down` stops it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gantry import loadgen

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "examples" / "shop.yaml"
HOST = "shop.local"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def gantry(*args: str, state_dir: Path, check: bool = True, quiet: bool = False) -> str:
    argv = [sys.executable, "-m", "gantry.cli.main", "--state-dir", str(state_dir), *args]
    if not quiet:
        print(f"$ gantry {shlex.join(args)}", flush=True)
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if not quiet and result.stdout.strip():
        print(result.stdout.rstrip(), flush=True)
    if check and result.returncode != 0:
        sys.exit(f"demo stopped: gantry {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def fetch(url: str) -> tuple[int, str, str]:
    """One request through the proxy: (status, version, replica)."""
    req = urllib.request.Request(url, headers={"Host": HOST})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            body = json.loads(resp.read() or b"{}")
            return resp.status, body.get("version", "?"), body.get("hostname", "?")
    except urllib.error.HTTPError as exc:
        return exc.code, "-", "-"
    except (urllib.error.URLError, OSError, ValueError):
        return 0, "-", "-"


def traffic(url: str, n: int, workers: int = 8) -> list[tuple[int, str, str]]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fetch, [url] * n))


def summarize(results: list[tuple[int, str, str]]) -> None:
    codes = collections.Counter(code for code, _, _ in results)
    versions = collections.Counter(v for code, v, _ in results if code == 200)
    replicas = collections.Counter(r for code, _, r in results if code == 200)
    ok = codes.get(200, 0)
    print(
        f"   {len(results)} requests: {ok} ok"
        + "".join(f", {n} x {c}" for c, n in codes.items() if c != 200)
    )
    print(
        "   by version: "
        + ", ".join(f"{v} {n} ({100 * n / max(ok, 1):.1f}%)" for v, n in sorted(versions.items()))
    )
    print("   by replica: " + ", ".join(f"{r} {n}" for r, n in sorted(replicas.items())))


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    sys.exit(f"demo stopped: {what} did not happen within {timeout:.0f}s")


def ready(state_dir: Path, name: str, want: int, image: str | None = None) -> bool:
    out = gantry(
        "get", "deployments", name, "-o", "json", state_dir=state_dir, check=False, quiet=True
    )
    try:
        (dep,) = json.loads(out)
    except ValueError:
        return False
    status, spec = dep.get("status", {}), dep.get("spec", {})
    if image and spec.get("template", {}).get("image") != image:
        return False
    return bool(status.get("readyReplicas", 0) == want and status.get("replicas", 0) == want)


def replicas_of(state_dir: Path, names: tuple[str, ...]) -> list[dict[str, object]]:
    out = gantry("get", "replicas", "-o", "json", state_dir=state_dir, check=False, quiet=True)
    try:
        return [r for r in json.loads(out) if r.get("deployment") in names]
    except ValueError:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--state-dir", default=os.environ.get("GANTRY_STATE_DIR", "/var/lib/gantry")
    )
    args = parser.parse_args()
    state = Path(args.state_dir)
    started = time.monotonic()

    say(
        "1. Bring up a local cluster: etcd, registry, controller, agent, proxy (builds the demo images)"
    )
    gantry("up", state_dir=state)
    cfg = json.loads((state / "cluster.json").read_text())
    registry = f"{cfg['host']}:{cfg['registry_port']}"
    url = f"http://{cfg['host']}:{cfg['proxy_port']}/"
    manifest = MANIFEST.read_text().replace("127.0.0.1:15000", registry)
    applied = state / "shop.yaml"
    applied.write_text(manifest)

    if gantry("get", "deployments", "web", state_dir=state, check=False, quiet=True).strip():
        say("   (a shop from an earlier run is there: removing it for a fresh start)")
        gantry("delete", "-f", str(applied), state_dir=state, check=False)
        wait_for("the old shop's replicas gone", lambda: not replicas_of(state, ("web", "api")))

    say("2. One file, one command: the shop (web + api) from deploy/examples/shop.yaml")
    gantry("apply", "-f", str(applied), state_dir=state)
    wait_for("web 3/3 ready", lambda: ready(state, "web", 3))
    wait_for("api 2/2 ready", lambda: ready(state, "api", 2))
    gantry("get", "replicas", "-o", "wide", state_dir=state)

    say(f"3. Traffic through the proxy ({url}, Host: {HOST}): spread over the ready replicas")
    summarize(traffic(url, 150))

    say("4. Scale out: more replicas join the load balancer without anyone touching it")
    gantry("scale", "web", "--replicas", "5", state_dir=state)
    wait_for("web 5/5 ready", lambda: ready(state, "web", 5))
    summarize(traffic(url, 200))

    v2 = f"{registry}/hello:v2"
    say("5. Canary release: hello:v2 on one replica beside the stable set, 20% of the traffic")
    gantry(
        "rollout",
        "canary",
        "web",
        "--image",
        v2,
        "--weight",
        "20",
        "--replicas",
        "1",
        state_dir=state,
    )
    wait_for("the canary serving", lambda: "canary" in gantry("rollout", "status", "web", state_dir=state,
                                                               check=False, quiet=True) and any(
        v == "v2" for _, v, _ in traffic(url, 20)))  # fmt: skip
    results = traffic(url, 1000)
    summarize(results)
    share = sum(1 for c, v, _ in results if c == 200 and v == "v2") / max(
        1, sum(1 for c, *_ in results if c == 200)
    )
    print(f"   measured canary share {100 * share:.1f}% for a weight of 20%")
    gantry("rollout", "status", "web", state_dir=state)

    say("6. Promote under constant load: v2 becomes the stable version, with no failed request")
    load = loadgen.Load(url, host=HOST, workers=4, max_seconds=240).start()
    gantry("rollout", "promote", "web", state_dir=state)
    wait_for("web on v2, 5/5 ready", lambda: ready(state, "web", 5, image=v2), timeout=150)
    answers = load.stop()
    failed = [a for a in answers if a.status != 200]
    print(f"   during the promotion: {len(answers)} requests, {len(failed)} failed "
          f"({loadgen.summary(answers)}); v2 served {100 * loadgen.share(answers[-200:], 'v2'):.0f}% of the last 200")  # fmt: skip
    summarize(traffic(url, 200))
    gantry("rollout", "history", "web", state_dir=state)

    say(
        f"Done in {time.monotonic() - started:.0f}s. The cluster is still up: try 'gantry get replicas',"
    )
    print("   'gantry describe deployment web', and 'gantry down' to stop it all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
