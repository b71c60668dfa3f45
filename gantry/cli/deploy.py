"""kubectl-like commands over the Cluster API: apply, get, describe, scale,
delete, run. Formatting is done by small pure functions over messages."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from gantry.cli.common import call, stream
from gantry.cli.errors import CLIError
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, types_pb2

KINDS = {
    "deployment": "deployments", "deployments": "deployments", "deploy": "deployments",
    "replica": "replicas", "replicas": "replicas", "pods": "replicas", "pod": "replicas",
    "node": "nodes", "nodes": "nodes", "no": "nodes",
}  # fmt: skip


def to_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def deployment_row(d: types_pb2.Deployment, wide: bool) -> list[object]:
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    row: list[object] = [d.metadata.name, f"{d.status.ready_replicas}/{want}", d.status.updated_replicas,
                         d.status.available_replicas, d.spec.template.image]  # fmt: skip
    if wide:
        route = (d.spec.route.host or "*") + (d.spec.route.path_prefix or "/")
        row += [d.status.revision, d.spec.strategy.type or "RollingUpdate", route]
    return row


DEPLOYMENT_HEADERS = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "IMAGE"]
DEPLOYMENT_WIDE = ["REVISION", "STRATEGY", "ROUTE"]


def replica_row(r: types_pb2.Replica, wide: bool) -> list[object]:
    row: list[object] = [r.name, r.deployment, r.node or "<none>", r.phase, "yes" if r.ready else "no",
                         r.track or "stable", r.restarts]  # fmt: skip
    if wide:
        ports = (
            ",".join(f"{p.host_ip or ''}:{p.host_port}->{p.container_port}" for p in r.ports) or "-"
        )
        row += [r.revision, r.epoch, r.ip or "-", ports, r.reason or "-"]
    return row


REPLICA_HEADERS = ["NAME", "DEPLOYMENT", "NODE", "PHASE", "READY", "TRACK", "RESTARTS"]
REPLICA_WIDE = ["REVISION", "EPOCH", "IP", "PORTS", "REASON"]


def mib(n: int) -> str:
    return f"{n // (1024 * 1024)}Mi"


def node_row(n: types_pb2.Node, wide: bool) -> list[object]:
    cap, used = n.capacity, n.allocated
    row: list[object] = [n.name, n.status, n.address, f"{used.cpu_millis}m/{cap.cpu_millis}m",
                         f"{mib(used.memory_bytes)}/{mib(cap.memory_bytes)}", f"{used.pods}/{cap.pods}"]  # fmt: skip
    if wide:
        row += [
            ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or "-",
            n.agent_url or "-",
        ]
    return row


NODE_HEADERS = ["NAME", "STATUS", "ADDRESS", "CPU", "MEMORY", "PODS"]
NODE_WIDE = ["LABELS", "AGENT"]


def render(kind: str, items: Sequence[Message], output: str | None) -> str:
    if output == "json":
        return json.dumps([to_dict(i) for i in items], indent=2)
    if output == "yaml":
        return yaml.safe_dump([to_dict(i) for i in items], sort_keys=False).rstrip()
    wide = output == "wide"
    row_fn, headers, extra = {
        "deployments": (deployment_row, DEPLOYMENT_HEADERS, DEPLOYMENT_WIDE),
        "replicas": (replica_row, REPLICA_HEADERS, REPLICA_WIDE),
        "nodes": (node_row, NODE_HEADERS, NODE_WIDE),
    }[kind]
    return table(headers + (extra if wide else []), [row_fn(i, wide) for i in items])  # type: ignore[operator]


# --- commands -------------------------------------------------------------------


def load_file(path: str) -> list[types_pb2.Deployment]:
    from gantry.manifest import ManifestError, load_manifests

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CLIError(f"{path}: {exc.strerror}") from None
    try:
        docs = load_manifests(text, Path(path).name if path != "-" else "<stdin>")
    except ManifestError as exc:
        for line in exc.errors[:-1]:
            print(f"error: {line}", file=sys.stderr)
        raise CLIError(exc.errors[-1] if exc.errors else str(exc), 4) from None
    return [json_format.ParseDict(d, types_pb2.Deployment()) for d in docs]


def cmd_apply(args: argparse.Namespace) -> int:
    deployments = load_file(args.filename)
    req = cluster_pb2.ApplyRequest(deployments=deployments, dry_run=args.dry_run)
    resp = call(args, lambda ch: cluster_pb2_grpc.ClusterStub(ch).Apply(req))
    suffix = " (dry run)" if args.dry_run else ""
    for result in resp.results:
        print(f"{result.kind.lower() or 'deployment'}/{result.name} {result.action}{suffix}")
    return 0


async def _list(ch: grpc.aio.Channel, kind: str, name: str | None) -> list[Message]:
    stub = cluster_pb2_grpc.ClusterStub(ch)
    if kind == "deployments":
        if name:
            return [await stub.Get(cluster_pb2.GetRequest(name=name))]
        return list((await stub.List(cluster_pb2.ListRequest())).deployments)
    if kind == "replicas":
        reps = (await stub.ListReplicas(cluster_pb2.ListReplicasRequest())).replicas
        return [r for r in reps if not name or name in (r.name, r.deployment)]
    nodes = (await stub.ListNodes(cluster_pb2.ListNodesRequest())).nodes
    return [n for n in nodes if not name or n.name == name]


def cmd_get(args: argparse.Namespace) -> int:
    kind = KINDS.get(args.kind)
    if kind is None:
        raise CLIError(f"unknown kind {args.kind!r}: expected deployments, replicas or nodes", 2)
    items = call(args, lambda ch: _list(ch, kind, args.name))
    if items or args.output in ("json", "yaml"):
        print(render(kind, items, args.output))
    else:
        print(f"no {kind}")
    if args.watch:
        stream(args, lambda ch: _watch(ch, kind, args.name, args.output))
    return 0


async def _watch(ch: grpc.aio.Channel, kind: str, name: str | None, output: str | None) -> None:
    stub = cluster_pb2_grpc.ClusterStub(ch)
    async for event in stub.Watch(cluster_pb2.WatchRequest(kind=kind, name=name or "")):
        item = {"deployments": event.deployment, "replicas": event.replica, "nodes": event.node}[
            kind
        ]
        lines = render(kind, [item], output).splitlines()
        print(f"{event.type:<9} {lines[-1]}", flush=True)


def cmd_describe(args: argparse.Namespace) -> int:
    kind = {"deployments": "deployment", "nodes": "node"}.get(KINDS.get(args.kind, ""), "")
    if not kind:
        raise CLIError(f"cannot describe {args.kind!r}: expected deployment or node", 2)
    req = cluster_pb2.DescribeRequest(kind=kind, name=args.name)
    resp = call(args, lambda ch: cluster_pb2_grpc.ClusterStub(ch).Describe(req))
    print(describe_text(resp, kind))
    return 0


def describe_text(resp: cluster_pb2.DescribeResponse, kind: str) -> str:
    out: list[str] = []
    if kind == "deployment":
        d = resp.deployment
        out.append(f"Name:        {d.metadata.name}")
        out.append(
            f"Labels:      {', '.join(f'{k}={v}' for k, v in d.metadata.labels.items()) or '<none>'}"
        )
        out.append(f"Replicas:    {d.status.ready_replicas} ready / {d.spec.replicas} desired, "
                   f"{d.status.updated_replicas} up to date, revision {d.status.revision}")  # fmt: skip
        out.append("Spec:")
        spec = yaml.safe_dump(to_dict(d.spec), sort_keys=False).rstrip()
        out += ["  " + line for line in spec.splitlines()]
        for c in d.status.conditions:
            out.append(f"Condition:   {c.type}={c.status} {c.reason} {c.message}".rstrip())
    else:
        n = resp.node
        out.append(f"Name:        {n.name}")
        out.append(f"Status:      {n.status}")
        out.append(f"Address:     {n.address}")
        out.append(f"Labels:      {', '.join(f'{k}={v}' for k, v in n.labels.items()) or '<none>'}")
        out.append(
            f"Capacity:    cpu {n.capacity.cpu_millis}m, memory {mib(n.capacity.memory_bytes)}, pods {n.capacity.pods}"
        )
        out.append(
            f"Allocated:   cpu {n.allocated.cpu_millis}m, memory {mib(n.allocated.memory_bytes)}, pods {n.allocated.pods}"
        )
        out.append(f"Heartbeat:   {n.last_heartbeat or '-'}")
    if resp.HasField("rollout") and resp.rollout.phase:
        r = resp.rollout
        out.append(
            f"Rollout:     {r.type} {r.phase} step {r.step} canary weight {r.canary_weight}% {r.message}".rstrip()
        )
    out.append("Replicas:")
    if resp.replicas:
        out += [
            "  " + line for line in render("replicas", list(resp.replicas), "wide").splitlines()
        ]
        out += [
            f"  {r.name}: {r.reason}: {r.message}"
            for r in resp.replicas
            if r.message and not r.ready
        ]
    else:
        out.append("  <none>")
    out.append("Events:")
    if resp.events:
        rows = [
            [e.last_seen, e.type, e.reason, f"x{e.count}" if e.count > 1 else "", e.message]
            for e in resp.events
        ]
        out += [
            "  " + line
            for line in table(["LAST SEEN", "TYPE", "REASON", "", "MESSAGE"], rows).splitlines()
        ]
    else:
        out.append("  <none>")
    return "\n".join(out)


def cmd_scale(args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise CLIError(f"--replicas: expected an integer >= 0, got {args.replicas}", 2)
    req = cluster_pb2.ScaleRequest(name=args.name, replicas=args.replicas)
    call(args, lambda ch: cluster_pb2_grpc.ClusterStub(ch).Scale(req))
    print(f"deployment/{args.name} scaled to {args.replicas}")
    return 0


def delete_one(args: argparse.Namespace, name: str) -> None:
    req = cluster_pb2.DeleteRequest(kind="deployment", name=name)
    call(args, lambda ch: cluster_pb2_grpc.ClusterStub(ch).Delete(req))


def cmd_delete(args: argparse.Namespace) -> int:
    if args.filename:
        names = [d.metadata.name for d in load_file(args.filename)]
    elif args.kind and args.name and KINDS.get(args.kind) == "deployments":
        names = [args.name]
    else:
        raise CLIError("usage: gantry delete -f FILE | gantry delete deployment NAME", 2)
    for name in names:
        delete_one(args, name)
        print(f"deployment/{name} deleted")
    return 0


def run_manifest(args: argparse.Namespace) -> dict[str, Any]:
    """The Deployment document `gantry run` stands for (pure)."""
    env = []
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"-e {item!r}: expected KEY=VALUE", 2)
        env.append({"name": key, "value": value})
    template: dict[str, Any] = {"image": args.image}
    if env:
        template["env"] = env
    if args.port:
        template["ports"] = [{"name": "http", "containerPort": args.port}]
    if args.command:
        template["command"] = list(args.command)
    return {"apiVersion": "gantry/v1", "kind": "Deployment", "metadata": {"name": args.name},
            "spec": {"replicas": args.replicas, "template": template}}  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    from gantry.manifest import ManifestError, load_manifests

    doc = run_manifest(args)
    try:
        (canonical,) = load_manifests(yaml.safe_dump(doc), "<gantry run>")
    except ManifestError as exc:
        raise CLIError("; ".join(exc.errors), 4) from None
    req = cluster_pb2.ApplyRequest(
        deployments=[json_format.ParseDict(canonical, types_pb2.Deployment())]
    )
    resp = call(args, lambda ch: cluster_pb2_grpc.ClusterStub(ch).Apply(req))
    for result in resp.results:
        print(f"deployment/{result.name} {result.action}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("apply", help="create or update what a manifest describes")
    p.add_argument(
        "-f",
        "--filename",
        required=True,
        help="manifest file (YAML, several documents), - for stdin",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate and show what would change; write nothing"
    )
    p.set_defaults(func=cmd_apply)

    p = subparsers.add_parser("get", help="list deployments, replicas or nodes")
    p.add_argument("kind", help="deployments | replicas | nodes")
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", choices=("wide", "json", "yaml"))
    p.add_argument("-w", "--watch", action="store_true", help="keep printing changes")
    p.set_defaults(func=cmd_get)

    p = subparsers.add_parser("describe", help="show a deployment or node in detail, with events")
    p.add_argument("kind", help="deployment | node")
    p.add_argument("name")
    p.set_defaults(func=cmd_describe)

    p = subparsers.add_parser("scale", help="set a deployment's replica count")
    p.add_argument("name")
    p.add_argument("--replicas", type=int, required=True)
    p.set_defaults(func=cmd_scale)

    p = subparsers.add_parser(
        "delete", help="delete what a manifest describes, or a deployment by name"
    )
    p.add_argument("kind", nargs="?")
    p.add_argument("name", nargs="?")
    p.add_argument("-f", "--filename")
    p.set_defaults(func=cmd_delete)

    p = subparsers.add_parser("run", help="run an image as a deployment (like docker run)")
    p.add_argument("name")
    p.add_argument("--image", required=True)
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE")
    p.add_argument("--port", type=int, help="container port to expose")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("command", nargs="*", help="command and arguments (after --)")
    p.set_defaults(func=cmd_run)
