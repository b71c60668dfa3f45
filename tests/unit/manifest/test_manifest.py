"""Manifests: parsing, defaults, canonical protobuf form, located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from gantry.manifest import (
    ManifestError,
    canonical_deployment,
    load_manifests,
    parse_duration,
    validate_deployment_dict,
)
from gantry.v1 import types_pb2

ROOT = Path(__file__).resolve().parents[3]

MINIMAL = """\
apiVersion: gantry/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    image: hello:v1
"""


def errors_of(text: str, filename: str = "web.yaml") -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifests(textwrap.dedent(text), filename)
    return info.value.errors


def one(text: str) -> dict[str, Any]:
    (doc,) = load_manifests(textwrap.dedent(text), "web.yaml")
    return doc


def test_minimal_manifest_gets_defaults() -> None:
    doc = one(MINIMAL)
    spec = doc["spec"]
    assert spec["replicas"] == 1
    assert spec["revisionHistoryLimit"] == 10
    assert spec["template"]["restartPolicy"] == "Always"
    assert spec["template"]["terminationGracePeriodSeconds"] == 30
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "minReadySeconds": 0,
        "progressDeadlineSeconds": 600,
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }


def test_canonical_form_is_the_protobuf_json_mapping() -> None:
    docs = load_manifests((ROOT / "deploy/examples/shop.yaml").read_text(), "shop.yaml")
    assert [d["metadata"]["name"] for d in docs] == ["web", "api"]
    for d in docs:
        msg = json_format.ParseDict(d, types_pb2.Deployment())
        back = json_format.MessageToDict(msg)
        assert back["metadata"]["name"] == d["metadata"]["name"]
        assert back["spec"]["template"]["image"] == d["spec"]["template"]["image"]
    msg = json_format.ParseDict(docs[0], types_pb2.Deployment())
    assert msg.spec.template.ports[0].container_port == 8080
    assert msg.spec.template.readiness_probe.http_get.port == "http"
    assert msg.spec.strategy.canary.steps[0].set_weight == 20
    assert msg.spec.strategy.canary.steps[1].analysis.max_p99_ms == 500


def test_full_template_round_trips() -> None:
    doc = one(
        """\
        apiVersion: gantry/v1
        kind: Deployment
        metadata: {name: api, labels: {app: shop}}
        spec:
          replicas: 4
          nodeSelector: {disk: ssd}
          template:
            image: reg:5000/api:v2
            command: [/bin/api]
            args: [--port, 8080]
            env: [{name: MODE, value: prod}, {name: N, value: 3}]
            workingDir: /srv
            ports: [{name: http, containerPort: 8080}, {containerPort: 9090, protocol: UDP}]
            resources:
              requests: {cpu: 250m, memory: 64Mi}
              limits: {cpu: 1, memory: 1Gi}
            livenessProbe:
              exec: {command: [cat, /tmp/ok]}
            readinessProbe:
              tcpSocket: {port: 8080}
              periodSeconds: 2
            restartPolicy: OnFailure
            terminationGracePeriodSeconds: 5
            labels: {version: v2}
          strategy:
            type: RollingUpdate
            rollingUpdate: {maxSurge: 2, maxUnavailable: 0}
            minReadySeconds: 3
          route: {host: api.local, pathPrefix: /api, port: http}
          revisionHistoryLimit: 3
        """
    )
    t = doc["spec"]["template"]
    assert t["args"] == ["--port", "8080"]
    assert t["env"][1] == {"name": "N", "value": "3"}
    assert t["ports"][1] == {"containerPort": 9090, "protocol": "UDP"}
    assert t["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert t["readinessProbe"]["tcpSocket"] == {"port": "8080"}
    assert t["readinessProbe"]["failureThreshold"] == 3
    assert t["livenessProbe"]["periodSeconds"] == 10
    assert doc["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "2", "maxUnavailable": "0"}
    msg = json_format.ParseDict(doc, types_pb2.Deployment())
    assert msg.spec.replicas == 4 and msg.spec.node_selector["disk"] == "ssd"
    assert msg.spec.route.port == "http"


def test_env_as_a_mapping_like_compose() -> None:
    doc = one(MINIMAL + "    env: {A: x, B: 2}\n")
    assert doc["spec"]["template"]["env"] == [
        {"name": "A", "value": "x"},
        {"name": "B", "value": "2"},
    ]


def test_canary_steps_and_durations() -> None:
    doc = one(
        MINIMAL
        + """\
  strategy:
    type: Canary
    canary:
      replicas: 2
      steps:
        - setWeight: 10
        - pause: {duration: 30s}
        - pause: {}
        - pause: {duration: 1m30s}
        - analysis: {maxErrorRate: 0.01, windowSeconds: 20}
        - analysis: {maxErrorRateIncrease: 0, maxP99Ratio: 1.5}
