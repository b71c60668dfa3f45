"""Manifests: YAML documents -> validated, defaulted, canonical Deployment dicts.

Owns the manifest schema. `load_manifests(text, filename)` parses one file of
one or more YAML documents and returns each `kind: Deployment` in canonical
form: exactly the protobuf JSON mapping of `gantry.v1.types_pb2.Deployment`
(camelCase; ports and rollingUpdate bounds as strings; pause durations as
`durationSeconds`), with defaults applied, so
`json_format.ParseDict(doc, types_pb2.Deployment())` accepts it.
`validate_deployment_dict(d)` checks one already-parsed dict (API input).

Every problem is reported, not just the first, each located:
`web.yaml:14 spec.replicas: expected an integer >= 0, got "three"` (with
`(document N)` after the line when the file holds several documents).
Unknown fields are errors with a did-you-mean. This module does no I/O.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from controller.model import QuantityError, parse_cpu, parse_memory

API_VERSION = "gantry/v1"
KIND = "Deployment"
MAX_NAME_LEN = 57  # a DNS label (63) minus the replica suffix "-xxxxx"
INT32_MAX = 2**31 - 1

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_PERCENT = re.compile(r"^\d+%$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:\d+)?$")

PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "failureThreshold": 3,
    "successThreshold": 1,
}
ANALYSIS_DEFAULTS = {"maxErrorRate": 0.05, "maxP99Ms": 0.0, "windowSeconds": 60, "minRequests": 10}


class ManifestError(ValueError):
    """One or more located problems in a manifest; `errors` lists them all."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Missing:
    pass


MISSING: Any = _Missing()
Checker = Callable[["_Ctx", Any, str], Any]


