"""The network-namespace lab that multi-node tests stand on."""

from __future__ import annotations

import socket
import subprocess
import sys

from gantry import netlab, procs


def test_hosts_reach_each_other_and_nothing_leaks(host_sweep: str) -> None:
    lab = netlab.Lab(host_sweep, ["h1", "h2"]).create()
    port = 18000
    server = lab.popen("h1", [sys.executable, "-m", "http.server", str(port), "--bind", lab.addresses["h1"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://{lab.addresses['h1']}:{port}/"
        assert netlab.in_netns(lab.ns("h2"), wait_http, url)
        # the machine's own namespace has no route to the lab
        assert (
            lab.addresses["h1"]
            not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        )
        lab.cut("h1")
        assert not netlab.in_netns(lab.ns("h2"), connects, lab.addresses["h1"], port)
        lab.restore("h1")
        assert netlab.in_netns(lab.ns("h2"), wait_http, url)
    finally:
        procs.stop_pid(server.pid, proc=server)
        lab.destroy()


def wait_http(url: str) -> bool:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if procs.http_ok(url):
            return True
        time.sleep(0.05)
    return False


def connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
