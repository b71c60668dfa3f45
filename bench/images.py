"""Image figures: pull (cold and warm) and build (cold and cached) of the demo image.

    .venv/bin/python bench/images.py [--quick]

Starts a private registry (Debian's docker-registry) on a free loopback port
in a temp dir. build_cold_s = the demo images from an empty store and cache
(busybox rootfs laid out and imported, hello v1 and v2 built); build_cached_s =
the same build again (every step from the cache). pull_cold_s = hello:v1 into
an empty store, layers unpacked (what a node does the first time);
pull_warm_s = pulling it again with everything held (one manifest request).
Each figure is the median of the rounds (5, or 1 with --quick). Prints a
table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.images.demo import DEPLOY, build_demo_images  # noqa: E402
from agent.images.service import Images  # noqa: E402
from gantry import procs  # noqa: E402


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def one_round(tmp: Path, registry: str, n: int) -> dict[str, float]:
    ref = f"{registry}/hello:v1"
    build_root, node_root = tmp / f"build{n}", tmp / f"node{n}"
    out: dict[str, float] = {}
    async with Images(build_root) as builder:
        out["build_cold_s"] = await timed(lambda: build_demo_images(builder))
        ctx = DEPLOY / "hello"
        out["build_cached_s"] = await timed(
            lambda: builder.build(ctx, "hello:v1", gantryfile=ctx / "Gantryfile.v1")
        )
        await builder.push(ref, source="hello:v1")
    async with Images(node_root) as node:
        out["pull_cold_s"] = await timed(lambda: node.resolve(ref))
        out["pull_warm_s"] = await timed(lambda: node.pull(ref))
    shutil.rmtree(build_root, ignore_errors=True)
    shutil.rmtree(node_root, ignore_errors=True)
    return out


async def run(rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gantry-bench-images-") as d:
        tmp = Path(d)
        svc = procs.start_registry(tmp / "registry")
        try:
            registry = svc.extra["endpoint"]
            results = [await one_round(tmp, registry, n) for n in range(rounds)]
        finally:
            svc.stop()
    keys = ("pull_cold_s", "pull_warm_s", "build_cold_s", "build_cached_s")
    return {k: round(statistics.median(r[k] for r in results), 4) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of five")
    args = parser.parse_args()
    rounds = 1 if args.quick else 5
    figures = asyncio.run(run(rounds))
    print(f"demo image hello:v1, median of {rounds} round(s)")
    print(f"{'figure':<16}{'seconds':>10}")
    for key, value in figures.items():
        print(f"{key:<16}{value:>10.4f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
