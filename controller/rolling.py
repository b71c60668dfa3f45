"""Rolling-update arithmetic, pure: surge and unavailability, progress, history.

Owns the Kubernetes-style maxSurge / maxUnavailable resolution
(`resolve_surge_unavailable`, `StrategyError`), how far a rolling update has
come (`rolling_update_status`, `RollingStatus`: updated, ready, available
after minReadySeconds, the progress deadline), and which old revisions fall
beyond the history limit (`revisions_to_prune`).

It performs no I/O and reads no clock: `now` is passed in. It does not
choose replicas to stop or place; `controller.reconcile` does, using these
numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.model import DeploymentState, ReplicaState, Track


class StrategyError(ValueError):
    """A maxSurge / maxUnavailable value that is neither an int nor "N%"."""


def _scaled(value: str | int, total: int, *, round_up: bool) -> int:
    if isinstance(value, bool):
        raise StrategyError(f"expected an integer or a percentage, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise StrategyError(f"must not be negative, got {value}")
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            pct = int(text[:-1])
        except ValueError:
            raise StrategyError(f"expected a percentage like '25%', got {value!r}") from None
        if pct < 0:
            raise StrategyError(f"must not be negative, got {value!r}")
        exact = pct * total
        return -(-exact // 100) if round_up else exact // 100
    try:
        n = int(text)
    except ValueError:
        raise StrategyError(f"expected an integer or a percentage, got {value!r}") from None
    if n < 0:
        raise StrategyError(f"must not be negative, got {value!r}")
    return n


def resolve_surge_unavailable(
    max_surge: str | int, max_unavailable: str | int, replicas: int
) -> tuple[int, int]:
    """(surge, unavailable) for `replicas`: surge rounds up, unavailable down.

    As Kubernetes' ResolveFenceposts: if both come out 0, unavailable is 1 so
    the rollout can make progress.
    """
    surge = _scaled(max_surge, replicas, round_up=True)
    unavailable = _scaled(max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas) if replicas else unavailable


@dataclass(frozen=True, slots=True)
class RollingStatus:
    complete: bool
    updated: int
    ready: int
    available: int
    deadline_exceeded: bool
    message: str


def rolling_update_status(
    deployment: DeploymentState,
    replicas: Sequence[ReplicaState],
    *,
    started_at: float,
    now: float,
) -> RollingStatus:
    """How far a rolling update to `deployment.revision` has come."""
    stable = [r for r in replicas if r.track == Track.STABLE and not r.gone]
    updated = [r for r in stable if r.revision == deployment.revision]
    min_ready = deployment.rolling.min_ready_seconds
    avail = [
        r
        for r in updated
        if r.ready and r.ready_since is not None and now - r.ready_since >= min_ready
    ]
    ready = sum(1 for r in updated if r.ready)
    old = len(stable) - len(updated)
    complete = len(avail) >= deployment.replicas and old == 0
    exceeded = not complete and now - started_at > deployment.rolling.progress_deadline_seconds
    if complete:
        msg = f"revision {deployment.revision} rolled out: {len(avail)} available"
    else:
        msg = (
            f"{len(updated)}/{deployment.replicas} updated, {len(avail)} available, "
            f"{old} old replicas left"
        )
        if exceeded:
            msg = f"progress deadline exceeded: {msg}"
    return RollingStatus(complete, len(updated), ready, len(avail), exceeded, msg)


def revisions_to_prune(revisions: Sequence[int], *, current: int, limit: int) -> list[int]:
    """Old revisions beyond the history limit, oldest first (never `current`)."""
    old = sorted(r for r in set(revisions) if r != current)
    return old[: max(0, len(old) - limit)]
