"""free_port: distinct ports, outside the ephemeral range and the published-port range, really free."""

from __future__ import annotations

import socket
from pathlib import Path

from gantry import procs


def test_free_port_never_repeats_and_avoids_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [procs.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= p < min(low, procs.PORT_POOL_END) for p in ports)


def test_free_port_skips_a_port_someone_listens_on() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", procs.free_port()))
        held.listen(1)
        taken = held.getsockname()[1]
        assert procs.port_taken("127.0.0.1", taken)
        procs._handed_out.discard(taken)  # offer it again: it must still be refused
        assert taken not in {procs.free_port() for _ in range(2000)}
