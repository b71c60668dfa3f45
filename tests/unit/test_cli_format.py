"""The CLI's pure pieces: tables, rows, the manifest `gantry run` stands for."""

from __future__ import annotations

import argparse

import pytest

from gantry.cli import deploy
from gantry.cli.errors import CLIError
from gantry.v1 import types_pb2


def test_table_aligns_columns() -> None:
    text = deploy.table(["NAME", "READY"], [["web", "3/3"], ["api-long", "0/1"]])
    assert text.splitlines() == ["NAME       READY", "web        3/3", "api-long   0/1"]


def test_replica_row_wide_shows_ports_and_reason() -> None:
    r = types_pb2.Replica(name="web-abcde", deployment="web", node="node-1", phase="Running", ready=True,
                          revision=2, epoch=7, ip="10.1.0.5", reason="",
                          ports=[types_pb2.PortBinding(container_port=8080, host_port=31000, host_ip="127.0.0.1")])  # fmt: skip
    row = deploy.replica_row(r, wide=True)
    assert row[:5] == ["web-abcde", "web", "node-1", "Running", "yes"]
    assert "127.0.0.1:31000->8080" in row


def test_render_json_round_trips_names() -> None:
    d = types_pb2.Deployment(metadata=types_pb2.ObjectMeta(name="web"))
    assert '"name": "web"' in deploy.render("deployments", [d], "json")


def test_run_manifest_builds_a_deployment() -> None:
    args = argparse.Namespace(
        name="web", image="hello:v1", env=["A=1", "B=x=y"], port=8080, replicas=3, command=[]
    )
    doc = deploy.run_manifest(args)
    assert doc["spec"]["replicas"] == 3
    assert doc["spec"]["template"]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "x=y"},
    ]
    assert doc["spec"]["template"]["ports"] == [{"name": "http", "containerPort": 8080}]


def test_run_manifest_rejects_env_without_equals() -> None:
    args = argparse.Namespace(
        name="web", image="i", env=["NOPE"], port=None, replicas=1, command=[]
    )
    with pytest.raises(CLIError, match="expected KEY=VALUE"):
        deploy.run_manifest(args)


def test_describe_shows_why_a_replica_is_not_ready() -> None:
    from gantry.v1 import cluster_pb2

    resp = cluster_pb2.DescribeResponse(
        deployment=types_pb2.Deployment(metadata=types_pb2.ObjectMeta(name="ghost")),
        replicas=[types_pb2.Replica(name="ghost-abcde", deployment="ghost", phase="Starting",
                                    reason="ImagePullBackOff", message="reg/nosuch:v9: not found")],
    )  # fmt: skip
    text = deploy.describe_text(resp, "deployment")
    assert "ghost-abcde: ImagePullBackOff: reg/nosuch:v9: not found" in text