def _got(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class _Ctx:
    """Where errors go, and the line of each field path (from the YAML nodes)."""

    def __init__(self, lines: Mapping[str, int], where: str, doc: str = "") -> None:
        self.lines = lines
        self.where = where
        self.doc = doc
        self.located: list[tuple[int, str]] = []

    @property
    def errors(self) -> list[str]:
        """All problems so far, in line order (stable for the same line)."""
        return [msg for _, msg in sorted(self.located, key=lambda lm: lm[0])]

    def line_of(self, path: str) -> int | None:
        p = path
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            cut = max(p.rfind("."), p.rfind("["))
            p = p[:cut] if cut > 0 else ""

    def err(self, path: str, msg: str) -> Any:
        line = self.line_of(path)
        loc = f"{self.where}:{line}" if line is not None and self.where else self.where
        prefix = " ".join(x for x in (loc, self.doc) if x)
        field = f"{path}: " if path else ""
        text = f"{prefix} {field}{msg}" if prefix else f"{field}{msg}"
        self.located.append((line or 0, text))
        return MISSING


# ---------------------------------------------------------------- scalar checkers


def _int(lo: int = 0, hi: int = INT32_MAX, *, from_string: bool = False) -> Checker:
    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        if from_string and isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
            v = int(v)  # int64 fields arrive as strings in protobuf JSON
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            bound = f">= {lo}" if hi == INT32_MAX else f"in {lo}..{hi}"
            return ctx.err(path, f"expected an integer {bound}, got {_got(v)}")
        return v

    return check


def _float(lo: float = 0.0, hi: float | None = None) -> Checker:
    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        if not ok or v < lo or (hi is not None and v > hi):
            bound = f">= {lo:g}" if hi is None else f"in {lo:g}..{hi:g}"
            return ctx.err(path, f"expected a number {bound}, got {_got(v)}")
        return float(v)

    return check


def _str(
    pattern: re.Pattern[str] | None = None, what: str = "", *, coerce: bool = False
) -> Checker:
    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        if coerce and isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            return ctx.err(path, f"expected a string, got {_got(v)}")
        if pattern is not None and not pattern.match(v):
            return ctx.err(path, f"expected {what}, got {_got(v)}")
        return v

    return check


def _enum(*choices: str) -> Checker:
    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        if v not in choices:
            hint = _did_you_mean(str(v), choices)
            return ctx.err(path, f"expected one of {', '.join(choices)}, got {_got(v)}{hint}")
        return v

    return check


def _name(ctx: _Ctx, v: Any, path: str) -> Any:
    if not isinstance(v, str) or not _DNS_LABEL.match(v) or len(v) > MAX_NAME_LEN:
        return ctx.err(
            path,
            f"expected a DNS label (lowercase letters, digits and '-', starting and ending "
            f"with a letter or digit, at most {MAX_NAME_LEN} characters), got {_got(v)}",
        )
    return v


def _quantity(kind: str) -> Checker:
    parse = parse_cpu if kind == "cpu" else parse_memory

    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            return ctx.err(path, f"expected a {kind} quantity, got {_got(v)}")
        try:
            parse(v)
        except QuantityError:
            example = '"500m" or "1"' if kind == "cpu" else '"128Mi" or "1Gi"'
            return ctx.err(path, f"expected a {kind} quantity like {example}, got {_got(v)}")
        return str(v).strip()

    return check


def _int_or_percent(ctx: _Ctx, v: Any, path: str) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return str(v)
    if isinstance(v, str) and (v.isdigit() or _PERCENT.match(v)):
        return v
    return ctx.err(path, f'expected an integer >= 0 or a percentage like "25%", got {_got(v)}')


def _port_ref(ctx: _Ctx, v: Any, path: str) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535:
        return str(v)
    if isinstance(v, str) and (v.isdigit() and 1 <= int(v) <= 65535 or _PORT_NAME.match(v)):
        return v
    return ctx.err(path, f"expected a port number 1..65535 or a port name, got {_got(v)}")


def parse_duration(v: Any) -> int | None:
    """ "30s", "5m", "1h30m", or an integer of seconds -> seconds; None if invalid."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v if v >= 0 else None
    if not isinstance(v, str) or not v.strip():
        return None
    m = _DURATION.match(v.strip())
    if not m or not any(m.groups()):
        return None
    h, mi, s = (int(x) if x else 0 for x in m.groups())
    return h * 3600 + mi * 60 + s


def _duration(ctx: _Ctx, v: Any, path: str) -> Any:
    secs = parse_duration(v)
    if secs is None:
        return ctx.err(path, f'expected a duration like "30s", "5m" or "1h", got {_got(v)}')
    return secs


def _string_map(key: Checker, value: Checker) -> Checker:
    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        if not isinstance(v, Mapping):
            return ctx.err(path, f"expected a mapping, got {_got(v)}")
        out = {}
        for k, val in v.items():
            kk = key(ctx, k, f"{path}.{k}")
            vv = value(ctx, val, f"{path}.{k}")
            if kk is not MISSING and vv is not MISSING:
                out[kk] = vv
        return out

    return check


_label_key = _str(_LABEL_KEY, "a label key (letters, digits, '-', '_', '.')")
_label_value = _str(_LABEL_VALUE, "a label value (letters, digits, '-', '_', '.')", coerce=True)
_labels = _string_map(_label_key, _label_value)


def _list(item: Checker, *, coerce_scalar: bool = False) -> Checker:
    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        if not isinstance(v, list):
            return ctx.err(path, f"expected a list, got {_got(v)}")
        out = [item(ctx, x, f"{path}[{i}]") for i, x in enumerate(v)]
        return [x for x in out if x is not MISSING]

    return check


# ---------------------------------------------------------------- objects


def _did_you_mean(key: str, allowed: Any) -> str:
    allowed = list(allowed)
    lower = {a.lower().replace("_", ""): a for a in allowed}
    guess = lower.get(key.lower().replace("_", "").replace("-", ""))
    if guess is None:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        guess = close[0] if close else None
    return f' (did you mean "{guess}"?)' if guess else ""


def _object(
    fields: Mapping[str, Checker],
    *,
    required: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
    ignore: tuple[str, ...] = (),
) -> Checker:
    def check(ctx: _Ctx, v: Any, path: str) -> Any:
        if v is None:
            v = {}
        if not isinstance(v, Mapping):
            return ctx.err(path, f"expected a mapping, got {_got(v)}")
        out: dict[str, Any] = {}
        for key, val in v.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in ignore:
                continue
            if key not in fields:
                ctx.err(sub, f'unknown field "{key}"{_did_you_mean(str(key), fields)}')
                continue
            got = fields[key](ctx, val, sub)
            if got is not MISSING:
                out[key] = got
        for key in required:
            if key not in v:
                ctx.err(f"{path}.{key}" if path else key, "required field is missing")
        for key, dv in (defaults or {}).items():
            if key not in v:
                out[key] = dv() if callable(dv) else dv
        return out

    return check


def _env(ctx: _Ctx, v: Any, path: str) -> Any:
    if isinstance(v, Mapping):  # docker-compose style {NAME: value}
        v = [{"name": k, "value": val} for k, val in v.items()]
    return _list(_env_var)(ctx, v, path)


_env_var = _object(
    {
        "name": _str(_ENV_NAME, "an environment variable name"),
        "value": _str(coerce=True),
    },
    required=("name",),
    defaults={"value": ""},
)

_port = _object(
    {
        "name": _str(_PORT_NAME, "a port name (lowercase letters, digits and '-')"),
        "containerPort": _int(1, 65535),
        "protocol": _enum("TCP", "UDP"),
    },
    required=("containerPort",),
    defaults={"protocol": "TCP"},
)

_resource_list = _object({"cpu": _quantity("cpu"), "memory": _quantity("memory")})
_resources = _object({"requests": _resource_list, "limits": _resource_list})

_probe_fields: dict[str, Checker] = {
    "httpGet": _object(
        {"path": _str(re.compile(r"^/"), "a path starting with '/'"), "port": _port_ref},
        required=("port",),
        defaults={"path": "/"},
    ),
    "tcpSocket": _object({"port": _port_ref}, required=("port",)),
    "exec": _object({"command": _list(_str(coerce=True))}, required=("command",)),
    "initialDelaySeconds": _int(0),
    "periodSeconds": _int(1),
    "timeoutSeconds": _int(1),
    "failureThreshold": _int(1),
    "successThreshold": _int(1),
}
_probe_object = _object(_probe_fields, defaults=PROBE_DEFAULTS)


def _probe(ctx: _Ctx, v: Any, path: str) -> Any:
    out = _probe_object(ctx, v, path)
    if out is MISSING:
        return out
    handlers = [h for h in ("httpGet", "tcpSocket", "exec") if h in (v or {})]
    if len(handlers) != 1:
        return ctx.err(
            path,
            "expected exactly one of httpGet, tcpSocket, exec"
            + (f", got {', '.join(handlers)}" if handlers else ""),
        )
    return out


_template = _object(
    {
        "image": _str(re.compile(r"^\S+$"), "an image reference"),
        "command": _list(_str(coerce=True)),
        "args": _list(_str(coerce=True)),
        "env": _env,
        "workingDir": _str(re.compile(r"^/"), "an absolute path"),
        "ports": _list(_port),
        "resources": _resources,
        "readinessProbe": _probe,
        "livenessProbe": _probe,
        "restartPolicy": _enum("Always", "OnFailure", "Never"),
        "terminationGracePeriodSeconds": _int(0),
        "labels": _labels,
    },
    required=("image",),
    defaults={"restartPolicy": "Always", "terminationGracePeriodSeconds": 30},
)

_pause = _object({"duration": _duration, "durationSeconds": _int(0)})
_analysis = _object(
    {
        "maxErrorRate": _float(0.0, 1.0),
        "maxP99Ms": _float(0.0),
        "maxErrorRateIncrease": _float(0.0, 1.0),
        "maxP99Ratio": _float(0.0),
        "windowSeconds": _int(1),
        "minRequests": _int(0),
    },
    defaults=ANALYSIS_DEFAULTS,
)
_STEP_KINDS = ("setWeight", "pause", "analysis")


def _step(ctx: _Ctx, v: Any, path: str) -> Any:
    if not isinstance(v, Mapping):
        return ctx.err(path, f"expected a step (setWeight, pause or analysis), got {_got(v)}")
    out = _object({"setWeight": _int(0, 100), "pause": _pause, "analysis": _analysis})(ctx, v, path)
    kinds = [k for k in _STEP_KINDS if k in v]
    if len(kinds) != 1 and all(k in _STEP_KINDS for k in v):
        return ctx.err(path, "expected exactly one of setWeight, pause, analysis per step")
    if out is MISSING:
        return out
    pause = out.get("pause")
    if pause is not None:
        secs = pause.pop("duration", None)
        pause.setdefault("durationSeconds", secs or 0)
    return out


_strategy_object = _object(
    {
        "type": _enum("RollingUpdate", "Canary"),
        "rollingUpdate": _object(
            {"maxSurge": _int_or_percent, "maxUnavailable": _int_or_percent},
            defaults={"maxSurge": "25%", "maxUnavailable": "25%"},
        ),
        "canary": _object(
            {"replicas": _int(1), "steps": _list(_step)},
            defaults={"replicas": 1, "steps": list},
        ),
        "minReadySeconds": _int(0),
        "progressDeadlineSeconds": _int(1),
    },
    defaults={
        "type": "RollingUpdate",
        "minReadySeconds": 0,
        "progressDeadlineSeconds": 600,
    },
)


def _strategy(ctx: _Ctx, v: Any, path: str) -> Any:
    out = _strategy_object(ctx, v, path)
    if out is MISSING:
        return out
    if out.get("type") == "RollingUpdate" and "canary" in out:
        ctx.err(f"{path}.canary", 'only allowed with type: Canary (did you mean "type: Canary"?)')
    if out.get("type") == "Canary" and "canary" not in out:
        out["canary"] = {"replicas": 1, "steps": []}
    ru = out.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
    if ru.get("maxSurge") in ("0", "0%") and ru.get("maxUnavailable") in ("0", "0%"):
        ctx.err(f"{path}.rollingUpdate", "maxSurge and maxUnavailable may not both be 0")
    if out.get("progressDeadlineSeconds", 600) <= out.get("minReadySeconds", 0):
        ctx.err(f"{path}.progressDeadlineSeconds", "must be greater than minReadySeconds")
    return out


def _route_obj(ctx: _Ctx, v: Any, path: str) -> Any:
    out = _object(
        {
            "host": _str(_HOST, "a host name"),
            "pathPrefix": _str(re.compile(r"^/\S*$"), "a path starting with '/'"),
            "port": _port_ref,
        }
    )(ctx, v, path)
    if out is not MISSING and not (v or {}).get("host") and not (v or {}).get("pathPrefix"):
        return ctx.err(path, "expected host and/or pathPrefix")
    return out


_spec = _object(
    {
        "replicas": _int(0),
        "template": _template,
        "strategy": _strategy,
        "route": _route_obj,
        "nodeSelector": _labels,
        "revisionHistoryLimit": _int(0),
    },
    required=("template",),
    defaults={
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "strategy": lambda: _strategy(_Ctx({}, ""), {}, "spec.strategy"),
    },
)

_metadata = _object(
    {
        "name": _name,
        "labels": _labels,
        "generation": _int(0, 2**63 - 1, from_string=True),
        "uid": _str(),
        "createdAt": _str(),
    },
    required=("name",),
)

_deployment = _object(
    {
        "apiVersion": _enum(API_VERSION),
        "kind": _enum(KIND),
        "metadata": _metadata,
        "spec": _spec,
    },
    required=("apiVersion", "kind", "metadata", "spec"),
    ignore=("status",),
)


# ---------------------------------------------------------------- cross-field checks


def _cross_checks(ctx: _Ctx, doc: Mapping[str, Any]) -> None:
    spec = doc.get("spec") or {}
    tpl = spec.get("template") or {}
    ports = tpl.get("ports") or []
    names = [p.get("name") for p in ports if p.get("name")]
    for i, p in enumerate(ports):
        if p.get("name") and names.count(p["name"]) > 1 and names.index(p["name"]) != i:
            ctx.err(f"spec.template.ports[{i}].name", f'duplicate port name "{p["name"]}"')
    numbers = [p.get("containerPort") for p in ports]
    for i, n in enumerate(numbers):
        if n is not None and numbers.index(n) != i:
            ctx.err(f"spec.template.ports[{i}].containerPort", f"duplicate containerPort {n}")
    valid_names = set(names)
    refs = [("spec.route.port", (spec.get("route") or {}).get("port"))]
    for probe in ("readinessProbe", "livenessProbe"):
        p = tpl.get(probe) or {}
        for h in ("httpGet", "tcpSocket"):
            if h in p:
                refs.append((f"spec.template.{probe}.{h}.port", p[h].get("port")))
    for path, ref in refs:
        if ref and not str(ref).isdigit() and ref not in valid_names:
            hint = _did_you_mean(ref, valid_names)
            ctx.err(path, f'no port named "{ref}" in spec.template.ports{hint}')
    res = tpl.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    for kind, parse in (("cpu", parse_cpu), ("memory", parse_memory)):
        if kind in req and kind in lim and parse(req[kind]) > parse(lim[kind]):
            ctx.err(
                f"spec.template.resources.requests.{kind}",
                f"request {req[kind]} is more than the limit {lim[kind]}",
            )


def _check_deployment(ctx: _Ctx, d: Any) -> dict[str, Any] | None:
    n_before = len(ctx.located)
    out = _deployment(ctx, d, "")
    if out is MISSING:
        return None
    _cross_checks(ctx, out)
    return out if len(ctx.located) == n_before else None


def validate_deployment_dict(d: Any) -> list[str]:
    """Every problem of one Deployment dict (API input); [] when it is valid."""
    ctx = _Ctx({}, "")
    _check_deployment(ctx, d)
    return ctx.errors


def canonical_deployment(d: Any) -> dict[str, Any]:
    """The canonical (defaulted) form of a valid Deployment dict; ManifestError if not."""
    ctx = _Ctx({}, "")
    out = _check_deployment(ctx, d)
    if out is None:
        raise ManifestError(ctx.errors)
    return out


# ---------------------------------------------------------------- YAML with lines


class _Composer:
    """Turns a YAML node tree into Python values, noting each field's line."""

    MAX_NODES = 200_000  # aliases can make a small file expand without bound

    def __init__(self) -> None:
        self.constructor = yaml.SafeLoader("")
        self.built = 0

    def build(
        self, node: yaml.Node, path: str, lines: dict[str, int], errs: list[tuple[int, str]]
    ) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        self.built += 1
        if self.built > self.MAX_NODES:
            raise yaml.YAMLError(f"document expands to more than {self.MAX_NODES} nodes (aliases?)")
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                key = self.build(knode, "\0", {}, errs)
                if isinstance(key, list | dict):
                    errs.append(
                        (
                            knode.start_mark.line + 1,
                            f"{path or '<document>'}: a key must be a plain value",
                        )
                    )
                    continue
                sub = f"{path}.{key}" if path else str(key)
                if key in out:
                    errs.append((knode.start_mark.line + 1, f'{sub}: duplicate key "{key}"'))
                lines[sub] = knode.start_mark.line + 1
                out[key] = self.build(vnode, sub, lines, errs)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, f"{path}[{i}]", lines, errs) for i, item in enumerate(node.value)
            ]
        return self.constructor.construct_object(node, deep=True)


