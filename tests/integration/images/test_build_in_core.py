"""`gantry build` runs RUN steps in Gantry's own isolation core."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from agent.images.demo import build_demo_images
from agent.images.service import Images
from gantry import hostclean

GANTRYFILE = """FROM busybox:latest
RUN echo "$(cat /proc/1/comm) $(grep CapEff /proc/self/status | tr -d '\\t')" > /proof.txt
CMD ["cat", "/proof.txt"]
"""


async def base_image(root: Path) -> None:
    async with Images(root) as images:
        await build_demo_images(images)


async def proofs(root: Path) -> list[str]:
    async with Images(root) as images:
        img = await images.resolve("proof:v1", pull=False)
    return [
        (d / "proof.txt").read_text().strip() for d in img.layer_dirs if (d / "proof.txt").exists()
    ]


def test_cli_build_runs_steps_under_the_core_init(tmp_path: Path) -> None:
    state = tmp_path / "state"
    asyncio.run(base_image(state / "images"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Gantryfile").write_text(GANTRYFILE)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gantry.cli.main", "--state-dir", str(state), "build", "-t", "proof:v1", str(ctx)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        # PID 1 of the build container is the core's init; Docker's capabilities.
        assert asyncio.run(proofs(state / "images")) == ["gantry-init CapEff:00000000a80425fb"]
    finally:
        hostclean.sweep("gantry-build", state_dir=state)
    assert hostclean.leftovers("gantry-build", state_dir=state) == []
