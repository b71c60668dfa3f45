"""A three-node Gantry cluster of network-namespace hosts, shared per module.

`cluster` starts one gantry.labcluster.LabCluster for all tests of a module
(etcd, registry, two controllers, three agents, the proxy) and destroys it
afterwards, failing if any host object is left. The helpers apply
deployments, read replicas through the CLI, run constant load through the
proxy and poll for conditions with generous deadlines (no fixed sleeps).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from gantry import hostclean, loadgen
from gantry.labcluster import LabCluster

T = TypeVar("T")
GONE_PHASES = ("Terminating", "Exited", "Failed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    prefix = "gt" + secrets.token_hex(3)
    workdir = tmp_path_factory.mktemp("lab")
    c = LabCluster(prefix, workdir)
    try:
        c.start()
        yield c
    finally:
        # destroy sweeps once; sweep again (the agents' prefixes too, as destroy does:
        # `<prefix minus one char><n>`), then count only what is still there after both
        c.destroy()
        sweep_prefix = prefix[:-1]
        hostclean.sweep(sweep_prefix, state_dir=workdir)
        left = hostclean.leftovers(sweep_prefix, state_dir=workdir)
    assert not left, f"cluster {prefix} left host objects behind: {left}"


def wait_for(what: str, cond: Callable[[], T | None], timeout: float = 90.0) -> T:
    """Poll cond until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout:.0f}s (last seen: {last!r})")


def deployment(
    c: LabCluster,
    name: str,
    *,
    image: str = "hello:v1",
    replicas: int = 3,
    strategy: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A deployment of a demo image, routed by Host `<name>.local`."""
    return c.demo_deployment(name, image=image, replicas=replicas, strategy=strategy, env=env)


def apply(c: LabCluster, doc: dict[str, Any]) -> None:
    path = Path(c.workdir) / f"{doc['metadata']['name']}-{secrets.token_hex(2)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    c.gantry("apply", "-f", str(path))


def replicas(c: LabCluster, name: str) -> list[dict[str, Any]]:
    out = c.gantry("get", "replicas", name, "-o", "json").stdout
    return [r for r in json.loads(out) if r.get("deployment") == name]


def get_deployment(c: LabCluster, name: str) -> dict[str, Any]:
    (dep,) = json.loads(c.gantry("get", "deployments", name, "-o", "json").stdout)
    return dep  # type: ignore[no-any-return]


def load(
    c: LabCluster, name: str, *, workers: int = 4, seconds: float = 200, timeout: float = 10.0
) -> loadgen.Load:
    return loadgen.Load(
        c.proxy_url + "/",
        host=f"{name}.local",
        netns=c.lab.ns("ctl"),
        workers=workers,
        timeout=timeout,
        max_seconds=seconds,
    )


def serving(ld: loadgen.Load, since: float) -> set[str]:
    """Replicas seen answering 200 through the proxy since `since`."""
    return {a.replica for a in ld.since(since) if a.status == 200}


def ready_on(
    c: LabCluster, name: str, want: int, *, revision: int | None = None
) -> list[dict[str, Any]] | None:
    """The deployment's replicas when exactly `want` live ones are ready (on `revision`)."""
    reps = [r for r in replicas(c, name) if r.get("phase") not in GONE_PHASES]
    ok = [r for r in reps if r.get("ready")]
    if revision is not None:
        ok = [r for r in ok if int(r.get("revision", 0)) == revision]
    return reps if len(ok) == want and len(reps) == want else None


def fail_text(answers: list[loadgen.Answer]) -> str:
    bad = [a for a in answers if a.status != 200]
    return f"{len(bad)} of {len(answers)} failed ({loadgen.summary(answers)}): {bad[:5]}"


class MultiNode:
    """The helpers the multi-node tests share, as a fixture (`mn`)."""

    wait_for = staticmethod(wait_for)
    deployment = staticmethod(deployment)
    apply = staticmethod(apply)
    replicas = staticmethod(replicas)
    get_deployment = staticmethod(get_deployment)
    load = staticmethod(load)
    serving = staticmethod(serving)
    ready_on = staticmethod(ready_on)
    fail_text = staticmethod(fail_text)


@pytest.fixture
def mn() -> type[MultiNode]:
    return MultiNode
