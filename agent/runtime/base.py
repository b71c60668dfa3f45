"""The runtime seam: what the agent and the image builder ask of a runtime.

Verbs mirror runc's (create, start, state, kill, delete, run) over an OCI
runtime-spec bundle (a directory with config.json and the root file system
the spec's root.path names). Two implementations sit behind it: Gantry's own
isolation core and runc. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Status(enum.StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ContainerState:
    id: str
    status: Status
    pid: int  # host pid of the container's init (0 once stopped)
    bundle: Path
    exit_code: int | None = None


@dataclass(frozen=True)
class ContainerIO:
    """Where the container's stdout and stderr go (files the agent caps)."""

    stdout: Path | None = None
    stderr: Path | None = None


class RuntimeError_(Exception):
    """Base of the runtime's errors."""


class ContainerNotFound(RuntimeError_):
    pass


class ContainerExists(RuntimeError_):
    pass


class BundleError(RuntimeError_):
    """The bundle or its config.json is unusable: says what and where."""


class Runtime(Protocol):
    name: str

    async def create(self, container_id: str, bundle: Path, io: ContainerIO) -> None: ...

    async def start(self, container_id: str) -> None: ...

    async def state(self, container_id: str) -> ContainerState: ...

    async def kill(self, container_id: str, signal: int) -> None: ...

    async def delete(self, container_id: str, *, force: bool = False) -> None: ...

    async def run(self, container_id: str, bundle: Path, io: ContainerIO) -> int:
        """create + start + wait; returns the exit code (128+n for a signal)."""
        ...

    async def wait(self, container_id: str) -> int: ...

    async def exec(self, container_id: str, argv: Sequence[str], time_limit: float) -> int:
        """argv inside the running container, under its limits; its exit code.
        TimeoutError (the process killed) after time_limit seconds."""
        ...

    async def list(self) -> list[ContainerState]: ...
