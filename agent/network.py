"""Node networking: a bridge per node, a veth + IP per container, published ports.

Owns, for one node (all names derive from a configurable prefix, default
"gantry"):
- the bridge `<prefix>-br` holding the subnet's first address (the gateway);
- per container, a network namespace `<prefix>-<hash>` (bind-mounted under
  /var/run/netns, which is the path a runtime spec joins), a veth pair
  (`<prefix>v<hash>` on the bridge, `eth0` inside) with an address from the
  subnet, a default route via the gateway and `lo` up;
- the nftables table `ip <prefix>`: a map `pub` of (protocol . host port) ->
  (container address . container port) used by DNAT rules in nat chains on
  the prerouting hook (clients on other hosts; needs forwarding enabled on
  the node) and the output hook (clients on this node), matched on the
  node's address (or any local non-loopback address);
- the IPAM state (`<state_dir>/ipam.json`), persisted so a restarted agent
  never hands out an address still in use.
Pure helpers decide names, addresses and nft text; `NodeNetwork` runs `ip`
and `nft`. It never changes host-global sysctls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("gantry.network")

NETNS_DIR = "/var/run/netns"
PROTOCOLS = ("tcp", "udp")


class NetworkError(Exception):
    """A network operation failed: says which command and why."""


class AddressesExhausted(NetworkError):
    pass


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Attachment:
    container_id: str
    netns: str
    netns_path: str
    ip: str
    gateway: str
    prefixlen: int
    veth: str
    ports: tuple[PortMapping, ...] = ()


@dataclass(frozen=True)
class NetworkConfig:
    state_dir: Path
    prefix: str = "gantry"
    subnet: str = "10.88.0.0/24"
    node_address: str | None = None  # published ports answer here (None: any local address)


@dataclass
class IpamState:
    last: str = ""
    attachments: dict[str, dict[str, Any]] = field(default_factory=dict)


# ----------------------------------------------------------------- pure parts


def short_hash(container_id: str, n: int = 6) -> str:
    return hashlib.sha1(container_id.encode()).hexdigest()[:n]


def bridge_name(prefix: str) -> str:
    return f"{prefix}-br"[:15]


def veth_name(prefix: str, container_id: str) -> str:
    return f"{prefix}v{short_hash(container_id)}"[:15]


def netns_name(prefix: str, container_id: str) -> str:
    return f"{prefix}-{short_hash(container_id, 10)}"


def check_prefix(prefix: str) -> str:
    if not prefix or len(prefix) > 8 or not prefix.replace("-", "").isalnum():
        raise NetworkError(f"network prefix {prefix!r} must be 1-8 letters, digits or '-'")
    return prefix


def gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return subnet.network_address + 1


def allocate(subnet: ipaddress.IPv4Network, used: set[str], last: str = "") -> str:
    """The next free host address after `last` (wrapping), skipping the gateway."""
    hosts = [h for h in subnet.hosts() if h != gateway(subnet)]
    if not hosts:
        raise AddressesExhausted(f"subnet {subnet} has no host addresses")
    start = 0
    if last:
        with contextlib.suppress(ValueError):
            start = (hosts.index(ipaddress.IPv4Address(last)) + 1) % len(hosts)
    for i in range(len(hosts)):
        cand = str(hosts[(start + i) % len(hosts)])
        if cand not in used:
            return cand
    raise AddressesExhausted(f"subnet {subnet}: all {len(hosts)} addresses are in use")


def validate_ports(ports: list[PortMapping], taken: dict[tuple[str, int], str], cid: str) -> None:
    seen: set[tuple[str, int]] = set()
    for p in ports:
        if p.protocol not in PROTOCOLS:
            raise NetworkError(f"container {cid}: port protocol {p.protocol!r} is not tcp or udp")
        for what, v in (("host_port", p.host_port), ("container_port", p.container_port)):
            if not 1 <= v <= 65535:
                raise NetworkError(f"container {cid}: {what} {v} is not in 1-65535")
        key = (p.protocol, p.host_port)
        owner = taken.get(key)
        if key in seen or (owner and owner != cid):
            raise NetworkError(
                f"container {cid}: host port {p.protocol}/{p.host_port} is already published by {owner or cid}"
            )
        seen.add(key)


def set_route_localnet(bridge: str) -> None:
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").write_text("1")


def is_loopback(address: str | None) -> bool:
    return bool(address) and ipaddress.ip_address(address).is_loopback  # type: ignore[arg-type]


def table_script(prefix: str, bridge: str, subnet: str, node_address: str | None) -> str:
    """nft text creating the node's table (idempotent: add, not create)."""
    match = (
        f"ip daddr {node_address}"
        if node_address
        else "fib daddr type local ip daddr != 127.0.0.0/8"
    )
    t = f"ip {prefix}"
    return "\n".join(
        [
            f"add table {t}",
            f"add map {t} pub {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}",
            f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
            f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
            f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}",
            f"flush chain {t} prerouting",
            f"flush chain {t} output",
            f"flush chain {t} postrouting",
            f"add rule {t} prerouting {match} dnat ip to meta l4proto . th dport map @pub",
            f"add rule {t} output {match} dnat ip to meta l4proto . th dport map @pub",
            f'add rule {t} postrouting ip saddr {subnet} oifname != "{bridge}" masquerade',
            # Clients on this node that dial a published port on 127.0.0.1 (the local
            # cluster's proxy): their loopback source must become the bridge's address.
            f'add rule {t} postrouting ip saddr 127.0.0.0/8 oifname "{bridge}" masquerade',
            "",
        ]
    )


