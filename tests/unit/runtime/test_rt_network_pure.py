"""Pure parts of agent.network: names, address allocation, port checks, nft text."""

from __future__ import annotations

import ipaddress

import pytest

from agent import network as n

SUBNET = ipaddress.IPv4Network("10.88.0.0/29")  # .1 gateway, .2-.6 hosts


def test_names_fit_interface_limits_and_carry_the_prefix() -> None:
    for prefix in ("gantry", "gt1a2b3c"):
        for cid in ("web-1", "x" * 100):
            assert len(n.veth_name(prefix, cid)) <= 15 and n.veth_name(prefix, cid).startswith(
                prefix
            )
            assert n.netns_name(prefix, cid).startswith(prefix)
        assert len(n.bridge_name(prefix)) <= 15
    assert n.veth_name("gt", "a") != n.veth_name("gt", "b")


def test_allocate_skips_gateway_and_used_and_goes_round() -> None:
    assert n.allocate(SUBNET, set()) == "10.88.0.2"
    assert n.allocate(SUBNET, {"10.88.0.2"}) == "10.88.0.3"
    assert n.allocate(SUBNET, set(), last="10.88.0.3") == "10.88.0.4"  # no quick reuse
    assert n.allocate(SUBNET, set(), last="10.88.0.6") == "10.88.0.2"  # wraps
    with pytest.raises(n.AddressesExhausted, match="all 5 addresses"):
        n.allocate(SUBNET, {f"10.88.0.{i}" for i in range(2, 7)})


def test_validate_ports() -> None:
    n.validate_ports([n.PortMapping(8080, 80)], {}, "a")
    with pytest.raises(n.NetworkError, match="already published by b"):
        n.validate_ports([n.PortMapping(8080, 80)], {("tcp", 8080): "b"}, "a")
    with pytest.raises(n.NetworkError, match="host_port 0"):
        n.validate_ports([n.PortMapping(0, 80)], {}, "a")
    with pytest.raises(n.NetworkError, match="sctp"):
        n.validate_ports([n.PortMapping(1, 80, "sctp")], {}, "a")
    with pytest.raises(n.NetworkError, match="already published by a"):
        n.validate_ports([n.PortMapping(1, 80), n.PortMapping(1, 81)], {}, "a")


def test_table_script_hooks_and_match() -> None:
    s = n.table_script("gt1", "gt1-br", "10.88.0.0/24", "192.0.2.10")
    assert "hook prerouting" in s and "hook output" in s
    assert s.count("ip daddr 192.0.2.10 dnat ip to meta l4proto . th dport map @pub") == 2
    anyaddr = n.table_script("gt1", "gt1-br", "10.88.0.0/24", None)
    assert "fib daddr type local ip daddr != 127.0.0.0/8" in anyaddr
    assert (
        n.element_text((n.PortMapping(8080, 80),), "10.88.0.2", with_values=True)
        == "{ tcp . 8080 : 10.88.0.2 . 80 }"
    )


def test_bad_prefix_and_subnet() -> None:
    with pytest.raises(n.NetworkError, match="prefix"):
        n.check_prefix("much-too-long")
    with pytest.raises(n.NetworkError, match="subnet"):
        n.NodeNetwork(
            n.NetworkConfig(
                state_dir=__import__("pathlib").Path("/nonexistent"), subnet="10.0.0.300/24"
            )
        )
