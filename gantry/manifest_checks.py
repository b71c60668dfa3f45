"""Located checks: the error context and the generic field checkers.

Owns `ManifestError`, the `Ctx` that collects every problem with the line of
its field path (`web.yaml:14 (document 2) spec.replicas: ...`), and checkers
that know nothing of Deployments: integers, numbers, strings, enums, lists,
string maps and objects with required fields, defaults and a did-you-mean
for unknown keys. A checker is `check(ctx, value, path)`; it returns the
canonical value, or `MISSING` after reporting the problem to `ctx`.

It must not know the Deployment schema (that is `gantry.manifest_schema`)
nor read YAML (that is `gantry.manifest_yaml`); it does no I/O.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

INT32_MAX = 2**31 - 1


class ManifestError(ValueError):
    """One or more located problems in a manifest; `errors` lists them all."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Missing:
    pass


MISSING: Any = _Missing()
Checker = Callable[["Ctx", Any, str], Any]


def got(value: Any) -> str:
    """How an unexpected value reads in an error: JSON, or "a mapping"/"a list"."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def did_you_mean(key: str, allowed: Any) -> str:
    """` (did you mean "x"?)` for the allowed name closest to `key`, else ""."""
    allowed = list(allowed)
    lower = {a.lower().replace("_", ""): a for a in allowed}
    guess = lower.get(key.lower().replace("_", "").replace("-", ""))
    if guess is None:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        guess = close[0] if close else None
    return f' (did you mean "{guess}"?)' if guess else ""


class Ctx:
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


# ---------------------------------------------------------------- scalars


def integer(lo: int = 0, hi: int = INT32_MAX, *, from_string: bool = False) -> Checker:
    def check(ctx: Ctx, v: Any, path: str) -> Any:
        if from_string and isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
            v = int(v)  # int64 fields arrive as strings in protobuf JSON
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            bound = f">= {lo}" if hi == INT32_MAX else f"in {lo}..{hi}"
            return ctx.err(path, f"expected an integer {bound}, got {got(v)}")
        return v

    return check


def number(lo: float = 0.0, hi: float | None = None) -> Checker:
    def check(ctx: Ctx, v: Any, path: str) -> Any:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        if not ok or v < lo or (hi is not None and v > hi):
            bound = f">= {lo:g}" if hi is None else f"in {lo:g}..{hi:g}"
            return ctx.err(path, f"expected a number {bound}, got {got(v)}")
        return float(v)

    return check


def string(
    pattern: re.Pattern[str] | None = None, what: str = "", *, coerce: bool = False
) -> Checker:
    def check(ctx: Ctx, v: Any, path: str) -> Any:
        if coerce and isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            return ctx.err(path, f"expected a string, got {got(v)}")
        if pattern is not None and not pattern.match(v):
            return ctx.err(path, f"expected {what}, got {got(v)}")
        return v

    return check


def one_of(*choices: str) -> Checker:
    def check(ctx: Ctx, v: Any, path: str) -> Any:
        if v not in choices:
            hint = did_you_mean(str(v), choices)
            return ctx.err(path, f"expected one of {', '.join(choices)}, got {got(v)}{hint}")
        return v

    return check


# ---------------------------------------------------------------- containers


def string_map(key: Checker, value: Checker) -> Checker:
    def check(ctx: Ctx, v: Any, path: str) -> Any:
        if not isinstance(v, Mapping):
            return ctx.err(path, f"expected a mapping, got {got(v)}")
        out = {}
        for k, val in v.items():
            kk = key(ctx, k, f"{path}.{k}")
            vv = value(ctx, val, f"{path}.{k}")
            if kk is not MISSING and vv is not MISSING:
                out[kk] = vv
        return out

    return check


def list_of(item: Checker) -> Checker:
    def check(ctx: Ctx, v: Any, path: str) -> Any:
        if not isinstance(v, list):
            return ctx.err(path, f"expected a list, got {got(v)}")
        out = [item(ctx, x, f"{path}[{i}]") for i, x in enumerate(v)]
        return [x for x in out if x is not MISSING]

    return check


def object_of(
    fields: Mapping[str, Checker],
    *,
    required: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
    ignore: tuple[str, ...] = (),
) -> Checker:
    """A mapping of known fields; a callable default is called for each use."""

    def check(ctx: Ctx, v: Any, path: str) -> Any:
        if v is None:
            v = {}
        if not isinstance(v, Mapping):
            return ctx.err(path, f"expected a mapping, got {got(v)}")
        out: dict[str, Any] = {}
        for key, val in v.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in ignore:
                continue
            if key not in fields:
                ctx.err(sub, f'unknown field "{key}"{did_you_mean(str(key), fields)}')
                continue
            value = fields[key](ctx, val, sub)
            if value is not MISSING:
                out[key] = value
        for key in required:
            if key not in v:
                ctx.err(f"{path}.{key}" if path else key, "required field is missing")
        for key, dv in (defaults or {}).items():
            if key not in v:
                out[key] = dv() if callable(dv) else dv
        return out

    return check
