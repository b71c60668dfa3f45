"""A cluster of "hosts" on one machine: network namespaces joined by a bridge.

Used by the multi-node end-to-end tests and the rollout benchmark. Every
host is a network namespace `<prefix>-<host>` with one veth into a `lan`
namespace that holds a bridge, and an address 10.213.0.<n>/24 that exists
only inside these namespaces. Nothing is added to the machine's own network
namespace. Processes run in a host with `ip netns exec`; the test process
reaches hosts' addresses from a thread that has joined the host's network
namespace (`in_netns`), since a network namespace is per thread.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
LAN_PREFIX = "10.213.0"
_libc = ctypes.CDLL(None, use_errno=True)


class LabError(Exception):
    pass


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip()}")


def setns_thread(ns: str) -> None:
    """Move the calling thread into network namespace `ns`."""
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn in a fresh thread that has joined `ns`; return its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            setns_thread(ns)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@dataclass
class Lab:
    """Hosts joined by one bridge; create() builds it, destroy() removes it."""

    prefix: str
    hosts: list[str]
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def lan(self) -> str:
        return f"{self.prefix}-lan"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def create(self) -> Lab:
        _ip("netns", "add", self.lan)
        _ip("link", "add", f"{self.prefix}lan", "type", "bridge", ns=self.lan)
        _ip("link", "set", f"{self.prefix}lan", "up", ns=self.lan)
        for n, host in enumerate(self.hosts, start=2):
            self.add_host(host, n)
        return self

    def add_host(self, host: str, n: int) -> None:
        ns, inside, outside = self.ns(host), f"{self.prefix}{host}a", f"{self.prefix}{host}b"
        _ip("netns", "add", ns)
        _ip(
            "link",
            "add",
            inside,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            outside,
            "netns",
            self.lan,
        )
        _ip("link", "set", outside, "master", f"{self.prefix}lan", ns=self.lan)
        _ip("link", "set", outside, "up", ns=self.lan)
        address = f"{LAN_PREFIX}.{n}"
        _ip("addr", "add", f"{address}/24", "dev", inside, ns=ns)
        _ip("link", "set", inside, "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        # Per-namespace: lets published ports answer other hosts (DNAT on prerouting).
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=False
        )
        self.addresses[host] = address

    def cut(self, host: str) -> None:
        """Cut a host's link, as if its cable were pulled."""
        _ip("link", "set", f"{self.prefix}{host}b", "down", ns=self.lan)

    def restore(self, host: str) -> None:
        _ip("link", "set", f"{self.prefix}{host}b", "up", ns=self.lan)

    def popen(self, host: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start argv in the host's network namespace only (mounts stay shared)."""
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{self.ns(host)}", *argv], **kwargs
        )

    def destroy(self) -> None:
        from gantry import hostclean

        hostclean.sweep(self.prefix)
