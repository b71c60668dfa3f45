"""Invalid manifests are rejected with located errors, and etcd is left unchanged."""

from __future__ import annotations

import grpc
import pytest
from ctlharness import Api, Fleet, deployment, wait_for

from controller.store import Store
from gantry.client import ControllerError
from gantry.v1 import cluster_pb2


async def _revision(etcd: str) -> int:
    store = Store([etcd])
    try:
        return await store.revision()
    finally:
        await store.close()


async def test_invalid_manifests_are_rejected_and_nothing_is_written(
    controllers, etcd: str
) -> None:
    c1 = controllers("c1")
    async with Fleet() as fleet:
        api = Api(fleet.client([c1.address]))
        await wait_for(
            lambda: api.call("List", cluster_pb2.ListRequest()), deadline=20, what="leader"
        )
        before = await _revision(etcd)

        bad = deployment("bad", 2)
        bad.spec.replicas = -1
        bad.spec.template.image = ""
        good = deployment("good", 1)
        with pytest.raises(ControllerError) as err:
            await api.apply(good, bad)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        message = str(err.value)
        assert "document 2" in message and "deployment bad" in message
        assert "spec.replicas" in message and "spec.template.image" in message
        assert "\n" not in message, "one line"

        nameless = deployment("", 1)
        with pytest.raises(ControllerError) as err:
            await api.apply(nameless)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "metadata.name" in str(err.value)

        with pytest.raises(ControllerError) as err:
            await api.scale("good", -3)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT

        with pytest.raises(ControllerError) as err:
            await api.scale("missing", 3)
        assert err.value.code == grpc.StatusCode.NOT_FOUND

        assert await _revision(etcd) == before, "etcd is unchanged"
