"""`gantry rollout status|history|undo|canary|promote|abort NAME`."""

from __future__ import annotations

import argparse

from gantry.cli.common import call
from gantry.cli.deploy import table
from gantry.cli.errors import CLIError
from gantry.v1 import cluster_pb2, cluster_pb2_grpc, types_pb2


def metrics_cell(m: types_pb2.VersionMetrics) -> str:
    if not m.requests:
        return "no traffic yet"
    return f"{m.requests:.0f} req, {m.error_rate * 100:.1f}% errors, p99 {m.p99_ms:.1f} ms"


def status_text(resp: cluster_pb2.RolloutStatusResponse) -> str:
    """The rollout as a person reads it (pure)."""
    d, r = resp.deployment, resp.rollout
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    lines = [
        f"deployment/{d.metadata.name}: {d.status.ready_replicas}/{want} ready, revision {d.status.revision}"
    ]
    if not r.phase:
        lines.append("no rollout in progress")
        return "\n".join(lines)
    lines.append(
        f"rollout:  {r.type} {r.phase}, step {r.step}" + (f" - {r.message}" if r.message else "")
    )
    if r.type == "Canary":
        lines.append(f"weights:  stable {100 - r.canary_weight}%  canary {r.canary_weight}%")
        lines.append(
            f"canary:   {r.canary_template.image} x{r.canary_replicas}: {metrics_cell(r.canary_metrics)}"
        )
        lines.append(f"stable:   {d.spec.template.image}: {metrics_cell(r.stable_metrics)}")
    return "\n".join(lines)


def _rollout_call(
    args: argparse.Namespace, method: str, req: object
) -> cluster_pb2.RolloutStatusResponse:
    return call(args, lambda ch: getattr(cluster_pb2_grpc.ClusterStub(ch), method)(req))


def cmd_status(args: argparse.Namespace) -> int:
    print(
        status_text(
            _rollout_call(args, "RolloutStatus", cluster_pb2.RolloutRequest(name=args.name))
        )
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    req = cluster_pb2.RolloutRequest(name=args.name)
    resp = call(args, lambda ch: cluster_pb2_grpc.ClusterStub(ch).RolloutHistory(req))
    rows = [[r.revision, r.template.image, r.created_at, r.cause or "-"] for r in resp.revisions]
    print(table(["REVISION", "IMAGE", "CREATED", "CAUSE"], rows))
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    req = cluster_pb2.RolloutUndoRequest(name=args.name, to_revision=args.to_revision)
    print(status_text(_rollout_call(args, "RolloutUndo", req)))
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    if not 0 <= args.weight <= 100:
        raise CLIError(f"--weight: expected 0..100, got {args.weight}", 2)
    req = cluster_pb2.StartCanaryRequest(
        name=args.name, image=args.image, weight=args.weight, replicas=args.replicas
    )
    print(status_text(_rollout_call(args, "StartCanary", req)))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    print(status_text(_rollout_call(args, "Promote", cluster_pb2.RolloutRequest(name=args.name))))
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    print(status_text(_rollout_call(args, "Abort", cluster_pb2.RolloutRequest(name=args.name))))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = subparsers.add_parser("rollout", help="rolling updates and canary releases")
    verbs = rollout.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, fn, text in (
        ("status", cmd_status, "show the rollout's step, weights and the canary's measured health"),
        ("history", cmd_history, "list the deployment's revisions"),
        ("promote", cmd_promote, "make the canary the new stable version"),
        ("abort", cmd_abort, "send all traffic back to stable and remove the canary"),
    ):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("name")
        p.set_defaults(func=fn)
    p = verbs.add_parser("undo", help="roll back to the previous (or a given) revision")
    p.add_argument("name")
    p.add_argument("--to-revision", type=int, default=0)
    p.set_defaults(func=cmd_undo)
    p = verbs.add_parser("canary", help="start a canary of a new image beside the stable set")
    p.add_argument("name")
    p.add_argument("--image", required=True)
    p.add_argument(
        "--weight", type=int, default=10, help="share of traffic for the canary, percent"
    )
    p.add_argument("--replicas", type=int, default=1)
    p.set_defaults(func=cmd_canary)
