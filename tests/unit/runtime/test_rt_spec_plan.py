"""Pure: spec building, parsing into a plan, and the errors bad bundles get."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.runtime import plan
from agent.runtime.base import BundleError
from agent.runtime.spec import (
    ANN_LOWER,
    DENIED_SYSCALLS,
    MASKED_PATHS,
    READONLY_PATHS,
    Overlay,
    SpecOptions,
    build_spec,
    cpus_to_quota,
)

B = Path("/b")


def spec(**kw: object) -> dict:
    return build_spec(SpecOptions(args=("/bin/true",), **kw))  # type: ignore[arg-type]


def test_docker_defaults() -> None:
    s = spec(hostname="web-1")
    p = plan.parse(B, s)
    assert p.cap_bounding == p.cap_effective == p.cap_permitted == 0xA80425FB
    assert p.cap_inheritable == p.cap_ambient == 0
    assert p.no_new_privs
    assert s["hostname"] == "web-1" and p.hostname == "web-1"
    assert p.masked_paths == list(MASKED_PATHS) and p.readonly_paths == list(READONLY_PATHS)
    assert [m.destination for m in p.mounts] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
    ]
    sysfs = p.mounts[-1]
    assert sysfs.flags & plan.MS_RDONLY and sysfs.flags & plan.MS_NOSUID
    assert {n["type"] for n in s["linux"]["namespaces"]} == {
        "pid",
        "mount",
        "uts",
        "ipc",
        "network",
    }
    assert p.new_netns and p.netns_path == ""
    assert set(DENIED_SYSCALLS) <= set(s["linux"]["seccomp"]["syscalls"][0]["names"])
    assert p.seccomp_hex


def test_network_by_path_resources_and_overlay() -> None:
    s = spec(
        netns_path="/var/run/netns/gt-x",
        memory_bytes=64 << 20,
        cpu_quota_us=cpus_to_quota(0.5),
        cpu_shares=512,
        pids_limit=10,
        cgroups_path="/gt/x",
        overlay=Overlay(lower=("/l2", "/l1"), upper="/u", work="/w"),
        uid=1000,
        gid=1000,
    )
    p = plan.parse(B, s)
    assert not p.new_netns and p.netns_path == "/var/run/netns/gt-x"
    assert p.resources.memory_bytes == 64 << 20
    assert (p.resources.cpu_quota_us, p.resources.cpu_period_us, p.resources.cpu_shares) == (
        50_000,
        100_000,
        512,
    )
    assert p.resources.pids_limit == 10 and p.cgroups_path == "/gt/x"
    assert p.overlay_lower == ["/l2", "/l1"] and s["annotations"][ANN_LOWER] == "/l2:/l1"
    assert (p.overlay_upper, p.overlay_work) == ("/u", "/w")
    assert (p.uid, p.gid) == (1000, 1000)
    assert p.rootfs == "/b/rootfs"
    assert plan.Plan.from_json(json.loads(json.dumps(p.to_json()))) == p


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("process"), "process is missing"),
        (lambda s: s["process"].update(args=[]), "process.args"),
        (lambda s: s["root"].update(path=""), "root.path"),
        (
            lambda s: s["process"]["capabilities"].update(bounding=["CAP_NOPE"]),
            "unknown capability 'CAP_NOPE'",
        ),
        (lambda s: s["linux"].update(namespaces=[{"type": "mount"}]), "'pid'"),
        (
            lambda s: s["mounts"].append({"destination": "rel/x", "type": "tmpfs"}),
            "mounts[6].destination",
        ),
        (lambda s: s["linux"]["resources"].update(memory={"limit": "lots"}), "memory.limit"),
        (lambda s: s["process"]["rlimits"].append({"type": "RLIMIT_X"}), "rlimits[1].type"),
        (
            lambda s: s["linux"]["seccomp"].update(defaultAction="SCMP_ACT_TRACE"),
            "unsupported seccomp action",
        ),
    ],
)
def test_bad_bundles_get_one_line_errors(mutate: object, message: str) -> None:
    s = spec()
    mutate(s)  # type: ignore[operator]
    with pytest.raises(BundleError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        plan.parse(B, s)
    assert "\n" not in str(e.value)


def test_mount_flags() -> None:
    flags, data = plan.mount_flags(["nosuid", "ro", "mode=755", "size=1k", "rprivate", "rbind"])
    assert flags == plan.MS_NOSUID | plan.MS_RDONLY | plan.MS_BIND | plan.MS_REC
    assert data == "mode=755,size=1k"


def test_empty_args_rejected() -> None:
    with pytest.raises(ValueError, match="process.args"):
        build_spec(SpecOptions(args=()))
