"""Settings: one frozen dataclass per process, built once at start-up.

Each process declares its settings as a frozen dataclass whose fields carry
documented defaults. `load_settings` fills it, in increasing precedence, from
the defaults, a TOML file (a table named after the process), the environment
(`GANTRY_<SECTION>_<FIELD>`) and explicit overrides (command-line flags).
Nothing deep in the code reads `os.environ`: pass the settings object down.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_STATE_DIR = Path("/var/lib/gantry")


class ConfigError(ValueError):
    """A setting that cannot be used: names the source and the field."""


def _coerce(raw: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw is None or raw == "":
            return None
        return _coerce(raw, inner[0], where)
    if origin in (list, tuple):
        (item,) = typing.get_args(kind)[:1] or (str,)
        items = [s.strip() for s in raw.split(",") if s.strip()] if isinstance(raw, str) else raw
        values = [_coerce(v, item, where) for v in items]
        return tuple(values) if origin is tuple else values
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is Path:
            return Path(raw)
        if kind in (int, float, str):
            return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {raw!r}") from None
    return raw


def load_settings(
    cls: type[T],
    *,
    section: str,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build `cls` from defaults < file[section] < env < overrides."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if file is not None:
        try:
            table = tomllib.loads(file.read_text()).get(section, {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{file} [{section}] {key}: unknown setting")
            values[name] = _coerce(raw, hints[name], f"{file} [{section}] {key}")
    prefix = f"GANTRY_{section.upper()}_"
    for key, raw in (os.environ if env is None else env).items():
        if key.startswith(prefix):
            name = key[len(prefix) :].lower()
            if name in fields:
                values[name] = _coerce(raw, hints[name], key)
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in fields:
            raise ConfigError(f"--{name.replace('_', '-')}: unknown setting")
        values[name] = _coerce(raw, hints[name], f"--{name.replace('_', '-')}")
    return cls(**values)


def state_dir_from(env: Mapping[str, str], flag: str | None) -> Path:
    """The state directory: --state-dir, else GANTRY_STATE_DIR, else /var/lib/gantry."""
    if flag:
        return Path(flag)
    if env.get("GANTRY_STATE_DIR"):
        return Path(env["GANTRY_STATE_DIR"])
    return DEFAULT_STATE_DIR
