"""Containers outlive the process that made them; a new runtime adopts them.

A child Python process plays the agent: it creates and starts a container
and is then killed with SIGKILL. The container must keep running, and a new
Core (or Runc) over the same state dir must list it, signal it, collect its
exit code and delete it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from rtkit import io_for, make_bundle, wait_for_text

from agent.runtime import linux
from agent.runtime.base import Status
from agent.runtime.core import Core
from agent.runtime.runc import Runc
from agent.runtime.spec import SpecOptions

ROOT = Path(__file__).resolve().parents[3]

AGENT = """
import asyncio, sys
from pathlib import Path
from agent.runtime.base import ContainerIO
which, state, prefix = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if which == "core":
    from agent.runtime.core import Core
    rt = Core.prefork(state_dir=state, prefix=prefix)
else:
    from agent.runtime.runc import Runc
    rt = Runc(state_dir=state, prefix=prefix)

async def main():
    for cid, bundle, out, err in zip(*[iter(sys.argv[4:])] * 4):
        await rt.create(cid, Path(bundle), ContainerIO(Path(out), Path(err)))
        await rt.start(cid)
    print("started", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""

SCRIPT = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done"


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_containers_survive_agent_death_and_are_adopted(
    which: str, core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    rt = core if which == "core" else runc
    state_dir = rt.state_dir
    args = []
    for cid in ("a1", "a2"):
        opts = SpecOptions(args=("/bin/sh", "-c", SCRIPT), cgroups_path=f"/{host_prefix}/{cid}")
        bundle = make_bundle(tmp_path, f"{which}-{cid}", busybox_root, opts)
        io = io_for(tmp_path, f"{which}-{cid}")
        args += [cid, str(bundle), str(io.stdout), str(io.stderr)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, which, str(state_dir), host_prefix, *args,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.strip() == b"started"
        await wait_for_text(tmp_path / f"{which}-a1.out", "ready")
        await wait_for_text(tmp_path / f"{which}-a2.out", "ready")
    finally:
        proc.kill()
        await proc.wait()

    # the "agent" is dead; its containers are not
    states = {s.id: s for s in await rt.list()}
    assert set(states) == {"a1", "a2"}
    assert all(s.status == Status.RUNNING for s in states.values()), states
    pid1 = states["a1"].pid
    assert linux.start_time(pid1) > 0
    assert os.getppid() != pid1

    try:
        # graceful stop: the exit code is the application's own
        await rt.kill("a1", signal.SIGTERM)
        assert await asyncio.wait_for(rt.wait("a1"), timeout=60) == 7
        assert (await rt.state("a1")).exit_code == 7
        # hard stop: 128 + SIGKILL even with nobody left who started it
        await rt.kill("a2", signal.SIGKILL)
        assert await asyncio.wait_for(rt.wait("a2"), timeout=60) == 128 + signal.SIGKILL
    finally:
        for cid in ("a1", "a2"):
            await rt.delete(cid, force=True)
    assert await rt.list() == []