"""
    )
    steps = doc["spec"]["strategy"]["canary"]["steps"]
    assert steps[0] == {"setWeight": 10}
    assert steps[1] == {"pause": {"durationSeconds": 30}}
    assert steps[2] == {"pause": {"durationSeconds": 0}}
    assert steps[3] == {"pause": {"durationSeconds": 90}}
    assert steps[4]["analysis"] == {
        "maxErrorRate": 0.01,
        "maxP99Ms": 0.0,
        "windowSeconds": 20,
        "minRequests": 10,
    }
    msg = json_format.ParseDict(doc, types_pb2.Deployment())
    assert msg.spec.strategy.canary.steps[1].pause.duration_seconds == 30
    relative = msg.spec.strategy.canary.steps[5].analysis
    assert relative.HasField("max_error_rate_increase") and relative.max_error_rate_increase == 0
    assert relative.max_p99_ratio == 1.5
    assert not msg.spec.strategy.canary.steps[4].analysis.HasField("max_error_rate_increase")
    assert msg.spec.strategy.canary.steps[0].HasField("set_weight")
    assert not msg.spec.strategy.canary.steps[1].HasField("set_weight")


def test_type_canary_without_canary_block_gets_one() -> None:
    doc = one(MINIMAL + "  strategy: {type: Canary}\n")
    assert doc["spec"]["strategy"]["canary"] == {"replicas": 1, "steps": []}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), (45, 45), ("2m5s", 125)],
)
def test_parse_duration(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "5ms", "-3", -1, True, "1d"])
def test_parse_duration_rejects(text: object) -> None:
    assert parse_duration(text) is None


def test_several_documents_and_empty_ones() -> None:
    text = MINIMAL + "---\n" + MINIMAL.replace("name: web", "name: api") + "---\n"
    assert [d["metadata"]["name"] for d in load_manifests(text, "app.yaml")] == ["web", "api"]


# ---------------------------------------------------------------- errors


def test_issue_example_error_is_located() -> None:
    errs = errors_of(MINIMAL.replace("spec:\n", "spec:\n  replicas: three\n"))
    assert errs == ['web.yaml:6 spec.replicas: expected an integer >= 0, got "three"']


BAD_FILE = """\
apiVersion: gantry/v1
kind: Deployment
metadata:
  name: Web_1
spec:
  replicas: -2
  templat:
    image: x
  strategy:
    type: canary
---
apiVersion: gantry/v1
kind: Deploymnet
metadata: {name: api}
spec:
  template:
    image: x
    ports:
      - {containerPort: 80, name: http}
      - {containerPort: 80, name: http}
    readinessProbe: {httpGet: {port: htp}}
    resources:
      requests: {cpu: 2, memory: lots}
      limits: {cpu: 1}
    restartPolicy: always
  route: {port: 8080}
