"""The kubectl-like CLI against a real local cluster (`gantry up`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gantry import hostclean, procs

PORTS = ("etcd-port", "etcd-peer-port", "registry-port", "controller-port",
         "controller-metrics-port", "agent-port", "proxy-port", "proxy-admin-port")  # fmt: skip


class Local:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.registry = ""

    def gantry(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gantry.cli.main", "--state-dir", str(self.state), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def ok(self, *args: str) -> str:
        result = self.gantry(*args)
        assert result.returncode == 0, f"gantry {' '.join(args)}: {result.stderr}"
        return result.stdout


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    import secrets

    prefix = "gt" + secrets.token_hex(3)
    state = tmp_path_factory.mktemp("local") / "state"
    lc = Local(state)
    ports: list[str] = []
    for flag in PORTS:
        ports += [f"--{flag}", str(procs.free_port())]
    registry_port = ports[ports.index("--registry-port") + 1]
    lc.registry = f"127.0.0.1:{registry_port}"
    try:
        lc.ok("up", *ports, "--prefix", prefix, "--proxy-workers", "1")
        yield lc
    finally:
        lc.gantry("down")
        hostclean.sweep(prefix, state_dir=state)
    assert hostclean.leftovers(prefix, state_dir=state) == []


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def manifest(tmp_path: Path, registry: str, replicas: int | str = 2, extra: str = "") -> Path:
    path = tmp_path / "web.yaml"
    path.write_text(
        "apiVersion: gantry/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
        f"  replicas: {replicas}\n  template:\n    image: {registry}/hello:v1\n"
        "    ports:\n      - {name: http, containerPort: 8080}\n"
        "    readinessProbe:\n      httpGet: {path: /healthz, port: http}\n      periodSeconds: 1\n"
        f"{extra}"
    )
    return path


def ready(local: Local, name: str, want: int) -> bool:
    out = local.gantry("get", "deployments", name, "-o", "json")
    if out.returncode != 0:
        return False
    (dep,) = json.loads(out.stdout)
    return dep.get("status", {}).get("readyReplicas", 0) == want == dep["status"].get("replicas", 0)


def test_apply_is_declarative_and_dry_run_writes_nothing(local: Local, tmp_path: Path) -> None:
    path = manifest(tmp_path, local.registry)
    assert local.ok("apply", "-f", str(path)).strip() == "deployment/web created"
    assert local.ok("apply", "-f", str(path)).strip() == "deployment/web unchanged"
    wait_for("web 2/2 ready", lambda: ready(local, "web", 2))
    bigger = manifest(tmp_path, local.registry, replicas=4)
    assert (
        local.ok("apply", "-f", str(bigger), "--dry-run").strip()
        == "deployment/web configured (dry run)"
    )
    (dep,) = json.loads(local.ok("get", "deployments", "web", "-o", "json"))
    assert dep["spec"]["replicas"] == 2
    nodes = local.ok("get", "nodes", "-o", "wide")
    assert "Ready" in nodes and "node-1" in nodes


def test_scale_describe_and_replicas(local: Local, tmp_path: Path) -> None:
    local.ok("apply", "-f", str(manifest(tmp_path, local.registry)))
    assert "scaled to 3" in local.ok("scale", "web", "--replicas", "3")
    wait_for("web 3/3 ready", lambda: ready(local, "web", 3))
    reps = json.loads(local.ok("get", "replicas", "web", "-o", "json"))
    live = [
        r
        for r in reps
        if r.get("deployment") == "web" and r.get("phase") == "Running" and r.get("ready")
    ]
    assert len(live) == 3 and all(r["ports"][0]["hostPort"] for r in live)
    text = local.ok("describe", "deployment", "web")
    assert "Events:" in text and "Scaled" in text and "scaled to 3" in text
    assert text.count("Running") >= 3


def test_invalid_manifest_is_located_and_changes_nothing(local: Local, tmp_path: Path) -> None:
    before = local.ok("get", "deployments", "-o", "json")
    bad = manifest(tmp_path, local.registry, replicas='"three"', extra="    workingdir: /app\n")
    result = local.gantry("apply", "-f", str(bad))
    assert result.returncode != 0
    assert 'web.yaml:6 spec.replicas: expected an integer >= 0, got "three"' in result.stderr
    assert "workingDir" in result.stderr  # did-you-mean
    assert "Traceback" not in result.stderr
    assert local.ok("get", "deployments", "-o", "json") == before


def test_run_logs_and_delete(local: Local) -> None:
    out = local.ok(
        "run", "one", "--image", f"{local.registry}/hello:v1", "--port", "8080", "--replicas", "1"
    )
    assert out.strip() == "deployment/one created"
    wait_for("one 1/1 ready", lambda: ready(local, "one", 1))
    (rep,) = [
        r
        for r in json.loads(local.ok("get", "replicas", "one", "-o", "json"))
        if r["deployment"] == "one"
    ]
    logs = local.gantry("logs", rep["name"], "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    assert local.ok("delete", "deployment", "one").strip() == "deployment/one deleted"
    wait_for("one's replicas gone", lambda: not [
        r for r in json.loads(local.ok("get", "replicas", "-o", "json")) if r["deployment"] == "one"])  # fmt: skip


def test_errors_are_one_line_with_exit_codes(local: Local) -> None:
    missing = local.gantry("get", "deployments", "nosuch")
    assert missing.returncode == 3
    assert missing.stderr.strip().count("\n") == 0 and "not found" in missing.stderr
    bad_scale = local.gantry("scale", "web", "--replicas", "-1")
    assert bad_scale.returncode == 2 and "expected an integer >= 0" in bad_scale.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "gantry.cli.main", "--controller", f"127.0.0.1:{procs.free_port()}", "get", "nodes"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unreachable.returncode != 0 and unreachable.stderr.strip().count("\n") == 0
    assert "no controller" in unreachable.stderr
