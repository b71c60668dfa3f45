"""Probe definitions from the template and the threshold counting (pure)."""

from __future__ import annotations

import pytest

from agent import probes
from agent.probes import ProbeKind, ProbeSpec, ProbeState
from gantry.v1 import types_pb2

PORTS = [types_pb2.ContainerPort(name="http", container_port=8080)]


def test_http_probe_with_named_port_and_defaults() -> None:
    p = types_pb2.Probe(http_get=types_pb2.HTTPGetAction(path="/healthz", port="http"))
    spec = probes.spec_from_proto(p, PORTS, where="readinessProbe")
    assert spec == ProbeSpec(ProbeKind.HTTP, port=8080, path="/healthz")
    assert (spec.period, spec.timeout, spec.failure_threshold, spec.success_threshold) == (
        10,
        1,
        3,
        1,
    )


def test_tcp_probe_with_number_and_timings() -> None:
    p = types_pb2.Probe(
        tcp_socket=types_pb2.TCPSocketAction(port="9000"),
        initial_delay_seconds=2,
        period_seconds=3,
        timeout_seconds=4,
        failure_threshold=5,
        success_threshold=6,
    )
    spec = probes.spec_from_proto(p, PORTS, where="livenessProbe")
    assert spec == ProbeSpec(
        ProbeKind.TCP,
        port=9000,
        initial_delay=2,
        period=3,
        timeout=4,
        failure_threshold=5,
        success_threshold=6,
    )


def test_exec_probe() -> None:
    p = types_pb2.Probe(exec=types_pb2.ExecAction(command=["cat", "/tmp/ok"]))
    spec = probes.spec_from_proto(p, PORTS, where="livenessProbe")
    assert spec is not None and spec.kind is ProbeKind.EXEC and spec.command == ("cat", "/tmp/ok")


def test_no_probe_is_none() -> None:
    assert probes.spec_from_proto(types_pb2.Probe(), PORTS, where="x") is None


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (
            types_pb2.Probe(http_get=types_pb2.HTTPGetAction(port="nope")),
            "readinessProbe.httpGet.port: 'nope'",
        ),
        (
            types_pb2.Probe(tcp_socket=types_pb2.TCPSocketAction(port="70000")),
            "readinessProbe.tcpSocket.port",
        ),
        (
            types_pb2.Probe(http_get=types_pb2.HTTPGetAction(port="80", path="x")),
            "readinessProbe.httpGet.path",
        ),
        (types_pb2.Probe(exec=types_pb2.ExecAction()), "readinessProbe.exec.command"),
    ],
)
def test_bad_probe_names_the_field(probe: types_pb2.Probe, message: str) -> None:
    with pytest.raises(probes.ProbeError, match=message.replace(".", r"\.")):
        probes.spec_from_proto(probe, PORTS, where="readinessProbe")


def feed(state: ProbeState, spec: ProbeSpec, results: str) -> list[bool]:
    """Feed 'ssf...' results; return the verdict after each."""
    verdicts = []
    for ch in results:
        state, _ = probes.observe(state, ch == "s", spec)
        verdicts.append(state.ok)
    return verdicts


def test_readiness_needs_success_threshold_and_failure_threshold() -> None:
    spec = ProbeSpec(ProbeKind.TCP, port=1, success_threshold=2, failure_threshold=3)
    got = feed(ProbeState(ok=False), spec, "sfsssffsfff")
    assert got == [False, False, False, True, True, True, True, True, True, True, False]


def test_liveness_fails_after_consecutive_failures_only() -> None:
    spec = ProbeSpec(ProbeKind.TCP, port=1, failure_threshold=2)
    assert feed(ProbeState(ok=True), spec, "fsfsff") == [True, True, True, True, True, False]


def test_observe_reports_flips_only() -> None:
    spec = ProbeSpec(ProbeKind.TCP, port=1, failure_threshold=1)
    s, flipped = probes.observe(ProbeState(ok=False), True, spec)
    assert s.ok and flipped
    s, flipped = probes.observe(s, True, spec)
    assert not flipped
    s, flipped = probes.observe(s, False, spec)
    assert not s.ok and flipped