def _blank(node: yaml.Node | None) -> bool:
    return node is None or (
        isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null") and not node.value
    )


def load_manifests(text: str, filename: str = "<manifest>") -> list[dict[str, Any]]:
    """Parse and validate every document of a manifest file; ManifestError lists all problems."""
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if not _blank(n)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ManifestError(
            [f"{filename}{line} YAML syntax error: {exc.problem or exc.context}"]
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError([f"{filename}: YAML error: {exc}"]) from None
    if not nodes:
        raise ManifestError([f"{filename}: no documents"])
    errors: list[str] = []
    docs: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    composer = _Composer()
    for i, node in enumerate(nodes, 1):
        doc_label = f"(document {i})" if len(nodes) > 1 else ""
        lines: dict[str, int] = {}
        build_errs: list[tuple[int, str]] = []
        try:
            value = composer.build(node, "", lines, build_errs)
        except yaml.YAMLError as exc:
            errors.append(
                f"{filename}:{node.start_mark.line + 1} {doc_label} {exc}".replace("  ", " ")
            )
            continue
        ctx = _Ctx(lines, filename, doc_label)
        for at, msg in build_errs:
            text = " ".join(x for x in (f"{filename}:{at}", doc_label, msg) if x)
            ctx.located.append((at, text))
        out = _check_deployment(ctx, value)
        errors.extend(ctx.errors)
        if out is not None:
            name = out["metadata"]["name"]
            if name in seen:
                dup = _Ctx(lines, filename, doc_label)
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