def element_text(ports: tuple[PortMapping, ...], ip: str, *, with_values: bool) -> str:
    if with_values:
        items = [f"{p.protocol} . {p.host_port} : {ip} . {p.container_port}" for p in ports]
    else:
        items = [f"{p.protocol} . {p.host_port}" for p in ports]
    return "{ " + ", ".join(items) + " }"


# --------------------------------------------------------------------- I/O


async def _run(argv: list[str], stdin: str | None = None, *, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        where = " ".join(argv) + (f" <<{stdin.strip()!r}" if stdin else "")
        raise NetworkError(
            f"{where}: {err.decode(errors='replace').strip() or f'exit {proc.returncode}'}"
        )
    return out.decode()


class NodeNetwork:
    """The node's bridge, the containers' veths and addresses, published ports."""

    def __init__(self, cfg: NetworkConfig) -> None:
        self.cfg = cfg
        self.prefix = check_prefix(cfg.prefix)
        try:
            self.subnet = ipaddress.IPv4Network(cfg.subnet)
        except ValueError as e:
            raise NetworkError(f"network subnet {cfg.subnet!r}: {e}") from None
        self.gateway = str(gateway(self.subnet))
        self.bridge = bridge_name(self.prefix)
        self.state_file = Path(cfg.state_dir) / "ipam.json"
        self.lock = asyncio.Lock()

    # -- persisted IPAM (small sync file ops)

    def _load(self) -> IpamState:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return IpamState()
        except (OSError, json.JSONDecodeError) as e:
            raise NetworkError(f"{self.state_file}: unreadable: {e}") from None
        return IpamState(last=raw.get("last", ""), attachments=dict(raw.get("attachments", {})))

    def _save(self, st: IpamState) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(st)))
        os.replace(tmp, self.state_file)

    @staticmethod
    def _attachment(raw: dict[str, Any]) -> Attachment:
        ports = tuple(PortMapping(**p) for p in raw.get("ports", []))
        return Attachment(**{**raw, "ports": ports})

    def attachments(self) -> dict[str, Attachment]:
        return {cid: self._attachment(a) for cid, a in self._load().attachments.items()}

    # -- node

    async def setup(self) -> None:
        """Create (or keep) the bridge and the nft table. Idempotent."""
        out = await _run(["ip", "-j", "link", "show", "dev", self.bridge], check=False)
        if not out.strip() or out.strip() == "[]":
            cidr = f"{self.gateway}/{self.subnet.prefixlen}"
            await _run(
                ["ip", "-batch", "-"],
                f"link add {self.bridge} type bridge\naddr add {cidr} dev {self.bridge}\nlink set {self.bridge} up\n",
            )
        await _run(
            ["nft", "-f", "-"],
            table_script(self.prefix, self.bridge, str(self.subnet), self.cfg.node_address),
        )
        if is_loopback(self.cfg.node_address):
            # A per-interface setting of our own bridge (gone with it), as Docker sets on
            # docker0 without its userland proxy: lets DNAT'd loopback traffic be routed.
            set_route_localnet(self.bridge)
            log.info(
                "network %s: route_localnet on %s for ports published on loopback",
                self.prefix,
                self.bridge,
            )
        log.info(
            "network %s: bridge %s %s, nft table ip %s",
            self.prefix,
            self.bridge,
            self.subnet,
            self.prefix,
        )

    async def teardown(self) -> None:
        """Remove every container's netns and veth, the table and the bridge."""
        for cid in list(self.attachments()):
            await self.detach(cid)
        await _run(["nft", "delete", "table", "ip", self.prefix], check=False)
        await _run(["ip", "link", "delete", self.bridge], check=False)

    # -- containers

    async def attach(
        self, container_id: str, ports: list[PortMapping] | tuple[PortMapping, ...] = ()
    ) -> Attachment:
        """Make the container's netns with a veth, an address and its published ports."""
        ports = tuple(ports)
        async with self.lock:
            st = self._load()
            if container_id in st.attachments:
                return self._attachment(st.attachments[container_id])
            taken = {
                (p["protocol"], p["host_port"]): cid
                for cid, a in st.attachments.items()
                for p in a.get("ports", [])
            }
            validate_ports(list(ports), taken, container_id)
            ip = allocate(self.subnet, {a["ip"] for a in st.attachments.values()}, st.last)
            ns = netns_name(self.prefix, container_id)
            att = Attachment(
                container_id=container_id,
                netns=ns,
                netns_path=f"{NETNS_DIR}/{ns}",
                ip=ip,
                gateway=self.gateway,
                prefixlen=self.subnet.prefixlen,
                veth=veth_name(self.prefix, container_id),
                ports=ports,
            )
            st.attachments[container_id] = asdict(att)
            st.last = ip
            self._save(st)  # reserve first: a crash below never hands the address out twice
        try:
            await self._plumb(att)
        except BaseException:
            await self.detach(container_id)
            raise
        log.info(
            "network: %s attached as %s in netns %s, ports %s", container_id, ip, ns, list(ports)
        )
        return att

    async def _plumb(self, att: Attachment) -> None:
        peer = f"{self.prefix}p{short_hash(att.container_id)}"[:15]
        await _run(
            ["ip", "-batch", "-"],
            f"netns add {att.netns}\n"
            f"link add {att.veth} type veth peer name {peer} netns {att.netns}\n"
            f"link set {att.veth} master {self.bridge}\n"
            f"link set {att.veth} up\n",
        )
        await _run(
            ["ip", "-n", att.netns, "-batch", "-"],
            f"link set {peer} name eth0\n"
            f"addr add {att.ip}/{att.prefixlen} dev eth0\n"
            "link set eth0 up\n"
            "link set lo up\n"
            f"route add default via {att.gateway}\n",
        )
        if att.ports:
            elems = element_text(att.ports, att.ip, with_values=True)
            await _run(["nft", "add", "element", "ip", self.prefix, "pub", elems])

    async def detach(self, container_id: str) -> None:
        """Remove the container's published ports, veth and netns; free its address."""
        async with self.lock:
            st = self._load()
            raw = st.attachments.get(container_id)
            if raw is None:
                return
            att = self._attachment(raw)
            for p in att.ports:
                await _run(
                    [
                        "nft",
                        "delete",
                        "element",
                        "ip",
                        self.prefix,
                        "pub",
                        element_text((p,), att.ip, with_values=False),
                    ],
                    check=False,
                )
            await _run(["ip", "link", "delete", att.veth], check=False)
            await _run(["ip", "netns", "delete", att.netns], check=False)
            del st.attachments[container_id]
            self._save(st)
        log.info("network: %s detached (%s freed)", container_id, att.ip)

    async def prune(self, keep: set[str]) -> list[str]:
        """After a restart: detach every attachment whose container is gone."""
        gone = [cid for cid in self.attachments() if cid not in keep]
        for cid in gone:
            await self.detach(cid)
        return gone
