"""The harness's own fixtures start real services and clean the host."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from gantry import hostclean


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
