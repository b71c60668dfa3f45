"""Parser for the Gantryfile: the Dockerfile subset Gantry builds.

FROM (scratch or an image), COPY, RUN, ENV, WORKDIR, USER, EXPOSE, CMD,
ENTRYPOINT, LABEL; `#` comments and `\\` line continuations. Pure: text in,
instructions out; every error is a BuildError naming file:line.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from agent.images.errors import BuildError

KEYWORDS = ("FROM", "COPY", "RUN", "ENV", "WORKDIR", "USER", "EXPOSE", "CMD", "ENTRYPOINT", "LABEL")


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: tuple[str, ...]  # for RUN/CMD/ENTRYPOINT: argv (shell form -> /bin/sh -c)
    text: str  # normalized source text, part of the cache key

    @property
    def where(self) -> str:
        return f"line {self.line}"


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = no
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        out.append((start, " ".join(p for p in buf if p)))
        buf = []
    if buf:
        out.append((start, " ".join(p for p in buf if p)))
    return out


def _exec_or_shell(rest: str, where: str) -> tuple[str, ...]:
    if rest.startswith("["):
        try:
            argv = json.loads(rest)
        except ValueError:
            raise BuildError(f"{where}: bad JSON array {rest!r}") from None
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise BuildError(f"{where}: exec form must be a non-empty JSON array of strings")
        return tuple(argv)
    return ("/bin/sh", "-c", rest)


def _pairs(rest: str, where: str, keyword: str) -> tuple[str, ...]:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise BuildError(f"{where}: {keyword}: {exc}") from None
    if not words:
        raise BuildError(f"{where}: {keyword} needs KEY=VALUE")
    if "=" not in words[0]:
        if len(words) < 2:
            raise BuildError(f"{where}: {keyword} {words[0]} needs a value")
        return (f"{words[0]}={rest.split(None, 1)[1].strip()}",)
    for w in words:
        if "=" not in w or w.startswith("="):
            raise BuildError(f"{where}: {keyword}: expected KEY=VALUE, got {w!r}")
    return tuple(words)


def _parse_one(keyword: str, rest: str, where: str) -> tuple[str, ...]:
    if keyword in ("RUN", "CMD", "ENTRYPOINT"):
        return _exec_or_shell(rest, where)
    if keyword in ("ENV", "LABEL"):
        return _pairs(rest, where, keyword)
    if keyword == "COPY":
        if rest.startswith("["):
            args = _exec_or_shell(rest, where)
        else:
            args = tuple(rest.split())
        flags = tuple(a for a in args if a.startswith("--"))
        for flag in flags:
            if not flag.startswith("--chown="):
                raise BuildError(f"{where}: COPY: unsupported flag {flag}")
        if len(args) - len(flags) < 2:
            raise BuildError(f"{where}: COPY needs at least one source and a destination")
        return args
    words = rest.split()
    if keyword in ("FROM", "WORKDIR", "USER") and len(words) != 1:
        raise BuildError(f"{where}: {keyword} takes exactly one argument")
    if keyword == "EXPOSE":
        for w in words:
            port, _, proto = w.partition("/")
            if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("", "tcp", "udp"):
                raise BuildError(f"{where}: EXPOSE: bad port {w!r}")
    return tuple(words)


def parse(text: str, filename: str = "Gantryfile") -> list[Instruction]:
    """Parse a Gantryfile; raises BuildError('<file>:<line>: ...')."""
    instructions: list[Instruction] = []
    for line, logical in _logical_lines(text):
        where = f"{filename}:{line}"
        word, _, rest = logical.partition(" ")
        keyword = word.upper()
        if keyword not in KEYWORDS:
            raise BuildError(
                f"{where}: unknown instruction {word!r} (supported: {', '.join(KEYWORDS)})"
            )
        rest = rest.strip()
        if not rest:
            raise BuildError(f"{where}: {keyword} needs an argument")
        args = _parse_one(keyword, rest, where)
        if not instructions and keyword != "FROM":
            raise BuildError(f"{where}: the first instruction must be FROM, not {keyword}")
        if instructions and keyword == "FROM":
            raise BuildError(f"{where}: only one FROM is supported")
        instructions.append(Instruction(line, keyword, args, f"{keyword} {rest}"))
    if not instructions:
        raise BuildError(f"{filename}: no instructions")
    return instructions
