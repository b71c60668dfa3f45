"""The same bundles under the core and under runc: what the process inside sees.

Every container here runs busybox from an overlay root; each test compares
the two runtimes, or checks a property both must have. The core alone is
asked for its init (runc runs the application as PID 1).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from rtkit import io_for, make_bundle, parse_kv, run_capture, wait_for_text

from agent.runtime import cgroups
from agent.runtime.base import BundleError, Status
from agent.runtime.core import Core
from agent.runtime.runc import Runc
from agent.runtime.spec import SpecOptions

DOCKER_CAPS = "00000000a80425fb"

OBSERVE = r"""
echo "pid=$$"
echo "ppid=$PPID"
echo "hostname=$(hostname)"
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
set -- /proc/[0-9]*; echo "nprocs=$#"
echo "ifaces=$(ls /sys/class/net | tr '\n' ' ')"
echo "pid1=$(cat /proc/1/comm)"
mount -t tmpfs none /mnt 2>/dev/null && echo mount=ok || echo mount=refused
unshare -n true 2>/dev/null && echo unshare=ok || echo unshare=refused
(echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo procsys=ok || echo procsys=refused
(echo x > /sys/kernel/uevent_helper) 2>/dev/null && echo sys=ok || echo sys=refused
cat /proc/kcore 2>/dev/null | head -c 1 | wc -c | sed 's/^/kcore=/'
echo "user=$(id -u):$(id -g)"
echo "cwd=$(pwd)"
echo "env=$GREETING"
echo "nofile=$(ulimit -n)"
"""


def observe_opts(host_prefix: str, cid: str) -> SpecOptions:
    return SpecOptions(
        args=("/bin/sh", "-c", OBSERVE),
        env=("PATH=/bin:/sbin:/usr/bin:/usr/sbin", "GREETING=hello"),
        cwd="/tmp",
        hostname=f"{cid}-host",
        memory_bytes=64 << 20,
        pids_limit=64,
        cpu_quota_us=50_000,
        cgroups_path=f"/{host_prefix}/{cid}",
    )


async def test_same_bundle_same_observations(
    core: Core, cold_core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    seen = {}
    for key, rt in (("core", core), ("cold", cold_core), ("runc", runc)):
        cid = f"obs-{key}"
        bundle = make_bundle(tmp_path, cid, busybox_root, observe_opts(host_prefix, "obs"))
        code, out, err = await run_capture(rt, cid, bundle, io_for(tmp_path, cid))
        assert code == 0, (rt.name, out, err)
        seen[key] = parse_kv(out)
    c, r = seen["core"], seen["runc"]
    for kv in seen.values():
        assert kv["hostname"] == "obs-host"
        assert kv["CapEff"] == kv["CapBnd"] == kv["CapPrm"] == DOCKER_CAPS
        assert kv["CapInh"] == kv["CapAmb"] == "0000000000000000"
        assert kv["NoNewPrivs"] == "1"
        assert kv["Seccomp"] == "2"
        assert kv["ifaces"].split() == ["lo"]  # own network namespace, none of the host's
        assert int(kv["nprocs"]) <= 4  # only the container's own processes
        assert kv["mount"] == kv["unshare"] == kv["procsys"] == kv["sys"] == "refused"
        assert kv["kcore"] == "0"
        assert kv["user"] == "0:0" and kv["cwd"] == "/tmp" and kv["env"] == "hello"
        assert kv["nofile"] == "1024"
    comparable = (
        "hostname",
        "CapEff",
        "CapBnd",
        "CapPrm",
        "CapInh",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "ifaces",
    )
    assert {k: c[k] for k in comparable} == {k: r[k] for k in comparable}
    assert {k: c[k] for k in comparable} == {k: seen["cold"][k] for k in comparable}
    # fresh PID namespace: under the core an init is PID 1 and the app its child
    assert (c["pid"], c["ppid"]) == (seen["cold"]["pid"], seen["cold"]["ppid"]) == ("2", "1")
    assert r["pid"] == "1"


async def test_core_runs_as_the_spec_user(
    core: Core, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    opts = SpecOptions(
        args=("/bin/sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"),
        uid=65534,
        gid=65534,
        cgroups_path=f"/{host_prefix}/user",
    )
    bundle = make_bundle(tmp_path, "user", busybox_root, opts)
    code, out, err = await run_capture(core, "user", bundle, io_for(tmp_path, "user"))
    assert code == 0, err
    assert out.split()[:2] == ["65534", "65534"]
    assert "0000000000000000" in out


ESCAPES = r"""
ls /{marker_name} >/dev/null 2>&1 && echo hostfile=visible || echo hostfile=hidden
cat {marker_path} >/dev/null 2>&1 && echo hostpath=read || echo hostpath=unreachable
kill -0 {host_pid} 2>/dev/null && echo hostsignal=sent || echo hostsignal=failed
mknod /tmp/disk b {major} {minor} && (dd if=/tmp/disk of=/dev/null bs=512 count=1 2>/dev/null && echo disk=read || echo disk=denied)
echo garbage > /tmp/m.ko; insmod /tmp/m.ko 2>&1 | grep -q 'not permitted' && echo module=refused || echo module=other
reboot -f 2>/dev/null; echo reboot=returned
chroot / true 2>/dev/null; nsenter -t 1 -m true 2>/dev/null && echo nsenter=ok || echo nsenter=refused
"""


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_escape_attempts_fail(
    which: str, core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    rt = core if which == "core" else runc
    marker = tmp_path / "host-secret"
    marker.write_text("secret")
    dev = os.stat("/").st_dev
    script = ESCAPES.format(
        marker_name=marker.name,
        marker_path=marker,
        host_pid=os.getpid(),
        major=os.major(dev),
        minor=os.minor(dev),
    )
    opts = SpecOptions(args=("/bin/sh", "-c", script), cgroups_path=f"/{host_prefix}/esc")
    bundle = make_bundle(tmp_path, f"esc-{which}", busybox_root, opts)
    code, out, err = await run_capture(rt, f"esc-{which}", bundle, io_for(tmp_path, f"esc-{which}"))
    kv = parse_kv(out)
    assert kv["hostfile"] == "hidden" and kv["hostpath"] == "unreachable", out
    assert kv["hostsignal"] == "failed", out
    assert kv.get("disk") in ("denied", None), out  # mknod may be refused too; reading must be
    assert kv["module"] == "refused", out
    assert kv["reboot"] == "returned", out  # reboot(2) refused: the script went on
    assert kv["nsenter"] == "refused", out
    assert marker.read_text() == "secret"


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_memory_hog_is_oom_killed(
    which: str, core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    rt = core if which == "core" else runc
    opts = SpecOptions(
        args=("/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"),
        memory_bytes=32 << 20,
        cgroups_path=f"/{host_prefix}/hog",
    )
    bundle = make_bundle(tmp_path, f"hog-{which}", busybox_root, opts)
    code, out, err = await run_capture(rt, f"hog-{which}", bundle, io_for(tmp_path, f"hog-{which}"))
    assert code == 128 + signal.SIGKILL, (code, err)


FORK_BOMB = r"""
(i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); done)
set -- /proc/[0-9]*
echo "nprocs=$#"
"""


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_fork_bomb_stops_at_pids_limit(
    which: str, core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    rt = core if which == "core" else runc
    limit = 12
    opts = SpecOptions(
        args=("/bin/sh", "-c", FORK_BOMB), pids_limit=limit, cgroups_path=f"/{host_prefix}/bomb"
    )
    bundle = make_bundle(tmp_path, f"bomb-{which}", busybox_root, opts)
    # run_capture deletes with force even on failure, which kills every sleeper
    code, out, err = await run_capture(
        rt, f"bomb-{which}", bundle, io_for(tmp_path, f"bomb-{which}")
    )
    assert "nprocs" in out, (code, out, err[-500:])
    nprocs = int(parse_kv(out)["nprocs"])
    assert nprocs <= limit, out
    assert "can't fork" in err or "Resource temporarily unavailable" in err, err


async def test_core_init_reaps_zombies(
    core: Core, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    script = r"""
    sh -c 'sleep 0.2 & exit 0'
    for i in $(seq 100); do
      zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ')
      sleepers=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$')
      if [ "$sleepers" = 0 ] && [ "$zombies" = 0 ]; then echo reaped; exit 0; fi
      sleep 0.1
    done
    echo "zombies=$zombies sleepers=$sleepers"
    """
    opts = SpecOptions(args=("/bin/sh", "-c", script), cgroups_path=f"/{host_prefix}/zomb")
    bundle = make_bundle(tmp_path, "zomb", busybox_root, opts)
    code, out, err = await run_capture(core, "zomb", bundle, io_for(tmp_path, "zomb"))
    assert out.strip() == "reaped", (out, err)


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_sigterm_reaches_the_application(
    which: str, core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    rt = core if which == "core" else runc
    script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done"
    opts = SpecOptions(args=("/bin/sh", "-c", script), cgroups_path=f"/{host_prefix}/term")
    cid = f"term-{which}"
    bundle = make_bundle(tmp_path, cid, busybox_root, opts)
    io = io_for(tmp_path, cid)
    try:
        await rt.create(cid, bundle, io)
        assert (await rt.state(cid)).status == Status.CREATED
        await rt.start(cid)
        await wait_for_text(io.stdout, "ready")  # type: ignore[arg-type]
        assert (await rt.state(cid)).status == Status.RUNNING
        await rt.kill(cid, signal.SIGTERM)
        assert await rt.wait(cid) == 7
        st = await rt.state(cid)
        assert st.status == Status.STOPPED and st.exit_code == 7
        assert "got-term" in io.stdout.read_text()  # type: ignore[union-attr]
    finally:
        await rt.delete(cid, force=True)
    assert [s.id for s in await rt.list()] == []


async def test_bad_bundles_get_one_line_errors(
    core: Core, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    missing = tmp_path / "no-bundle"
    with pytest.raises(BundleError, match="config.json: no such file"):
        await core.create("nob", missing, io_for(tmp_path, "nob"))
    for name, autostart in (("noexe", False), ("noexe2", True)):
        opts = SpecOptions(
            args=("/bin/definitely-not-here",), cgroups_path=f"/{host_prefix}/{name}"
        )
        bundle = make_bundle(tmp_path, name, busybox_root, opts)
        with pytest.raises(BundleError, match="definitely-not-here") as e:
            await core.create(name, bundle, io_for(tmp_path, name), autostart=autostart)
        assert "\n" not in str(e.value)
    assert await core.list() == []
    with pytest.raises(BundleError, match="container id"):
        await core.create("../evil", missing, io_for(tmp_path, "evil"))


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_exec_runs_inside_under_the_containers_limits(
    which: str, core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    rt = core if which == "core" else runc
    cid = f"ex-{which}"
    opts = SpecOptions(
        args=("/bin/sh", "-c", "echo inside > /tmp/mark; echo ready; exec sleep 600"),
        hostname="exec-host",
        cgroups_path=f"/{host_prefix}/{cid}",
    )
    bundle = make_bundle(tmp_path, cid, busybox_root, opts)
    io = io_for(tmp_path, cid)
    try:
        await rt.create(cid, bundle, io)
        await rt.start(cid)
        await wait_for_text(io.stdout, "ready")  # type: ignore[arg-type]
        assert await rt.exec(cid, ["grep", "-q", "inside", "/tmp/mark"], 30) == 0  # its root
        assert await rt.exec(cid, ["sh", "-c", '[ "$(hostname)" = exec-host ]'], 30) == 0
        caps = "grep -q 'CapEff:.00000000a80425fb' /proc/self/status && grep -q 'Seccomp:.2' /proc/self/status"
        assert await rt.exec(cid, ["sh", "-c", caps], 30) == 0
        assert await rt.exec(cid, ["sh", "-c", "mount -t tmpfs none /mnt"], 30) != 0
        assert await rt.exec(cid, ["sh", "-c", "exit 3"], 30) == 3
        before = len(cgroups.pids_in(rt.layout, f"/{host_prefix}/{cid}"))
        with pytest.raises(TimeoutError):
            await rt.exec(cid, ["sleep", "30"], 0.5)
        assert (await rt.state(cid)).status == Status.RUNNING
        if which == "core":  # the timed-out command was killed with its helper
            deadline = time.monotonic() + 30
            while len(cgroups.pids_in(rt.layout, f"/{host_prefix}/{cid}")) != before:
                assert time.monotonic() < deadline, "a timed-out exec is still running"
                await asyncio.sleep(0.05)
    finally:
        await rt.delete(cid, force=True)


@pytest.mark.parametrize("which", ["core", "runc"])
async def test_default_cgroup_is_under_the_prefix(
    which: str, core: Core, runc: Runc, busybox_root: Path, tmp_path: Path, host_prefix: str
) -> None:
    rt = core if which == "core" else runc
    cid = f"{which}-cg"
    opts = SpecOptions(args=("/bin/cat", "/proc/self/cgroup"), memory_bytes=64 << 20)
    bundle = make_bundle(tmp_path, cid, busybox_root, opts)
    code, out, err = await run_capture(rt, cid, bundle, io_for(tmp_path, cid))
    assert code == 0, err
    assert f"memory:/{host_prefix}/{cid}" in out, out
    assert f"pids:/{host_prefix}/{cid}" in out, out
