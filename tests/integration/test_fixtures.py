"""The harness's own fixtures start real services and clean the host."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from gantry import hostclean

ROOT = Path(__file__).resolve().parents[2]


def test_etcd_fixture_serves_kv(etcd: str) -> None:
    out = subprocess.run(
        ["etcdctl", "--endpoints", etcd, "put", "/gantry-test/k", "v"],
        capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3"},
    )  # fmt: skip
    assert out.stdout.strip() == "OK"


def test_registry_fixture_answers_v2(registry: str) -> None:
    with urllib.request.urlopen(f"http://{registry}/v2/_catalog", timeout=5) as resp:
        assert json.load(resp) == {"repositories": []}


def test_sweep_removes_netns_link_and_nft_table(host_prefix: str) -> None:
    ns, br = f"{host_prefix}-ns", f"{host_prefix}br"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "link", "add", br, "type", "bridge"], check=True)
    subprocess.run(["nft", "add", "table", "ip", f"{host_prefix}nat"], check=True)
    assert len(hostclean.leftovers(host_prefix)) == 3
    result = hostclean.sweep(host_prefix)
    assert sorted(result.removed) == sorted(
        [f"netns {ns}", f"link {br}", f"nft table ip {host_prefix}nat"]
    )
    assert result.left == []


pytest_plugins = ["pytester"]


def test_leaked_task_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(
        test_leak="""
import asyncio

async def test_leaks():
    asyncio.get_running_loop().create_task(asyncio.sleep(60), name="forgotten-sleeper")

async def test_tidy():
    task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
    await task
"""
    )
    result = pytester.runpytest_subprocess(
        "-p", "asyncio", "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"
    )  # fmt: skip
    # The leaking test itself passes, then its teardown fails it; the tidy one passes.
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*left 1 asyncio task(s) running: forgotten-sleeper*"])


def test_check_proto_fails_when_a_proto_changes_without_regenerating(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, work / name)
    shutil.copytree(ROOT / "proto", work / "proto")
    shutil.copytree(ROOT / "gantry" / "v1", work / "gantry" / "v1")
    (work / ".venv").symlink_to(ROOT / ".venv")
    ok = subprocess.run(
        ["make", "-s", "check-proto"], cwd=work, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    proto = work / "proto" / "gantry" / "v1" / "types.proto"
    proto.write_text(
        proto.read_text().replace("message EnvVar {", "message EnvVar {\n  string secret = 9;")
    )
    stale = subprocess.run(
        ["make", "-s", "check-proto"], cwd=work, capture_output=True, text=True, check=False
    )
    assert stale.returncode != 0
    assert "types_pb2.py is out of date with proto/: run 'make proto'" in stale.stdout
