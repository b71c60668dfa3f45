"""Cluster API records: manifest documents to deployment records and records to messages.

Owns the pure conversions behind the Cluster service: validating a document
into its canonical dict, what of a deployment a user writes (what Apply
compares), the record Apply stores (generation, uid, revision numbering)
and the Deployment / Replica messages sent back. No I/O, no etcd, no gRPC
context: `controller.api` calls these.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from google.protobuf import json_format

from controller.errors import Invalid
from controller.events import iso
from controller.loop import status_of
from controller.model import template_hash
from controller.store import Json
from gantry.manifest import ManifestError, canonical_deployment
from gantry.v1 import types_pb2

API_VERSION = "gantry/v1"
SERVER_META = ("generation", "uid", "createdAt")


def validate(doc: Json) -> Json:
    """The canonical deployment dict, or Invalid naming each error's field path."""
    doc = {k: v for k, v in doc.items() if k != "status"}
    doc.setdefault("apiVersion", API_VERSION)
    doc.setdefault("kind", "Deployment")
    meta = {k: v for k, v in (doc.get("metadata") or {}).items() if k not in SERVER_META}
    doc["metadata"] = meta
    name = meta.get("name") or "?"
    try:
        return dict(canonical_deployment(doc))
    except ManifestError as exc:
        raise Invalid(f"deployment {name}: " + "; ".join(exc.errors)) from None


def desired_of(doc: Json) -> Json:
    """The parts of a deployment a user writes: what Apply compares."""
    meta = doc.get("metadata") or {}
    return {
        "metadata": {"name": meta.get("name", ""), "labels": meta.get("labels") or {}},
        "spec": doc.get("spec") or {},
    }


def applied_record(
    doc: Json, old: Json | None, *, now: float, revisions: Mapping[int, str] | None = None
) -> tuple[str, Json, bool]:
    """(action, new record, template changed) for applying `doc` over `old` (pure).

    `revisions` maps the deployment's stored revision numbers to their template
    hashes: a template seen before gets its old revision back, a new one the
    next number after all of them (as Kubernetes numbers ReplicaSets)."""
    want = desired_of(doc)
    if old is not None and desired_of(old) == want:
        return "unchanged", old, False
    old_meta = (old or {}).get("metadata") or {}
    old_status = (old or {}).get("status") or {}
    new_hash = template_hash(want["spec"].get("template") or {})
    changed = old is None or old_status.get("templateHash") != new_hash
    revision = int(old_status.get("revision", 0))
    if changed:
        known = revisions or {}
        same = sorted(r for r, h in known.items() if h == new_hash)
        revision = same[-1] if same else max([revision, *known]) + 1
    rec = {
        "apiVersion": API_VERSION,
        "kind": "Deployment",
        "metadata": {
            **want["metadata"],
            "generation": int(old_meta.get("generation", 0)) + 1,
            "uid": old_meta.get("uid") or uuid.uuid4().hex,
            "createdAt": old_meta.get("createdAt") or iso(now),
        },
        "spec": want["spec"],
        "status": {"revision": max(1, revision), "templateHash": new_hash},
    }
    return ("created" if old is None else "configured"), rec, changed


def deployment_proto(rec: Json, replicas: list[Json]) -> types_pb2.Deployment:
    out = types_pb2.Deployment()
    body = {k: v for k, v in rec.items() if k != "status"}
    json_format.ParseDict(body, out, ignore_unknown_fields=True)
    status = {k: v for k, v in status_of(rec, replicas).items() if k != "templateHash"}
    json_format.ParseDict(status, out.status, ignore_unknown_fields=True)
    return out


def replica_proto(rec: Json) -> types_pb2.Replica:
    return json_format.ParseDict(rec, types_pb2.Replica(), ignore_unknown_fields=True)
