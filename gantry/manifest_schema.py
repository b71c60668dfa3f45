"""The Deployment schema: field tables, defaults and cross-field rules.

Owns what a `kind: Deployment` may say and what it means when it says
nothing: the tables for metadata, spec, template (env, ports, resources,
probes), strategy (rollingUpdate bounds, canary steps: setWeight, pause,
analysis) and route, the Gantry-specific value checkers (DNS names, cpu and
memory quantities, ports by number or name, durations), and the rules that
span fields (duplicate ports, port names that must exist, requests within
limits). `DEPLOYMENT` checks a whole document; `cross_checks` runs after it.
Its output is the protobuf JSON mapping of `gantry.v1.types_pb2.Deployment`.

It must not read YAML or assemble the public entry points (that is
`gantry.manifest`); it does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.model import QuantityError, parse_cpu, parse_memory
from gantry.manifest_checks import (
    MISSING,
    Checker,
    Ctx,
    did_you_mean,
    got,
    integer,
    list_of,
    number,
    object_of,
    one_of,
    string,
    string_map,
)

API_VERSION = "gantry/v1"
KIND = "Deployment"
MAX_NAME_LEN = 57  # a DNS label (63) minus the replica suffix "-xxxxx"

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


# ---------------------------------------------------------------- Gantry values


def _name(ctx: Ctx, v: Any, path: str) -> Any:
    if not isinstance(v, str) or not _DNS_LABEL.match(v) or len(v) > MAX_NAME_LEN:
        return ctx.err(
            path,
            f"expected a DNS label (lowercase letters, digits and '-', starting and ending "
            f"with a letter or digit, at most {MAX_NAME_LEN} characters), got {got(v)}",
        )
    return v


def _quantity(kind: str) -> Checker:
    parse = parse_cpu if kind == "cpu" else parse_memory

    def check(ctx: Ctx, v: Any, path: str) -> Any:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            return ctx.err(path, f"expected a {kind} quantity, got {got(v)}")
        try:
            parse(v)
        except QuantityError:
            example = '"500m" or "1"' if kind == "cpu" else '"128Mi" or "1Gi"'
            return ctx.err(path, f"expected a {kind} quantity like {example}, got {got(v)}")
        return str(v).strip()

    return check


def _int_or_percent(ctx: Ctx, v: Any, path: str) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return str(v)
    if isinstance(v, str) and (v.isdigit() or _PERCENT.match(v)):
        return v
    return ctx.err(path, f'expected an integer >= 0 or a percentage like "25%", got {got(v)}')


def _port_ref(ctx: Ctx, v: Any, path: str) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535:
        return str(v)
    if isinstance(v, str) and (v.isdigit() and 1 <= int(v) <= 65535 or _PORT_NAME.match(v)):
        return v
    return ctx.err(path, f"expected a port number 1..65535 or a port name, got {got(v)}")


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


def _duration(ctx: Ctx, v: Any, path: str) -> Any:
    secs = parse_duration(v)
    if secs is None:
        return ctx.err(path, f'expected a duration like "30s", "5m" or "1h", got {got(v)}')
    return secs


_label_key = string(_LABEL_KEY, "a label key (letters, digits, '-', '_', '.')")
_label_value = string(_LABEL_VALUE, "a label value (letters, digits, '-', '_', '.')", coerce=True)
_labels = string_map(_label_key, _label_value)


# ---------------------------------------------------------------- template


def _env(ctx: Ctx, v: Any, path: str) -> Any:
    if isinstance(v, Mapping):  # docker-compose style {NAME: value}
        v = [{"name": k, "value": val} for k, val in v.items()]
    return list_of(_env_var)(ctx, v, path)


_env_var = object_of(
    {
        "name": string(_ENV_NAME, "an environment variable name"),
        "value": string(coerce=True),
    },
    required=("name",),
    defaults={"value": ""},
)

_port = object_of(
    {
        "name": string(_PORT_NAME, "a port name (lowercase letters, digits and '-')"),
        "containerPort": integer(1, 65535),
        "protocol": one_of("TCP", "UDP"),
    },
    required=("containerPort",),
    defaults={"protocol": "TCP"},
)

_resource_list = object_of({"cpu": _quantity("cpu"), "memory": _quantity("memory")})
_resources = object_of({"requests": _resource_list, "limits": _resource_list})

_probe_fields: dict[str, Checker] = {
    "httpGet": object_of(
        {"path": string(re.compile(r"^/"), "a path starting with '/'"), "port": _port_ref},
        required=("port",),
        defaults={"path": "/"},
    ),
    "tcpSocket": object_of({"port": _port_ref}, required=("port",)),
    "exec": object_of({"command": list_of(string(coerce=True))}, required=("command",)),
    "initialDelaySeconds": integer(0),
    "periodSeconds": integer(1),
    "timeoutSeconds": integer(1),
    "failureThreshold": integer(1),
    "successThreshold": integer(1),
}
_probe_object = object_of(_probe_fields, defaults=PROBE_DEFAULTS)


def _probe(ctx: Ctx, v: Any, path: str) -> Any:
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


_template = object_of(
    {
        "image": string(re.compile(r"^\S+$"), "an image reference"),
        "command": list_of(string(coerce=True)),
        "args": list_of(string(coerce=True)),
        "env": _env,
        "workingDir": string(re.compile(r"^/"), "an absolute path"),
        "ports": list_of(_port),
        "resources": _resources,
        "readinessProbe": _probe,
        "livenessProbe": _probe,
        "restartPolicy": one_of("Always", "OnFailure", "Never"),
        "terminationGracePeriodSeconds": integer(0),
        "labels": _labels,
    },
    required=("image",),
    defaults={"restartPolicy": "Always", "terminationGracePeriodSeconds": 30},
)


# ---------------------------------------------------------------- strategy


_pause = object_of({"duration": _duration, "durationSeconds": integer(0)})
_analysis = object_of(
    {
        "maxErrorRate": number(0.0, 1.0),
        "maxP99Ms": number(0.0),
        "maxErrorRateIncrease": number(0.0, 1.0),
        "maxP99Ratio": number(0.0),
        "windowSeconds": integer(1),
        "minRequests": integer(0),
    },
    defaults=ANALYSIS_DEFAULTS,
)
_STEP_KINDS = ("setWeight", "pause", "analysis")


def _step(ctx: Ctx, v: Any, path: str) -> Any:
    if not isinstance(v, Mapping):
        return ctx.err(path, f"expected a step (setWeight, pause or analysis), got {got(v)}")
    out = object_of({"setWeight": integer(0, 100), "pause": _pause, "analysis": _analysis})(
        ctx, v, path
    )
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


_strategy_object = object_of(
    {
        "type": one_of("RollingUpdate", "Canary"),
        "rollingUpdate": object_of(
            {"maxSurge": _int_or_percent, "maxUnavailable": _int_or_percent},
            defaults={"maxSurge": "25%", "maxUnavailable": "25%"},
        ),
        "canary": object_of(
            {"replicas": integer(1), "steps": list_of(_step)},
            defaults={"replicas": 1, "steps": list},
        ),
        "minReadySeconds": integer(0),
        "progressDeadlineSeconds": integer(1),
    },
    defaults={
        "type": "RollingUpdate",
        "minReadySeconds": 0,
        "progressDeadlineSeconds": 600,
    },
)


def _strategy(ctx: Ctx, v: Any, path: str) -> Any:
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


# ---------------------------------------------------------------- document


def _route_obj(ctx: Ctx, v: Any, path: str) -> Any:
    out = object_of(
        {
            "host": string(_HOST, "a host name"),
            "pathPrefix": string(re.compile(r"^/\S*$"), "a path starting with '/'"),
            "port": _port_ref,
        }
    )(ctx, v, path)
    if out is not MISSING and not (v or {}).get("host") and not (v or {}).get("pathPrefix"):
        return ctx.err(path, "expected host and/or pathPrefix")
    return out


_spec = object_of(
    {
        "replicas": integer(0),
        "template": _template,
        "strategy": _strategy,
        "route": _route_obj,
        "nodeSelector": _labels,
        "revisionHistoryLimit": integer(0),
    },
    required=("template",),
    defaults={
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "strategy": lambda: _strategy(Ctx({}, ""), {}, "spec.strategy"),
    },
)

_metadata = object_of(
    {
        "name": _name,
        "labels": _labels,
        "generation": integer(0, 2**63 - 1, from_string=True),
        "uid": string(),
        "createdAt": string(),
    },
    required=("name",),
)

DEPLOYMENT = object_of(
    {
        "apiVersion": one_of(API_VERSION),
        "kind": one_of(KIND),
        "metadata": _metadata,
        "spec": _spec,
    },
    required=("apiVersion", "kind", "metadata", "spec"),
    ignore=("status",),
)


# ---------------------------------------------------------------- cross-field checks


def cross_checks(ctx: Ctx, doc: Mapping[str, Any]) -> None:
    """The rules that span fields of an already-checked, defaulted document."""
    spec = doc.get("spec") or {}
    tpl = spec.get("template") or {}
    _check_ports(ctx, spec, tpl)
    _check_resources(ctx, tpl)


def _check_ports(ctx: Ctx, spec: Mapping[str, Any], tpl: Mapping[str, Any]) -> None:
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
            hint = did_you_mean(ref, valid_names)
            ctx.err(path, f'no port named "{ref}" in spec.template.ports{hint}')


def _check_resources(ctx: Ctx, tpl: Mapping[str, Any]) -> None:
    res = tpl.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    for kind, parse in (("cpu", parse_cpu), ("memory", parse_memory)):
        if kind in req and kind in lim and parse(req[kind]) > parse(lim[kind]):
            ctx.err(
                f"spec.template.resources.requests.{kind}",
                f"request {req[kind]} is more than the limit {lim[kind]}",
            )
