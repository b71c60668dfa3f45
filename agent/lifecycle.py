"""The container lifecycle as a pure state machine: events in, actions out.

One `Replica` record per assigned replica instance (replica name + epoch).
`step(record, event, now)` returns the next record and the actions the
driver (agent/worker.py) must perform, in order; the outcome of an action
comes back as another event. Timers are plain deadlines on the record:
`next_deadline(record)` says when the driver must deliver a `Tick`.

Phases: Pending -> Pulling -> Creating -> Starting -> Running (ready or not)
-> Draining -> Stopping -> Removed, with Backoff between a crash and the next
start, and Exited / Failed as terminal phases when the restart policy says
not to restart. Restart delays double from `backoff_base` up to
`backoff_cap` and fall back to the base once a container ran for
`backoff_reset` seconds.

Actions run in the order given: a REPORT comes before a long action (pull,
create) so the controller hears of the new phase at once, and after the
cleanup when a replica is gone (its ports are free once it reads Stopped).

This module does no I/O and imports nothing from asyncio, grpc or the
runtime; it must stay that way.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any


class Phase(enum.StrEnum):
    PENDING = "Pending"
    PULLING = "Pulling"
    CREATING = "Creating"
    STARTING = "Starting"
    RUNNING = "Running"
    BACKOFF = "Backoff"
    DRAINING = "Draining"
    STOPPING = "Stopping"
    EXITED = "Exited"
    FAILED = "Failed"
    REMOVED = "Removed"


class RestartPolicy(enum.StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """'' means Always (the manifest's default); unknown text is an error."""
        if not text:
            return cls.ALWAYS
        for policy in cls:
            if policy.value.lower() == text.lower():
                return policy
        raise ValueError(f"restartPolicy: unknown value {text!r} (Always, OnFailure, Never)")


class Act(enum.StrEnum):
    PULL = "pull"
    CREATE = "create"  # build bundle + network, runtime create
    START = "start"
    START_PROBES = "start_probes"
    STOP_PROBES = "stop_probes"
    SIGNAL_TERM = "signal_term"
    SIGNAL_KILL = "signal_kill"
    CLEANUP = "cleanup"  # delete the container and its network
    REPORT = "report"
    FORGET = "forget"  # the record is done; the driver drops it


# Phases in which the container process may exist.
LIVE = frozenset({Phase.RUNNING, Phase.DRAINING, Phase.STOPPING})
TERMINAL = frozenset({Phase.EXITED, Phase.FAILED, Phase.REMOVED})


@dataclass(frozen=True)
class Timing:
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    backoff_reset: float = 60.0
    # After SIGKILL, how long to wait for the exit before giving up on it.
    kill_timeout: float = 10.0


@dataclass(frozen=True)
class Replica:
    name: str
    epoch: int
    policy: RestartPolicy = RestartPolicy.ALWAYS
    grace_seconds: float = 30.0
    timing: Timing = field(default_factory=Timing)
    phase: Phase = Phase.PENDING
    ready: bool = False
    restarts: int = 0
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    pulled: bool = False
    stop_requested: bool = False
    drain_seconds: float = 0.0
    started_at: float | None = None
    backoff_delay: float = 0.0  # the delay used for the last backoff (0: none yet)
    deadline: float | None = None  # drain end, backoff end, kill time or kill timeout
    kill_sent: bool = False


# ---- events ---------------------------------------------------------------


@dataclass(frozen=True)
class Assigned:
    """Start the replica (from Pending)."""


@dataclass(frozen=True)
class Adopted:
    """The agent found this replica's container already running after its restart."""


@dataclass(frozen=True)
class Pulled:
    pass


@dataclass(frozen=True)
class PullFailed:
    message: str


@dataclass(frozen=True)
class Created:
    pass


@dataclass(frozen=True)
class CreateFailed:
    message: str


@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class StartFailed:
    message: str


@dataclass(frozen=True)
class Exited:
    code: int


@dataclass(frozen=True)
class Readiness:
    ready: bool


@dataclass(frozen=True)
class LivenessFailed:
    message: str = ""


@dataclass(frozen=True)
class StopRequested:
    drain_seconds: float = 0.0
    reason: str = "Removed"


@dataclass(frozen=True)
class Tick:
    pass


Event = (
    Assigned
    | Adopted
    | Pulled
    | PullFailed
    | Created
    | CreateFailed
    | Started
    | StartFailed
    | Exited
    | Readiness
    | LivenessFailed
    | StopRequested
    | Tick
)

Actions = tuple[Act, ...]


# ---- pure helpers -----------------------------------------------------------


def next_backoff(rec: Replica, now: float) -> float:
    """The delay before the next start: doubling, capped, reset after a long run."""
    t = rec.timing
    ran_long = rec.started_at is not None and now - rec.started_at >= t.backoff_reset
    if rec.backoff_delay <= 0 or ran_long:
        return t.backoff_base
    return min(rec.backoff_delay * 2, t.backoff_cap)


def should_restart(policy: RestartPolicy, code: int) -> bool:
    if policy is RestartPolicy.ALWAYS:
        return True
    if policy is RestartPolicy.ON_FAILURE:
        return code != 0
    return False


def next_deadline(rec: Replica) -> float | None:
    """When the driver must deliver a Tick (None: no timer pending)."""
    return rec.deadline


def report_phase(rec: Replica) -> str:
    """The phase as the Nodes contract spells it: Starting|Running|Exited|Failed|Stopped."""
    if rec.phase in (Phase.RUNNING, Phase.DRAINING, Phase.STOPPING):
        return "Running"
    if rec.phase is Phase.EXITED:
        return "Exited"
    if rec.phase is Phase.FAILED:
        return "Failed"
    if rec.phase is Phase.REMOVED:
        return "Stopped"
    return "Starting"


# ---- the transition function --------------------------------------------------


def step(rec: Replica, event: Event, now: float) -> tuple[Replica, Actions]:
    """Apply one event; return the new record and the actions to perform in order."""
    handler = _HANDLERS.get(type(event))
    if handler is None:  # pragma: no cover - the Event union is closed
        raise TypeError(f"unknown event {event!r}")
    return handler(rec, event, now)


def _removed(rec: Replica, *, cleanup: bool, reason: str = "") -> tuple[Replica, Actions]:
    new = replace(
        rec,
        phase=Phase.REMOVED,
        ready=False,
        deadline=None,
        reason=reason or rec.reason or "Stopped",
    )
    acts: tuple[Act, ...] = (Act.CLEANUP,) if cleanup else ()
    return new, (*acts, Act.REPORT, Act.FORGET)


def _on_assigned(rec: Replica, ev: Assigned, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.PENDING:
        return rec, ()
    if rec.stop_requested:
        return _removed(rec, cleanup=False)
    if rec.pulled:
        return replace(rec, phase=Phase.CREATING, reason="Creating"), (Act.REPORT, Act.CREATE)
    return replace(rec, phase=Phase.PULLING, reason="Pulling"), (Act.REPORT, Act.PULL)


def _on_adopted(rec: Replica, ev: Adopted, now: float) -> tuple[Replica, Actions]:
    new = replace(
        rec,
        phase=Phase.RUNNING,
        pulled=True,
        ready=False,
        started_at=now,
        reason="Adopted",
        deadline=None,
    )
    return new, (Act.START_PROBES, Act.REPORT)


def _on_pulled(rec: Replica, ev: Pulled, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.PULLING:
        return rec, ()
    if rec.stop_requested:
        return _removed(replace(rec, pulled=True), cleanup=False)
    new = replace(rec, phase=Phase.CREATING, pulled=True, reason="Creating")
    return new, (Act.REPORT, Act.CREATE)


def _backoff(rec: Replica, now: float, *, reason: str, message: str) -> tuple[Replica, Actions]:
    delay = next_backoff(rec, now)
    new = replace(
        rec,
        phase=Phase.BACKOFF,
        ready=False,
        reason=reason,
        message=message,
        backoff_delay=delay,
        deadline=now + delay,
        kill_sent=False,
    )
    return new, (Act.REPORT,)


def _on_pull_failed(rec: Replica, ev: PullFailed, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.PULLING:
        return rec, ()
    if rec.stop_requested:
        return _removed(rec, cleanup=False)
    return _backoff(rec, now, reason="ImagePullBackOff", message=ev.message)


def _start_failed(rec: Replica, now: float, message: str) -> tuple[Replica, Actions]:
    if rec.stop_requested:
        return _removed(rec, cleanup=True)
    if rec.policy is RestartPolicy.NEVER:
        new = replace(rec, phase=Phase.FAILED, reason="StartError", message=message, deadline=None)
        return new, (Act.CLEANUP, Act.REPORT)
    new, acts = _backoff(rec, now, reason="StartError", message=message)
    return new, (Act.CLEANUP, *acts)


def _on_created(rec: Replica, ev: Created, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.CREATING:
        return rec, ()
    if rec.stop_requested:
        return _removed(rec, cleanup=True)
    return replace(rec, phase=Phase.STARTING, reason="Starting"), (Act.START,)


def _on_create_failed(rec: Replica, ev: CreateFailed, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.CREATING:
        return rec, ()
    return _start_failed(rec, now, ev.message)


def _on_start_failed(rec: Replica, ev: StartFailed, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.STARTING:
        return rec, ()
    return _start_failed(rec, now, ev.message)


def _on_started(rec: Replica, ev: Started, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.STARTING:
        return rec, ()
    running = replace(
        rec, phase=Phase.RUNNING, started_at=now, reason="Started", message="", exit_code=None
    )
    if rec.stop_requested:
        return _stopping(running, now, reason=rec.reason or "Removed")
    return running, (Act.START_PROBES, Act.REPORT)


def _stopping(rec: Replica, now: float, *, reason: str) -> tuple[Replica, Actions]:
    new = replace(
        rec,
        phase=Phase.STOPPING,
        ready=False,
        reason=reason,
        deadline=now + rec.grace_seconds,
        kill_sent=False,
    )
    return new, (Act.STOP_PROBES, Act.SIGNAL_TERM, Act.REPORT)


def _on_exited(rec: Replica, ev: Exited, now: float) -> tuple[Replica, Actions]:
    if rec.phase not in LIVE:
        return rec, ()
    rec = replace(rec, exit_code=ev.code, ready=False)
    if rec.stop_requested:
        new, acts = _removed(rec, cleanup=True)
        return new, (Act.STOP_PROBES, *acts)
    if should_restart(rec.policy, ev.code):
        reason = rec.reason if rec.phase is Phase.STOPPING else "CrashLoopBackOff"
        new, acts = _backoff(rec, now, reason=reason, message=f"exited with code {ev.code}")
        new = replace(new, restarts=rec.restarts + 1)
        return new, (Act.STOP_PROBES, Act.CLEANUP, *acts)
    phase = Phase.EXITED if ev.code == 0 else Phase.FAILED
    reason = (
        "Completed" if ev.code == 0 else (rec.reason if rec.phase is Phase.STOPPING else "Error")
    )
    new = replace(
        rec, phase=phase, deadline=None, reason=reason, message=f"exited with code {ev.code}"
    )
    return new, (Act.STOP_PROBES, Act.CLEANUP, Act.REPORT)


def _on_readiness(rec: Replica, ev: Readiness, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.RUNNING or rec.ready == ev.ready:
        return rec, ()
    return replace(rec, ready=ev.ready), (Act.REPORT,)


def _on_liveness_failed(rec: Replica, ev: LivenessFailed, now: float) -> tuple[Replica, Actions]:
    if rec.phase is not Phase.RUNNING:
        return rec, ()
    new, acts = _stopping(rec, now, reason="LivenessProbeFailed")
    return replace(new, message=ev.message), acts


def _on_stop(rec: Replica, ev: StopRequested, now: float) -> tuple[Replica, Actions]:
    if rec.stop_requested or rec.phase is Phase.REMOVED:
        return rec, ()
    rec = replace(rec, stop_requested=True, drain_seconds=ev.drain_seconds, reason=ev.reason)
    if rec.phase in (Phase.PENDING, Phase.BACKOFF, Phase.EXITED, Phase.FAILED):
        return _removed(rec, cleanup=rec.phase is not Phase.PENDING, reason=ev.reason)
    if rec.phase is Phase.RUNNING:
        if ev.drain_seconds > 0:
            new = replace(rec, phase=Phase.DRAINING, ready=False, deadline=now + ev.drain_seconds)
            return new, (Act.STOP_PROBES, Act.REPORT)
        return _stopping(rec, now, reason=ev.reason)
    # Pulling / Creating / Starting: finish the step in flight, then stop.
    # Draining / Stopping of a liveness restart: now it stops for good.
    return rec, ()


def _on_tick(rec: Replica, ev: Tick, now: float) -> tuple[Replica, Actions]:
    if rec.deadline is None or now < rec.deadline:
        return rec, ()
    if rec.phase is Phase.BACKOFF:
        if rec.pulled:
            return replace(rec, phase=Phase.CREATING, deadline=None), (Act.REPORT, Act.CREATE)
        return replace(rec, phase=Phase.PULLING, deadline=None), (Act.REPORT, Act.PULL)
    if rec.phase is Phase.DRAINING:
        return _stopping(rec, now, reason=rec.reason)
    if rec.phase is Phase.STOPPING and not rec.kill_sent:
        new = replace(rec, kill_sent=True, deadline=now + rec.timing.kill_timeout)
        return new, (Act.SIGNAL_KILL,)
    if rec.phase is Phase.STOPPING:
        # The runtime never reported the exit: treat it as killed.
        new, acts = _on_exited(rec, Exited(137), now)
        return replace(new, message="no exit seen after SIGKILL"), acts
    return replace(rec, deadline=None), ()


_HANDLERS: dict[type, Callable[[Replica, Any, float], tuple[Replica, Actions]]] = {
    Assigned: _on_assigned,
    Adopted: _on_adopted,
    Pulled: _on_pulled,
    PullFailed: _on_pull_failed,
    Created: _on_created,
    CreateFailed: _on_create_failed,
    Started: _on_started,
    StartFailed: _on_start_failed,
    Exited: _on_exited,
    Readiness: _on_readiness,
    LivenessFailed: _on_liveness_failed,
    StopRequested: _on_stop,
    Tick: _on_tick,
}
