"""Proxy throughput: Gantry's proxy against nginx and HAProxy, same nginx backend.

    .venv/bin/python bench/proxy.py [--quick]

wrk -t1 -c50 against a ~100-byte nginx answer: direct; nginx as reverse
proxy (1 worker, upstream keep-alive); HAProxy (1 thread, http-reuse);
Gantry's proxy as deployed (fed by a fake Discovery server; routing, a 10 %
canary split, outlier bookkeeping and metrics all on) with 1 worker and with
one per core. Rounds are interleaved; each figure is the median. CPU per
request = the Gantry processes' user+sys CPU over requests served. Prints a
table and, as the last line, one JSON object. Everything runs on loopback
free ports from a temp dir and is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gantry.procs import free_port  # noqa: E402
from proxy.fake_discovery import FakeDiscovery, endpoint_table  # noqa: E402

BODY = "x" * 99


def nginx_backend_conf(tmp: Path, ports: list[int]) -> str:
    listens = "\n".join(f"    listen 127.0.0.1:{p} backlog=4096;" for p in ports)
    return f"""
worker_processes 1;
daemon off;
pid {tmp}/backend.pid;
error_log {tmp}/backend.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
{listens}
    location / {{ default_type text/plain; return 200 "{BODY}\\n"; }}
  }}
}}
"""


def nginx_proxy_conf(tmp: Path, port: int, backend: int) -> str:
    return f"""
worker_processes 1;
daemon off;
pid {tmp}/nginxproxy.pid;
error_log {tmp}/nginxproxy.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def haproxy_conf(port: int, backend: int) -> str:
    return f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{backend}
"""


def wait_http(url: str, deadline: float = 20.0, want: str | None = None) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                body = r.read().decode()
                if want is None or want in body:
                    return
        except OSError:
            pass
        if time.monotonic() > end:
            raise SystemExit(f"bench: {url} did not answer")
        time.sleep(0.1)


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def parse_latency_ms(text: str) -> float:
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


async def wrk(url: str, seconds: int) -> tuple[float, float, int]:
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", url,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or not total:
        raise SystemExit(f"bench: wrk failed on {url}:\n{out}")
    if errors:
        print(f"  warning: {errors.group(1)} non-2xx answers from {url}", file=sys.stderr)
    return float(rps.group(1)), parse_latency_ms(out), int(total.group(1))


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 s runs (finishes in well under 90 s)")
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    seconds = args.seconds or (3 if args.quick else 8)
    for tool in ("wrk", "nginx", "haproxy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found (apt-get install {tool})")
    ncpu = os.cpu_count() or 1
    procs: list[subprocess.Popen[bytes]] = []
    disc = FakeDiscovery()
    with tempfile.TemporaryDirectory(prefix="gantry-bench-") as t:
        tmp = Path(t)
        try:
            b_stable, b_canary = free_port(), free_port()
            (tmp / "backend.conf").write_text(nginx_backend_conf(tmp, [b_stable, b_canary]))
            procs.append(start(["nginx", "-p", t, "-c", f"{t}/backend.conf"], tmp / "backend.log"))
            p_nginx = free_port()
            (tmp / "nginxproxy.conf").write_text(nginx_proxy_conf(tmp, p_nginx, b_stable))
            procs.append(start(["nginx", "-p", t, "-c", f"{t}/nginxproxy.conf"], tmp / "np.log"))
            p_haproxy = free_port()
            (tmp / "haproxy.cfg").write_text(haproxy_conf(p_haproxy, b_stable))
            procs.append(start(["haproxy", "-db", "-f", f"{t}/haproxy.cfg"], tmp / "haproxy.log"))
            controller = await disc.start()
            await disc.publish(
                endpoint_table(
                    1,
                    [
                        {
                            "deployment": "bench",
                            "path_prefix": "/",
                            "canary_weight": 10,
                            "endpoints": [
                                {"track": "stable", "port": b_stable},
                                {"track": "canary", "port": b_canary},
                            ],
                        }
                    ],
                )
            )
            gantry: dict[str, tuple[int, int, subprocess.Popen[bytes]]] = {}
            for name, workers in (("gantry1", 1), ("gantryN", ncpu)):
                port, admin = free_port(), free_port()
                cmd = [
                    sys.executable, "-m", "proxy", "--listen", f"127.0.0.1:{port}",
                    "--admin", f"127.0.0.1:{admin}", "--controller", controller,
                    "--workers", str(workers), "--proxy-id", name,
                ]  # fmt: skip
                proc = start(cmd, tmp / f"{name}.log")
                procs.append(proc)
                gantry[name] = (port, admin, proc)
            for url in (
                f"http://127.0.0.1:{b_stable}/",
                f"http://127.0.0.1:{p_nginx}/",
                f"http://127.0.0.1:{p_haproxy}/",
            ):
                await asyncio.to_thread(wait_http, url)
            for port, admin, _ in gantry.values():
                await asyncio.to_thread(
                    wait_http, f"http://127.0.0.1:{admin}/admin/table", 30, '"version": 1'
                )
                await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/")
            targets = {
                "direct": f"http://127.0.0.1:{b_stable}/",
                "nginx": f"http://127.0.0.1:{p_nginx}/",
                "haproxy": f"http://127.0.0.1:{p_haproxy}/",
                "gantry1": f"http://127.0.0.1:{gantry['gantry1'][0]}/",
                "gantryN": f"http://127.0.0.1:{gantry['gantryN'][0]}/",
            }
            rps: dict[str, list[float]] = {k: [] for k in targets}
            p99: dict[str, list[float]] = {k: [] for k in targets}
            cpu: dict[str, list[float]] = {"gantry1": [], "gantryN": []}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    pids = []
                    if name in gantry:
                        pids = children(gantry[name][2].pid) + [gantry[name][2].pid]
                    c0 = cpu_seconds(pids)
                    r, lat, total = await wrk(url, seconds)
                    if name in cpu and total:
                        cpu[name].append((cpu_seconds(pids) - c0) / total * 1e6)
                    rps[name].append(r)
                    p99[name].append(lat)
        finally:
            for proc in reversed(procs):
                stop(proc)
            await disc.stop()
    med = {k: statistics.median(v) for k, v in rps.items()}
    lat = {k: statistics.median(v) for k, v in p99.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"wrk -t1 -c50 -d{seconds}s, {args.rounds} interleaved rounds, median; {ncpu} cores")
    print(f"{'target':<10} {'req/s':>10} {'p99 ms':>8} {'vs nginx':>9} {'cpu us/req':>11}")
    for k in targets:
        cpu_text = f"{cpu_med[k]:11.1f}" if k in cpu_med else f"{'':>11}"
        print(f"{k:<10} {med[k]:10.0f} {lat[k]:8.2f} {med[k] / med['nginx']:9.2f} {cpu_text}")
    result = {
        "direct_rps": round(med["direct"]),
        "nginx_rps": round(med["nginx"]),
        "haproxy_rps": round(med["haproxy"]),
        "gantry1_rps": round(med["gantry1"]),
        "gantryN_rps": round(med["gantryN"]),
        "gantry1_p99_ms": round(lat["gantry1"], 2),
        "gantryN_p99_ms": round(lat["gantryN"], 2),
        "gantry1_cpu_us_per_req": round(cpu_med["gantry1"], 1),
        "gantryN_cpu_us_per_req": round(cpu_med["gantryN"], 1),
        "ratio1": round(med["gantry1"] / med["nginx"], 3),
        "ratioN": round(med["gantryN"] / med["nginx"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