"""


def test_bad_file_reports_every_error_with_line_document_and_path() -> None:
    errs = errors_of(BAD_FILE, "bad.yaml")
    assert errs == [
        "bad.yaml:4 (document 1) metadata.name: expected a DNS label (lowercase letters, digits "
        "and '-', starting and ending with a letter or digit, at most 57 characters), got \"Web_1\"",
        "bad.yaml:5 (document 1) spec.template: required field is missing",
        "bad.yaml:6 (document 1) spec.replicas: expected an integer >= 0, got -2",
        'bad.yaml:7 (document 1) spec.templat: unknown field "templat" (did you mean "template"?)',
        "bad.yaml:10 (document 1) spec.strategy.type: expected one of RollingUpdate, Canary, "
        'got "canary" (did you mean "Canary"?)',
        'bad.yaml:13 (document 2) kind: expected one of Deployment, got "Deploymnet" '
        '(did you mean "Deployment"?)',
        'bad.yaml:20 (document 2) spec.template.ports[1].name: duplicate port name "http"',
        "bad.yaml:20 (document 2) spec.template.ports[1].containerPort: duplicate containerPort 80",
        'bad.yaml:21 (document 2) spec.template.readinessProbe.httpGet.port: no port named "htp" '
        'in spec.template.ports (did you mean "http"?)',
        "bad.yaml:23 (document 2) spec.template.resources.requests.memory: expected a memory "
        'quantity like "128Mi" or "1Gi", got "lots"',
        "bad.yaml:23 (document 2) spec.template.resources.requests.cpu: request 2 is more than the limit 1",
        "bad.yaml:25 (document 2) spec.template.restartPolicy: expected one of Always, OnFailure, "
        'Never, got "always" (did you mean "Always"?)',
        "bad.yaml:26 (document 2) spec.route: expected host and/or pathPrefix",
    ]


def test_unknown_field_snake_case_suggests_camel_case() -> None:
    errs = errors_of(MINIMAL + "    working_dir: /srv\n")
    assert errs == [
        'web.yaml:8 spec.template.working_dir: unknown field "working_dir" (did you mean "workingDir"?)'
    ]


def test_unknown_field_without_a_close_match_has_no_hint() -> None:
    errs = errors_of(MINIMAL + "    zzzz: 1\n")
    assert errs == ['web.yaml:8 spec.template.zzzz: unknown field "zzzz"']


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "    ports: [{containerPort: 70000}]\n",
            "spec.template.ports[0].containerPort: expected an integer in 1..65535, got 70000",
        ),
        (
            "    ports: [{name: http}]\n",
            "spec.template.ports[0].containerPort: required field is missing",
        ),
        (
            "    resources: {limits: {cpu: lots}}\n",
            'spec.template.resources.limits.cpu: expected a cpu quantity like "500m" or "1", got "lots"',
        ),
        (
            "    readinessProbe: {periodSeconds: 1}\n",
            "spec.template.readinessProbe: expected exactly one of httpGet, tcpSocket, exec",
        ),
        (
            "    readinessProbe: {exec: {command: [x]}, tcpSocket: {port: 1}}\n",
            "spec.template.readinessProbe: expected exactly one of httpGet, tcpSocket, exec, got tcpSocket, exec",
        ),
        (
            "    readinessProbe: {httpGet: {port: 80, path: x}}\n",
            "spec.template.readinessProbe.httpGet.path: expected a path starting with '/', got \"x\"",
        ),
        ("    env: [{value: x}]\n", "spec.template.env[0].name: required field is missing"),
        (
            "    env: [{name: 1A, value: x}]\n",
            'spec.template.env[0].name: expected an environment variable name, got "1A"',
        ),
        ("    command: /bin/sh\n", 'spec.template.command: expected a list, got "/bin/sh"'),
        (
            "    terminationGracePeriodSeconds: 1.5\n",
            "spec.template.terminationGracePeriodSeconds: expected an integer >= 0, got 1.5",
        ),
        ("    labels: {a: [1]}\n", "spec.template.labels.a: expected a string, got a list"),
    ],
)
def test_template_errors(extra: str, expected: str) -> None:
    errs = errors_of(MINIMAL + extra)
    assert len(errs) == 1, errs
    assert errs[0].split(" ", 1)[1] == expected
    assert errs[0].startswith("web.yaml:8 ")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (
            "{rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}",
            "spec.strategy.rollingUpdate: maxSurge and maxUnavailable may not both be 0",
        ),
        (
            "{rollingUpdate: {maxSurge: lots}}",
            'spec.strategy.rollingUpdate.maxSurge: expected an integer >= 0 or a percentage like "25%", got "lots"',
        ),
        (
            "{canary: {replicas: 1}}",
            'spec.strategy.canary: only allowed with type: Canary (did you mean "type: Canary"?)',
        ),
        (
            "{type: Canary, canary: {steps: [{setWeight: 101}]}}",
            "spec.strategy.canary.steps[0].setWeight: expected an integer in 0..100, got 101",
        ),
        (
            "{type: Canary, canary: {steps: [{setWeight: 1, pause: {}}]}}",
            "spec.strategy.canary.steps[0]: expected exactly one of setWeight, pause, analysis per step",
        ),
        (
            "{type: Canary, canary: {steps: [{pause: {duration: soon}}]}}",
            'spec.strategy.canary.steps[0].pause.duration: expected a duration like "30s", "5m" or "1h", got "soon"',
        ),
        (
            "{type: Canary, canary: {steps: [{analysis: {maxErrorRate: 2}}]}}",
            "spec.strategy.canary.steps[0].analysis.maxErrorRate: expected a number in 0..1, got 2",
        ),
        (
            "{type: Canary, canary: {steps: [{analysis: {maxP99Ratio: -1}}]}}",
            "spec.strategy.canary.steps[0].analysis.maxP99Ratio: expected a number >= 0, got -1",
        ),
        (
            "{type: Canary, canary: {steps: [{weight: 5}]}}",
            'spec.strategy.canary.steps[0].weight: unknown field "weight" (did you mean "setWeight"?)',
        ),
        (
            "{minReadySeconds: 700}",
            "spec.strategy.progressDeadlineSeconds: must be greater than minReadySeconds",
        ),
    ],
)
def test_strategy_errors(strategy: str, expected: str) -> None:
    errs = errors_of(MINIMAL + f"  strategy: {strategy}\n")
    assert [e.split(" ", 1)[1] for e in errs] == [expected]


def test_yaml_syntax_error_is_located() -> None:
    errs = errors_of("apiVersion: gantry/v1\nkind: [Deployment\nmetadata: {}\n", "x.yaml")
    assert len(errs) == 1
    assert errs[0].startswith("x.yaml:") and "YAML syntax error" in errs[0]


def test_duplicate_key_is_an_error() -> None:
    errs = errors_of(MINIMAL + "  replicas: 2\n  replicas: 3\n")
    assert errs == ['web.yaml:9 spec.replicas: duplicate key "replicas"']


def test_duplicate_deployment_names_in_one_file() -> None:
    errs = errors_of(MINIMAL + "---\n" + MINIMAL, "app.yaml")
    assert errs == [
        'app.yaml:12 (document 2) metadata.name: deployment "web" already defined in document 1'
    ]


def test_document_that_is_not_a_mapping() -> None:
    errs = errors_of("- a\n- b\n", "x.yaml")
    assert errs == ["x.yaml:1 expected a mapping, got a list"]


def test_empty_file() -> None:
    assert errors_of("", "x.yaml") == ["x.yaml: no documents"]


def test_missing_top_level_fields() -> None:
    errs = errors_of("metadata: {name: web}\n", "x.yaml")
    assert errs == [
        "x.yaml:1 apiVersion: required field is missing",
        "x.yaml:1 kind: required field is missing",
        "x.yaml:1 spec: required field is missing",
    ]


def test_name_too_long() -> None:
    errs = errors_of(MINIMAL.replace("name: web", "name: " + "a" * 58))
    assert "metadata.name: expected a DNS label" in errs[0]


# ---------------------------------------------------------------- API input


def test_validate_dict_accepts_canonical_and_message_to_dict_output() -> None:
    doc = one(MINIMAL)
    assert validate_deployment_dict(doc) == []
    msg = json_format.ParseDict(doc, types_pb2.Deployment())
    msg.metadata.generation = 4
    msg.status.replicas = 2
    assert validate_deployment_dict(json_format.MessageToDict(msg)) == []


def test_validate_dict_reports_paths_without_lines() -> None:
    errs = validate_deployment_dict(
        {
            "apiVersion": "gantry/v1",
            "kind": "Deployment",
            "metadata": {"name": "x"},
            "spec": {"replicas": "three", "template": {}},
        }
    )
    assert errs == [
        'spec.replicas: expected an integer >= 0, got "three"',
        "spec.template.image: required field is missing",
    ]


def test_validate_dict_rejects_non_mapping() -> None:
    assert validate_deployment_dict([1]) == ["expected a mapping, got a list"]


def test_canonical_deployment_applies_defaults_and_is_idempotent() -> None:
    doc = canonical_deployment(
        {
            "apiVersion": "gantry/v1",
            "kind": "Deployment",
            "metadata": {"name": "x"},
            "spec": {"template": {"image": "i"}},
        }
    )
    assert doc["spec"]["replicas"] == 1
    assert canonical_deployment(doc) == doc
    with pytest.raises(ManifestError):
        canonical_deployment({"kind": "Deployment"})


def _round_trip(doc: dict[str, Any]) -> dict[str, Any]:
    msg = json_format.ParseDict(doc, types_pb2.Deployment())
    return canonical_deployment(json_format.MessageToDict(msg))


def test_canonical_form_survives_a_protobuf_round_trip() -> None:
    """What the CLI sends and the server re-validates is the same: apply stays 'unchanged'."""
    docs = load_manifests((ROOT / "deploy/examples/shop.yaml").read_text(), "shop.yaml")
    extra = one(
        MINIMAL
        + """\
    env: [{name: EMPTY, value: ""}]
    readinessProbe: {exec: {command: [cat, /etc/hostname]}}
  replicas: 0
  strategy:
    type: Canary
    canary: {steps: [{setWeight: 0}, {pause: {}}, {pause: {duration: 1m}}]}
"""
    )
    for doc in [*docs, extra]:
        assert _round_trip(doc) == doc


def test_alias_bomb_is_refused_not_expanded() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    errs = errors_of("\n".join(lines) + "\n", "bomb.yaml")
    assert len(errs) == 1 and "more than 200000 nodes" in errs[0]
    assert errs[0].startswith("bomb.yaml:1 ")
