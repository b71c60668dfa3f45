"""The rollout engine: drives canaries and keeps every step in etcd.

It plugs into the control loop as its `RolloutHook`: before each plan of a
deployment it re-reads the rollout record, asks the pure state machine
(`controller.rollout.next_rollout_action`) for one decision, and writes the
new state in a fenced transaction that compares the record's mod_revision.
A restarted (or newly elected) controller therefore resumes where the last
one stopped. Canary analysis reads the proxies' cumulative `/admin/stats`
(their addresses come from their Discovery subscriptions) and diffs the
snapshot taken when the analysis window opened.

Decisions stay pure: `stats_from_admin`, `canary_to_start` and the state
machine take plain data. This module only reads, fetches and writes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import aiohttp

from controller import keys
from controller.errors import Conflict, Invalid, NotFound, Temporary
from controller.events import WARNING, Events, iso
from controller.model import DeploymentState, ReplicaState, Track, template_hash
from controller.rollout import (
    Action,
    CanaryMetrics,
    RolloutError,
    RolloutPhase,
    RolloutState,
    TrafficStats,
    abort,
    canary_metrics_from_stats,
    next_rollout_action,
    promote,
    rollout_from_record,
    rollout_to_record,
    start_canary,
)
from controller.store import Item, Json, ModIs, Put, Store

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0  # how often an active rollout is looked at again


# ------------------------------------------------------------ pure helpers


def stats_from_admin(doc: Mapping[str, Any], deployment: str) -> dict[str, TrafficStats]:
    """One proxy's /admin/stats document -> cumulative stats per track."""
    bounds = [float(b) / 1000.0 for b in doc.get("buckets_ms") or ()] + [float("inf")]
    out: dict[str, TrafficStats] = {}
    for track, s in ((doc.get("deployments") or {}).get(deployment) or {}).items():
        counts = [float(c) for c in s.get("latency_ms_buckets") or ()]
        out[track] = TrafficStats(
            requests=float(s.get("requests", 0)),
            errors=float(s.get("errors_5xx", 0)),
            buckets=tuple(zip(bounds, counts, strict=False)),
        )
    return out


