"""Start a busybox `true` container and wait for its exit: the core vs `runc run`.

Both run the same bundle (overlay root over a busybox-static layer, Docker's
capabilities, no_new_privs, seccomp, masked paths, memory/pids/cpu limits,
five namespaces), interleaved, N runs each (30; 8 with --quick). The core
is timed through the agent's own path: `Core.run()` (request to the
pre-warmed zygote, clone, set-up, exec, wait for the exit code) plus
`Core.delete()` clean-up outside the timing; runc is timed as `runc run`
(which also cleans up its cgroups) plus the overlay mount it needs on the
host. Prints a table and, last, one JSON line.

Usage: bench/runtime_start.py [--quick] [--pool N]   (root; busybox-static, runc)
--pool 0 times the zygote cloning per request (no prepared sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.runtime import linux  # noqa: E402
from agent.runtime.base import ContainerIO  # noqa: E402
from agent.runtime.core import Core  # noqa: E402
from agent.runtime.spec import Overlay, SpecOptions, build_spec, write_bundle  # noqa: E402
from gantry import hostclean  # noqa: E402


def busybox_root(root: Path) -> Path:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "dev", "sys", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s"], check=True)
    return root


def bundle_for(base: Path, name: str, lower: Path, prefix: str) -> Path:
    upper, work = base / f"{name}-upper", base / f"{name}-work"
    for d in (upper, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    opts = SpecOptions(
        args=("/bin/true",),
        hostname=name,
        overlay=Overlay(lower=(str(lower),), upper=str(upper), work=str(work)),
        memory_bytes=128 << 20,
        pids_limit=64,
        cpu_quota_us=100_000,
        cgroups_path=f"/{prefix}/{name}",
    )
    return write_bundle(base / f"{name}-bundle", build_spec(opts))


async def time_core(core: Core, base: Path, lower: Path, prefix: str, i: int) -> float:
    name = f"core{i}"
    bundle = bundle_for(base, name, lower, prefix)
    t0 = time.perf_counter()
    code = await core.run(name, bundle, ContainerIO())
    dt = time.perf_counter() - t0
    await core.delete(name)
    if code != 0:
        raise SystemExit(f"core run {name}: exit code {code}")
    return dt * 1000


def time_runc(base: Path, lower: Path, prefix: str, i: int) -> float:
    name = f"runc{i}"
    bundle = bundle_for(base, name, lower, prefix)
    root = str(base / "runc-root")
    rootfs = str(bundle / "rootfs")
    upper, work = base / f"{name}-upper", base / f"{name}-work"
    t0 = time.perf_counter()
    linux.mount(
        "overlay", rootfs, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}"
    )
    rc = subprocess.run(
        ["runc", "--root", root, "run", "--bundle", str(bundle), name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    dt = time.perf_counter() - t0
    linux.umount2(rootfs, linux.MNT_DETACH)
    if rc.returncode != 0:
        raise SystemExit(f"runc run {name}: exit {rc.returncode}: {rc.stderr.decode().strip()}")
    return dt * 1000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


async def bench(core: Core, base: Path, lower: Path, prefix: str, runs: int) -> dict[str, float]:
    core_ms: list[float] = []
    runc_ms: list[float] = []
    # one warm-up each, not counted
    await time_core(core, base, lower, prefix, -1)
    time_runc(base, lower, prefix, -1)
    for i in range(runs):
        core_ms.append(await time_core(core, base, lower, prefix, i))
        runc_ms.append(time_runc(base, lower, prefix, i))
    res = {
        "runs": runs,
        "core_median_ms": round(statistics.median(core_ms), 2),
        "core_p90_ms": round(pct(core_ms, 0.9), 2),
        "runc_median_ms": round(statistics.median(runc_ms), 2),
        "runc_p90_ms": round(pct(runc_ms, 0.9), 2),
    }
    res["ratio_median"] = round(res["core_median_ms"] / res["runc_median_ms"], 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 runs each (finishes well under 60 s)")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--pool", type=int, default=1, help="prepared sandboxes (0: clone per request)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runtime_start: needs root")
    runs = args.runs or (8 if args.quick else 30)
    prefix = "gtb" + secrets.token_hex(2)
    base = Path(tempfile.mkdtemp(prefix="gantry-bench-"))
    lower = busybox_root(base / "lower")
    core = Core.prefork(
        state_dir=base / "state", prefix=prefix, pool_size=args.pool
    )  # before any thread
    try:
        res = asyncio.run(bench(core, base, lower, prefix, runs))
    finally:
        core.close()
        hostclean.sweep(prefix, state_dir=base)
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"{'runtime':<8} {'median ms':>10} {'p90 ms':>10}   (busybox true, {runs} interleaved runs)"
    )
    print(f"{'core':<8} {res['core_median_ms']:>10.2f} {res['core_p90_ms']:>10.2f}")
    print(f"{'runc':<8} {res['runc_median_ms']:>10.2f} {res['runc_p90_ms']:>10.2f}")
    print(f"ratio (core/runc, median): {res['ratio_median']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
