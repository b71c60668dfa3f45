"""Pure image helpers: references, manifests, platform choice, auth challenges."""

from __future__ import annotations

import json

import pytest

from agent.images.errors import BadManifest, ImageError
from agent.images.refs import (
    DOCKER_LIST,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Ref,
    is_loopback,
    parse_challenge,
    parse_config,
    parse_manifest,
    parse_ref,
    pick_platform,
    registry_base,
)

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("hello", Ref("", "hello", "latest")),
        ("hello:v1", Ref("", "hello", "v1")),
        ("127.0.0.1:5000/hello:v1", Ref("127.0.0.1:5000", "hello", "v1")),
        ("localhost/a/b", Ref("localhost", "a/b", "latest")),
        ("reg.example.com/team/app:1.2-rc", Ref("reg.example.com", "team/app", "1.2-rc")),
        (f"127.0.0.1:5000/hello@{D1}", Ref("127.0.0.1:5000", "hello", None, D1)),
        ("library/busybox:1", Ref("", "library/busybox", "1")),
    ],
)
def test_parse_ref(text: str, want: Ref) -> None:
    assert parse_ref(text) == want


def test_ref_str_and_reference() -> None:
    ref = parse_ref("127.0.0.1:5000/hello")
    assert str(ref) == "127.0.0.1:5000/hello:latest"
    assert ref.reference == "latest"
    pinned = parse_ref(f"h.io/x@{D1}")
    assert pinned.reference == D1 and str(pinned) == f"h.io/x@{D1}"


@pytest.mark.parametrize("bad", ["", "Hello:v1", "hello:", "a//b", "x@sha256:zz", "hello:v1 2"])
def test_parse_ref_rejects(bad: str) -> None:
    with pytest.raises(ImageError) as exc:
        parse_ref(bad)
    assert "\n" not in str(exc.value)


def test_loopback_uses_http() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:5000")
    assert registry_base("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert registry_base("registry.example.com") == "https://registry.example.com"


def _manifest(**over: object) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": D1,
            "size": 10,
        },
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": D2, "size": 20}],
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_parse_manifest_ok() -> None:
    m = parse_manifest(_manifest(), "x")
    assert m.config.digest == D1 and [layer.digest for layer in m.layers] == [D2]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{not json", "not JSON"),
        (_manifest(schemaVersion=1), "schemaVersion"),
        (_manifest(mediaType="application/x-weird"), "unsupported manifest media type"),
        (
            _manifest(layers=[{"mediaType": "application/x-foo", "digest": D2, "size": 1}]),
            "unsupported media type",
        ),
        (
            _manifest(layers=[{"mediaType": OCI_LAYER_GZIP, "digest": "sha256:12", "size": 1}]),
            "bad digest",
        ),
        (_manifest(layers="nope"), "no layers"),
        (_manifest(config={"digest": D1}), "valid size"),
    ],
)
def test_parse_manifest_rejects(data: bytes, words: str) -> None:
    with pytest.raises(BadManifest, match=words) as exc:
        parse_manifest(data, "reg/x:1")
    assert str(exc.value).startswith("reg/x:1") and "\n" not in str(exc.value)


def test_parse_config_checks_diff_ids() -> None:
    cfg = json.dumps({"rootfs": {"type": "layers", "diff_ids": [D1]}}).encode()
    assert parse_config(cfg, "x", 1)["rootfs"]["diff_ids"] == [D1]
    with pytest.raises(BadManifest, match="diff_ids"):
        parse_config(cfg, "x", 2)


def test_pick_platform() -> None:
    index = json.dumps(
        {
            "mediaType": DOCKER_LIST,
            "manifests": [
                {"digest": D1, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
                {"digest": D2, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }
    ).encode()
    assert pick_platform(index, "x") == D2
    with pytest.raises(
        BadManifest, match="no linux/s390x image in index \\(has linux/arm64, linux/amd64\\)"
    ):
        pick_platform(index, "x", arch="s390x")


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull",
    }
    assert parse_challenge('Basic realm="r"') == ("basic", {"realm": "r"})
