"""The Cluster service's rollout calls: status, history, undo, canary, promote, abort.

Owns `RolloutCalls`, a mixin of `controller.api.ClusterService`: each call
checks leadership, hands the work to the rollout engine
(`controller.rollouts.RolloutEngine`) and answers with the rollout's status
read from etcd (the deployment, its replicas, the rollout record and the
proxies' live metrics). It must not decide anything about a rollout itself:
the pure state machine in `controller.rollout` does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from controller import keys
from controller.api_records import deployment_proto
from controller.errors import NotFound, Unimplemented, unary
from controller.loop import deployment_state, replica_state, rollout_state
from controller.rollout import rolling_update_status
from controller.rollouts import RolloutEngine
from gantry.v1 import cluster_pb2, types_pb2

if TYPE_CHECKING:
    from controller.store import Mirror, Store


class RolloutCalls:
    """The rollout RPCs of the Cluster service."""

    if TYPE_CHECKING:  # provided by ClusterService
        rollouts: RolloutEngine | None
        store: Store
        mirror: Mirror

        def _guard(self) -> None: ...

    def _engine(self) -> RolloutEngine:
        self._guard()
        if self.rollouts is None:
            raise Unimplemented("rollouts are not served by this controller")
        return self.rollouts

    async def _rollout_status(self, name: str) -> cluster_pb2.RolloutStatusResponse:
        dep_item, ro_item = await self.store.read(keys.deployment(name), keys.rollout(name))
        if not dep_item:
            raise NotFound(f"deployment {name!r} not found")
        dep = dep_item[0].value
        reps, _ = await self.store.list(keys.replicas(name))
        out = cluster_pb2.RolloutStatusResponse(
            deployment=deployment_proto(dep, [r.value for r in reps])
        )
        record = ro_item[0].value if ro_item else None
        if record is None or not rollout_state(record) or not rollout_state(record).active:  # type: ignore[union-attr]
            status = rolling_update_status(
                deployment_state(dep),
                [replica_state(r.value) for r in reps],
                started_at=time.time(),
                now=time.time(),
            )
            out.rollout.CopyFrom(
                types_pb2.Rollout(
                    deployment=name,
                    type="RollingUpdate",
                    phase="Succeeded" if status.complete else "Progressing",
                    stable_revision=int((dep.get("status") or {}).get("revision", 1)),
                    message=status.message,
                )
            )
            if record is not None:
                out.rollout.message = f"{status.message}; last canary: {record.get('phase')} {record.get('message', '')}".strip()
            return out
        json_format.ParseDict(record, out.rollout, ignore_unknown_fields=True)
        if self.rollouts is not None:
            live = await self.rollouts.live_metrics(name)
            for field, m in (("stable_metrics", live.stable), ("canary_metrics", live.canary)):
                getattr(out.rollout, field).CopyFrom(
                    types_pb2.VersionMetrics(
                        requests=m.requests, error_rate=m.error_rate, p99_ms=m.p99_ms
                    )
                )
        return out

    @unary
    async def RolloutStatus(self, request: cluster_pb2.RolloutRequest, context: Any) -> Any:
        self._engine()
        return await self._rollout_status(request.name)

    @unary
    async def RolloutHistory(self, request: cluster_pb2.RolloutRequest, context: Any) -> Any:
        engine = self._engine()
        self._deployment_exists(request.name)
        out = cluster_pb2.RolloutHistoryResponse()
        for rec in await engine.history(request.name):
            out.revisions.append(
                json_format.ParseDict(rec, types_pb2.RevisionRecord(), ignore_unknown_fields=True)
            )
        return out

    @unary
    async def RolloutUndo(self, request: cluster_pb2.RolloutUndoRequest, context: Any) -> Any:
        await self._engine().undo(request.name, int(request.to_revision))
        return await self._rollout_status(request.name)

    @unary
    async def StartCanary(self, request: cluster_pb2.StartCanaryRequest, context: Any) -> Any:
        await self._engine().start(
            request.name, image=request.image, weight=request.weight, replicas=request.replicas
        )
        return await self._rollout_status(request.name)

    @unary
    async def Promote(self, request: cluster_pb2.RolloutRequest, context: Any) -> Any:
        await self._engine().promote(request.name)
        return await self._rollout_status(request.name)

    @unary
    async def Abort(self, request: cluster_pb2.RolloutRequest, context: Any) -> Any:
        await self._engine().abort(request.name)
        return await self._rollout_status(request.name)

    def _deployment_exists(self, name: str) -> None:
        if keys.deployment(name) not in self.mirror["deployments"]:
            raise NotFound(f"deployment {name!r} not found")
