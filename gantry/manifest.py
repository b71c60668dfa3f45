"""Manifests: YAML documents -> validated, defaulted, canonical Deployment dicts.

The public entry points. `load_manifests(text, filename)` parses one file of
one or more YAML documents and returns each `kind: Deployment` in canonical
form: exactly the protobuf JSON mapping of `gantry.v1.types_pb2.Deployment`
(camelCase; ports and rollingUpdate bounds as strings; pause durations as
`durationSeconds`), with defaults applied, so
`json_format.ParseDict(doc, types_pb2.Deployment())` accepts it.
`validate_deployment_dict(d)` checks one already-parsed dict (API input);
`canonical_deployment(d)` returns its defaulted form.

Every problem is reported, not just the first, each located:
`web.yaml:14 spec.replicas: expected an integer >= 0, got "three"` (with
`(document N)` after the line when the file holds several documents).
Unknown fields are errors with a did-you-mean.

This module only assembles the pieces: YAML with lines is
`gantry.manifest_yaml`, the error context and generic checkers are
`gantry.manifest_checks`, the Deployment schema is `gantry.manifest_schema`.
It must not define fields or checkers itself; it does no I/O.
"""

from __future__ import annotations

from typing import Any

import yaml

from gantry.manifest_checks import INT32_MAX, MISSING, Ctx, ManifestError
from gantry.manifest_schema import (
    ANALYSIS_DEFAULTS,
    API_VERSION,
    DEPLOYMENT,
    KIND,
    MAX_NAME_LEN,
    PROBE_DEFAULTS,
    cross_checks,
    parse_duration,
)
from gantry.manifest_yaml import Composer, compose_documents

__all__ = [
    "ANALYSIS_DEFAULTS",
    "API_VERSION",
    "INT32_MAX",
    "KIND",
    "MAX_NAME_LEN",
    "PROBE_DEFAULTS",
    "ManifestError",
    "canonical_deployment",
    "load_manifests",
    "parse_duration",
    "validate_deployment_dict",
]


def _check_deployment(ctx: Ctx, d: Any) -> dict[str, Any] | None:
    n_before = len(ctx.located)
    out = DEPLOYMENT(ctx, d, "")
    if out is MISSING:
        return None
    cross_checks(ctx, out)
    return out if len(ctx.located) == n_before else None


def validate_deployment_dict(d: Any) -> list[str]:
    """Every problem of one Deployment dict (API input); [] when it is valid."""
    ctx = Ctx({}, "")
    _check_deployment(ctx, d)
    return ctx.errors


def canonical_deployment(d: Any) -> dict[str, Any]:
    """The canonical (defaulted) form of a valid Deployment dict; ManifestError if not."""
    ctx = Ctx({}, "")
    out = _check_deployment(ctx, d)
    if out is None:
        raise ManifestError(ctx.errors)
    return out


def _check_document(
    composer: Composer, node: yaml.Node, *, filename: str, doc_label: str
) -> tuple[dict[str, Any] | None, Ctx]:
    """One document's canonical form (None if it has problems) and its context."""
    lines: dict[str, int] = {}
    build_errs: list[tuple[int, str]] = []
    try:
        value = composer.build(node, "", lines, build_errs)
    except yaml.YAMLError as exc:
        ctx = Ctx({}, filename, doc_label)
        text = f"{filename}:{node.start_mark.line + 1} {doc_label} {exc}".replace("  ", " ")
        ctx.located.append((0, text))
        return None, ctx
    ctx = Ctx(lines, filename, doc_label)
    for at, msg in build_errs:
        text = " ".join(x for x in (f"{filename}:{at}", doc_label, msg) if x)
        ctx.located.append((at, text))
    return _check_deployment(ctx, value), ctx


def load_manifests(text: str, filename: str = "<manifest>") -> list[dict[str, Any]]:
    """Parse and validate every document of a manifest file; ManifestError lists all problems."""
    nodes = compose_documents(text, filename)
    errors: list[str] = []
    docs: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    composer = Composer()  # one per file: its node budget spans all documents
    for i, node in enumerate(nodes, 1):
        doc_label = f"(document {i})" if len(nodes) > 1 else ""
        out, ctx = _check_document(composer, node, filename=filename, doc_label=doc_label)
        errors.extend(ctx.errors)
        if out is None:
            continue
        name = out["metadata"]["name"]
        if name in seen:
            dup = Ctx(ctx.lines, filename, doc_label)
            dup.err(
                "metadata.name", f'deployment "{name}" already defined in document {seen[name]}'
            )
            errors.extend(dup.errors)
            continue
        seen[name] = i
        docs.append(out)
    if errors:
        raise ManifestError(errors)
    return docs
