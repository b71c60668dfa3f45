"""`gantry up` / `status` / `down` on the real machine, with private ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gantry import hostclean, launcher, procs

PORT_FLAGS = (
    "etcd-port", "etcd-peer-port", "registry-port", "controller-port",
    "controller-metrics-port", "agent-port", "proxy-port", "proxy-admin-port",
)  # fmt: skip


def gantry(*args: str, state_dir: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gantry.cli.main", "--state-dir", str(state_dir), *args],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )  # fmt: skip


def port_args() -> list[str]:
    out: list[str] = []
    for flag in PORT_FLAGS:
        out += [f"--{flag}", str(procs.free_port())]
    return out


def test_up_status_down_leaves_nothing(tmp_path: Path, host_sweep: str) -> None:
    state = tmp_path / "state"
    up = gantry(
        "up",
        *port_args(),
        "--prefix",
        host_sweep,
        "--no-images",
        "--proxy-workers",
        "1",
        state_dir=state,
    )
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        status = gantry("status", state_dir=state)
        assert status.returncode == 0, status.stdout + status.stderr
        healthy = [line.split()[0] for line in status.stdout.splitlines() if " healthy " in line]
        assert healthy == list(launcher.PART_ORDER)
        settings = launcher.load_cluster_settings(state, {})
        assert launcher.grpc_serving(f"127.0.0.1:{settings.controller_port}")
        pids = [launcher.recorded_pid(settings, name) for name in launcher.PART_ORDER]
        assert all(pids)
        again = gantry("up", state_dir=state)
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("already running") == 5
        assert [launcher.recorded_pid(settings, n) for n in launcher.PART_ORDER] == pids
    finally:
        down = gantry("down", state_dir=state)
    assert down.returncode == 0, down.stderr
    assert not any(procs.pid_alive(pid) for pid in pids if pid)
    assert hostclean.leftovers(host_sweep, state_dir=state) == []
    stopped = gantry("status", state_dir=state)
    assert stopped.returncode == 1
    assert stopped.stdout.count(" stopped ") == 5


def test_up_with_a_taken_port_names_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = port_args()
        args[args.index("--registry-port") + 1] = str(port)
        result = gantry("up", *args, "--no-images", state_dir=tmp_path / "state", timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} (registry)" in lines[0] and "--registry-port" in lines[0]
    assert not (tmp_path / "state" / "run" / "etcd.pid").exists()


def test_up_with_a_missing_binary_names_the_fix(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # no etcd on this PATH
    result = subprocess.run(
        [sys.executable, "-m", "gantry.cli.main", "--state-dir", str(tmp_path / "s"), "up", *port_args()],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "etcd not found" in result.stderr and "apt-get install etcd-server" in result.stderr


@pytest.mark.parametrize("bad", ["--etcd-port=notaport"])
def test_bad_flag_is_one_line(tmp_path: Path, bad: str) -> None:
    result = gantry("up", bad, state_dir=tmp_path)
    assert result.returncode == 2
    assert "invalid int value" in result.stderr
