"""Agent settings, image refs and the container spec built from a template (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import settings as st
from agent.agent import image_ref, parse_user, spec_options
from gantry.cli.errors import CLIError
from gantry.cli.logs import logs_url, pick_replica
from gantry.config import load_settings
from gantry.v1 import types_pb2


def test_load_settings_from_env_and_flags() -> None:
    s = load_settings(
        st.AgentSettings,
        section="agent",
        env={"GANTRY_AGENT_PREFIX": "gt1", "GANTRY_AGENT_PODS": "7"},
        overrides={"controller": "a:1,b:2", "name": "n1", "stop_containers_on_exit": True},
    )
    assert s.controller == ("a:1", "b:2") and s.prefix == "gt1" and s.pods == 7
    assert s.stop_containers_on_exit and st.node_name(s) == "n1"
    st.validate(s)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"controller": ()}, "controller"),
        ({"controller": ("nohost",)}, "controller: expected host:port"),
        ({"listen": "x"}, "listen"),
        ({"runtime": "crun"}, "runtime"),
        ({"prefix": "much-too-long"}, "prefix"),
        ({"labels": "a"}, "labels"),
        ({"host_ports": "9-1"}, "host_ports"),
    ],
)
def test_validate_names_the_setting(kw: dict[str, object], message: str) -> None:
    s = st.AgentSettings(controller=("127.0.0.1:1",))
    from dataclasses import replace

    with pytest.raises(st.SettingsError, match=message):
        st.validate(replace(s, **kw))  # type: ignore[arg-type]


def test_capacity_and_labels() -> None:
    s = st.AgentSettings(cpu_millis=1500, memory_bytes=2048, pods=3, labels="zone=a, disk=ssd")
    assert st.capacity(s) == (1500, 2048, 3)
    assert st.parse_labels(s.labels) == {"zone": "a", "disk": "ssd"}
    assert st.machine_memory_bytes("MemTotal:  1024 kB\nMemFree: 1 kB\n") == 1024 * 1024
    assert st.agent_url(st.AgentSettings(address="10.0.0.5"), 7070) == "http://10.0.0.5:7070"


@pytest.mark.parametrize(
    ("image", "registry", "ref"),
    [
        ("web:1", "127.0.0.1:5000", "127.0.0.1:5000/web:1"),
        ("library/web:1", "reg:5000", "reg:5000/library/web:1"),
        ("127.0.0.1:5000/web:1", "other:1", "127.0.0.1:5000/web:1"),
        ("registry.example.com/a/b", "reg:5000", "registry.example.com/a/b"),
        ("web:1", "", "web:1"),
    ],
)
def test_image_ref(image: str, registry: str, ref: str) -> None:
    assert image_ref(image, registry) == ref


def test_parse_user() -> None:
    assert parse_user("") == (0, 0)
    assert parse_user("1000") == (1000, 1000)
    assert parse_user("1000:50") == (1000, 50)
    with pytest.raises(ValueError, match="numeric"):
        parse_user("nobody")


CONFIG = {
    "config": {
        "Entrypoint": ["/bin/app"],
        "Cmd": ["--serve"],
        "Env": ["PATH=/bin", "A=1"],
        "WorkingDir": "/srv",
        "User": "10:20",
    }
}


def opts(template: types_pb2.PodTemplate) -> object:
    return spec_options(
        template=template,
        image_config=CONFIG,
        layer_dirs=[Path("/l/0"), Path("/l/1")],
        bundle=Path("/b/c1"),
        hostname="web-1",
        netns_path="/var/run/netns/x",
    )


def test_spec_from_image_defaults() -> None:
    o = opts(types_pb2.PodTemplate(image="x"))
    assert o.args == ("/bin/app", "--serve")  # type: ignore[attr-defined]
    assert o.cwd == "/srv" and (o.uid, o.gid) == (10, 20)  # type: ignore[attr-defined]
    assert o.overlay.lower == ("/l/1", "/l/0")  # type: ignore[attr-defined]
    assert o.overlay.upper == "/b/c1/upper" and o.rootfs == "/b/c1/rootfs"  # type: ignore[attr-defined]
    assert o.netns_path == "/var/run/netns/x" and o.hostname == "web-1"  # type: ignore[attr-defined]
    assert o.memory_bytes is None and o.cpu_quota_us is None  # type: ignore[attr-defined]


def test_template_overrides_image() -> None:
    t = types_pb2.PodTemplate(
        image="x",
        command=["httpd"],
        args=["-f", "-p", "80"],
        env=[types_pb2.EnvVar(name="A", value="2"), types_pb2.EnvVar(name="B", value="3")],
        working_dir="/www",
        resources=types_pb2.Resources(limits=types_pb2.ResourceList(cpu="500m", memory="64Mi")),
    )
    o = opts(t)
    assert o.args == ("httpd", "-f", "-p", "80")  # type: ignore[attr-defined]
    assert o.env == ("PATH=/bin", "A=2", "B=3") and o.cwd == "/www"  # type: ignore[attr-defined]
    assert o.memory_bytes == 64 * 2**20 and o.cpu_quota_us == 50_000  # type: ignore[attr-defined]


def test_command_alone_drops_image_cmd() -> None:
    o = opts(types_pb2.PodTemplate(image="x", command=["sleep", "9"]))
    assert o.args == ("sleep", "9")  # type: ignore[attr-defined]


def test_no_command_anywhere_is_an_error() -> None:
    with pytest.raises(ValueError, match="no command"):
        spec_options(
            template=types_pb2.PodTemplate(image="x"),
            image_config={},
            layer_dirs=[],
            bundle=Path("/b"),
            hostname="h",
            netns_path="/n",
        )


def test_cli_pick_replica_and_url() -> None:
    rs = [
        types_pb2.Replica(name="web-b", deployment="web", phase="Running"),
        types_pb2.Replica(name="web-a", deployment="web", phase="Starting"),
    ]
    assert pick_replica("web-a", rs).name == "web-a"
    assert pick_replica("web", rs).name == "web-b"  # a running one first
    with pytest.raises(CLIError, match="no replica or deployment named 'x'"):
        pick_replica("x", rs)
    assert (
        logs_url("http://n:1/", "web-a", tail=5, follow=True)
        == "http://n:1/logs/web-a?tail=5&follow=1"
    )
    assert logs_url("http://n:1", "w", tail=None, follow=False) == "http://n:1/logs/w"