def sum_stats(parts: Iterable[TrafficStats]) -> TrafficStats:
    """Several proxies' stats of one track, added up bucket by bucket."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for p in parts:
        requests += p.requests
        errors += p.errors
        for bound, count in p.buckets:
            buckets[bound] = buckets.get(bound, 0.0) + count
    return TrafficStats(requests, errors, tuple(sorted(buckets.items())))


def canary_to_start(
    dep: DeploymentState, replicas: Iterable[ReplicaState], stored: RolloutState | None
) -> int | None:
    """The stable revision to canary against, when an applied template change
    on a Canary-strategy deployment should start a canary; else None."""
    if dep.strategy_type != "Canary":
        return None
    if stored is not None and (stored.active or stored.canary_revision == dep.revision):
        return None
    running = Counter(r.revision for r in replicas if r.track == Track.STABLE and not r.gone)
    if not running or dep.revision in running:
        return None
    return running.most_common(1)[0][0]


def next_revision(revisions: Iterable[int], current: int) -> int:
    return max([current, *revisions]) + 1


# ------------------------------------------------------------ the engine


class RolloutEngine:
    """The control loop's RolloutHook, and the rollout calls of the Cluster API."""

    def __init__(
        self,
        store: Store,
        *,
        events: Events,
        admin_urls: Callable[[], Mapping[str, str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.events = events
        self.admin_urls = admin_urls
        self.clock = clock
        self.requeue: Callable[[str, float], None] = lambda name, delay: None
        self._baselines: dict[tuple[str, float], dict[str, TrafficStats]] = {}
        self._since_start: dict[str, dict[str, TrafficStats]] = {}  # stats when a canary began
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the hook -----------------------------------------------------------

    async def before_plan(
        self,
        name: str,
        dep: DeploymentState,
        replicas: list[ReplicaState],
        stored: RolloutState | None,
        *,
        now: float,
    ) -> RolloutState | None:
        item = await self.store.get(keys.rollout(name))
        state = rollout_from_record(item.value) if item else None
        stable_rev = canary_to_start(dep, replicas, state)
        if stable_rev is not None:
            new = start_canary(
                dep, canary_template=dep.template, canary_revision=dep.revision, now=now
            )
            new = replace(
                new,
                stable_revision=stable_rev,
                message=f"canary of revision {dep.revision} started",
            )
            await self._write(name, item, new)
            self._since_start[name] = await self._stats(name)
            await self.events.record("deployment", name, "CanaryStarted", new.message)
            return new
        if state is None or not state.active:
            return state
        metrics = (
            await self._window_metrics(name, state)
            if state.phase is RolloutPhase.ANALYZING
            else None
        )
        decision = next_rollout_action(state, dep, replicas, metrics, now)
        new = decision.state
        if decision.action is Action.START_ANALYSIS:
            self._baselines[(name, new.step_started_at)] = await self._stats(name)
        if decision.action is Action.PROMOTE:
            await self._adopt(name, new)
        elif decision.action is Action.ABORT:
            await self._revert(name, new)
        if new != state:
            await self._write(name, item, new)
        if decision.changed:
            kind = WARNING if decision.action is Action.ABORT else "Normal"
            await self.events.record(
                "deployment", name, f"Rollout{decision.action}", decision.reason, type_=kind
            )
            log.info("rollout of %s: %s (%s)", name, decision.action, decision.reason)
        if new.active:
            self.requeue(name, TICK_SECONDS)
        return new

    async def _write(self, name: str, item: Item | None, state: RolloutState) -> None:
        key = keys.rollout(name)
        try:
            await self.store.txn(
                [ModIs(key, item.mod_revision if item else 0)], [Put(key, rollout_to_record(state))]
            )
        except Conflict:
            raise Temporary(f"rollout of {name} changed meanwhile: retrying") from None

    async def _set_template(
        self, name: str, template: Mapping[str, Any], revision: int, cause: str
    ) -> None:
        """Make `template` the deployment's own (its stable set's) at `revision`."""

        def change(rec: Json | None) -> Json | None:
            if rec is None:
                return None
            status = dict(rec.get("status") or {})
            status.update(revision=revision, templateHash=template_hash(template))
            spec = {**(rec.get("spec") or {}), "template": dict(template)}
            return {**rec, "spec": spec, "status": status}

        await self.store.update(keys.deployment(name), change)
        await self.events.record(
            "deployment", name, "TemplateChanged", f"{cause}: revision {revision}"
        )

    async def _adopt(self, name: str, state: RolloutState) -> None:
        """Promotion: the canary's template becomes the stable one."""
        await self._set_template(name, state.canary_template, state.canary_revision, "promoted")

    async def _revert(self, name: str, state: RolloutState) -> None:
        """Abort of an applied change: the stable template comes back."""
        item = await self.store.get(keys.revision(name, state.stable_revision))
        dep = await self.store.get(keys.deployment(name))
        if item is None or dep is None:
            return
        current = int((dep.value.get("status") or {}).get("revision", 0))
        if current == state.canary_revision:
            await self._set_template(
                name, item.value.get("template") or {}, state.stable_revision, "rolled back"
            )

    # -- metrics --------------------------------------------------------------

    async def _stats(self, name: str) -> dict[str, TrafficStats]:
        """Cumulative stats per track, summed over every proxy that answers."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        per_track: dict[str, list[TrafficStats]] = {}
        for url in sorted(set(self.admin_urls().values())):
            try:
                async with self._session.get(url.rstrip("/") + "/admin/stats") as resp:
                    doc = await resp.json()
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                log.warning("canary analysis: proxy %s unreachable: %s", url, exc)
                continue
            for track, stats in stats_from_admin(doc, name).items():
                per_track.setdefault(track, []).append(stats)
        return {track: sum_stats(parts) for track, parts in per_track.items()}

    async def _window_metrics(self, name: str, state: RolloutState) -> CanaryMetrics | None:
        key = (name, state.step_started_at)
        now_stats = await self._stats(name)
        base = self._baselines.get(key)
        if base is None:  # a new leader resumes: measure from now on
            self._baselines[key] = now_stats
            return None
        for old in [k for k in self._baselines if k[0] == name and k != key]:
            del self._baselines[old]
        empty = TrafficStats()
        return CanaryMetrics(
            stable=canary_metrics_from_stats(base.get("stable"), now_stats.get("stable", empty)),
            canary=canary_metrics_from_stats(base.get("canary"), now_stats.get("canary", empty)),
            window_start=state.step_started_at,
        )

    async def live_metrics(self, name: str) -> CanaryMetrics:
        """Both tracks' traffic since the canary began (as far as this leader saw)."""
        now_stats = await self._stats(name)
        base = self._since_start.get(name, {})
        empty = TrafficStats()
        return CanaryMetrics(
            stable=canary_metrics_from_stats(base.get("stable"), now_stats.get("stable", empty)),
            canary=canary_metrics_from_stats(base.get("canary"), now_stats.get("canary", empty)),
        )

    # -- the Cluster API's rollout calls --------------------------------------

    async def _current(self, name: str) -> tuple[Item, Item | None, RolloutState | None]:
        dep = await self.store.get(keys.deployment(name))
        if dep is None:
            raise NotFound(f"deployment {name!r} not found")
        item = await self.store.get(keys.rollout(name))
        return dep, item, rollout_from_record(item.value) if item else None

    async def start(self, name: str, *, image: str, weight: int, replicas: int) -> RolloutState:
        if not image:
            raise Invalid("image: required")
        if not 0 <= weight <= 100:
            raise Invalid(f"weight: expected 0..100, got {weight}")
        dep_item, item, state = await self._current(name)
        if state is not None and state.active:
            raise Invalid(f"deployment {name} already has a rollout in phase {state.phase}")
        from controller.loop import deployment_state

        dep = deployment_state(dep_item.value)
        revs, _ = await self.store.list(keys.revisions(name))
        rev = next_revision((int(i.value.get("revision", 0)) for i in revs), dep.revision)
        template = {**dep.template, "image": image}
        now = self.clock()
        new = start_canary(dep, canary_template=template, canary_revision=rev, now=now,
                           replicas=replicas or None, weight=weight or None)  # fmt: skip
        record = {
            "revision": rev,
            "template": template,
            "createdAt": iso(now),
            "cause": f"canary of {image}",
        }
        key = keys.rollout(name)
        try:
            await self.store.txn(
                [
                    ModIs(key, item.mod_revision if item else 0),
                    ModIs(dep_item.key, dep_item.mod_revision),
                ],
                [Put(keys.revision(name, rev), record), Put(key, rollout_to_record(new))],
            )
        except Conflict:
            raise Conflict(f"deployment {name} changed meanwhile: try again") from None
        self._since_start[name] = await self._stats(name)
        await self.events.record(
            "deployment", name, "CanaryStarted", f"canary of {image} (revision {rev})"
        )
        self.requeue(name, 0.0)
        return new

    async def _manual(
        self, name: str, fn: Callable[[RolloutState, float], RolloutState], verb: str
    ) -> RolloutState:
        _, item, state = await self._current(name)
        if state is None or item is None:
            raise Invalid(f"deployment {name} has no rollout to {verb}")
        try:
            new = fn(state, self.clock())
        except RolloutError as exc:
            raise Invalid(str(exc)) from None
        if new.phase is RolloutPhase.PROMOTING:
            await self._adopt(name, new)
        elif new.phase is RolloutPhase.ABORTING:
            await self._revert(name, new)
        await self._write(name, item, new)
        await self.events.record("deployment", name, f"Rollout{verb.capitalize()}d", new.message)
        self.requeue(name, 0.0)
        return new

    async def promote(self, name: str) -> RolloutState:
        return await self._manual(name, lambda s, now: promote(s, now, full=True), "promote")

    async def abort(self, name: str) -> RolloutState:
        return await self._manual(name, lambda s, now: abort(s, now), "abort")

    async def history(self, name: str) -> list[Json]:
        revs, _ = await self.store.list(keys.revisions(name))
        return sorted((i.value for i in revs), key=lambda r: int(r.get("revision", 0)))

    async def undo(self, name: str, to_revision: int) -> None:
        dep_item, _, state = await self._current(name)
        if state is not None and state.active:
            raise Invalid(f"deployment {name} has a rollout in phase {state.phase}: abort it first")
        current = int((dep_item.value.get("status") or {}).get("revision", 1))
        history = [r for r in await self.history(name) if int(r.get("revision", 0)) != current]
        if to_revision:
            history = [r for r in history if int(r.get("revision", 0)) == to_revision]
        if not history:
            raise NotFound(
                f"deployment {name}: no revision {to_revision or 'before ' + str(current)} to go back to"
            )
        target = history[-1]
        await self._set_template(
            name, target.get("template") or {}, int(target["revision"]), "rolled back by hand"
        )
