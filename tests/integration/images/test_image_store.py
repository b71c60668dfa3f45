"""The OCI layout store: layers unpacked once, whiteouts, safe unpacking, rm and prune."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from imgkit import one_line, overlay, put_image, snapshot, tar_bytes

from agent.images.errors import CorruptBlob, ImageInUse, NotFound
from agent.images.layers import OPAQUE_XATTR
from agent.images.service import Images

BASE = tar_bytes(
    [
        ("dir", "etc", b""),
        ("file", "etc/keep.txt", "keep\n"),
        ("file", "etc/gone.txt", "gone\n"),
        ("dir", "data", b""),
        ("file", "data/old1", "1"),
        ("file", "data/old2", "2"),
        ("link", "etc/hard.txt", "etc/keep.txt"),
        ("symlink", "etc/soft", "keep.txt"),
    ]
)
UPPER = tar_bytes(
    [
        ("file", "etc/.wh.gone.txt", b""),
        ("dir", "data", b""),
        ("file", "data/.wh..wh..opq", b""),
        ("file", "data/new", "new"),
    ]
)


def test_layout_files(images: Images) -> None:
    root = images.store.root
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((root / "index.json").read_text())["manifests"] == []
    put_image(images.store, "x:1", [BASE])
    entry = json.loads((root / "index.json").read_text())["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "x:1"


async def test_whiteouts_and_opaque_dirs_in_the_mounted_overlay(
    images: Images, tmp_path: Path
) -> None:
    put_image(images.store, "wh:1", [BASE, UPPER])
    image = await images.resolve("wh:1")
    upper = image.layer_dirs[1]
    st = os.lstat(upper / "etc" / "gone.txt")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper / "data", OPAQUE_XATTR) == b"y"
    assert (
        not (upper / "etc" / ".wh.gone.txt").exists()
        and not (upper / "data" / ".wh..wh..opq").exists()
    )
    lower = image.layer_dirs[0]
    assert os.stat(lower / "etc" / "hard.txt").st_ino == os.stat(lower / "etc" / "keep.txt").st_ino
    assert os.readlink(lower / "etc" / "soft") == "keep.txt"
    with overlay(image.layer_dirs, tmp_path / "mnt") as root:
        assert not (root / "etc" / "gone.txt").exists()
        assert (root / "etc" / "keep.txt").read_text() == "keep\n"
        assert sorted(os.listdir(root / "data")) == ["new"]


async def test_concurrent_resolves_unpack_once(images: Images) -> None:
    put_image(images.store, "a:1", [BASE, UPPER])
    first, second = await asyncio.gather(images.resolve("a:1"), images.resolve("a:1"))
    assert first.layer_dirs == second.layer_dirs
    assert sorted(p.name for p in images.store.layers.iterdir()) == sorted(
        p.name for p in first.layer_dirs
    )
    assert list(images.store.tmp.iterdir()) == []


async def test_each_layer_is_unpacked_once_and_shared(images: Images) -> None:
    put_image(images.store, "a:1", [BASE])
    put_image(images.store, "b:1", [BASE, UPPER])
    first = await images.resolve("a:1")
    marker = first.layer_dirs[0] / "marker"
    marker.write_text("still here")
    second = await images.resolve("b:1")
    assert second.layer_dirs[0] == first.layer_dirs[0]
    assert marker.read_text() == "still here"  # not unpacked again
    assert len(list(images.store.layers.iterdir())) == 2


def _evil(kind: str, outside: Path) -> bytes:
    if kind == "dotdot":
        return tar_bytes([("file", "../escape", "x")])
    if kind == "through-symlink":
        return tar_bytes([("symlink", "evil", str(outside)), ("file", "evil/x", "x")])
    return tar_bytes([("link", "hard", "../../etc/passwd")])


@pytest.mark.parametrize("kind", ["dotdot", "through-symlink", "hardlink-out"])
async def test_layers_cannot_write_outside_their_dir(
    images: Images, kind: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    put_image(images.store, "evil:1", [_evil(kind, outside)])
    with pytest.raises(CorruptBlob) as exc:
        await images.resolve("evil:1")
    assert "evil:1" in one_line(exc.value)
    assert list(images.store.layers.iterdir()) == []
    assert list(outside.iterdir()) == []
    assert not (images.store.root / "escape").exists()


async def test_rm_and_prune(images: Images) -> None:
    put_image(images.store, "a:1", [BASE])
    put_image(images.store, "b:1", [BASE, UPPER])
    await images.resolve("b:1")
    with pytest.raises(ImageInUse):
        images.remove("b:1", in_use={"b:1"})
    images.remove("b:1")
    assert [i.ref for i in images.list()] == ["a:1"]
    base_diff = images.store.load("a:1")[2]["rootfs"]["diff_ids"][0]
    assert [p.name for p in images.store.layers.iterdir()] == [base_diff.split(":")[1]]
    assert len(list(images.store.blobs.iterdir())) == 3  # a:1's manifest, config, layer
    with pytest.raises(NotFound) as exc:
        images.remove("b:1")
    assert "b:1" in one_line(exc.value)
    put_image(images.store, "c:1", [UPPER])
    result = images.prune(keep={"a:1"})
    assert result.removed_refs == ["c:1"] and result.removed_blobs == 3
    assert [i.ref for i in images.list()] == ["a:1"]
    images.prune(keep=set())
    assert images.list() == [] and list(images.store.blobs.iterdir()) == []


async def test_import_tar(images: Images, tmp_path: Path) -> None:
    src = tmp_path / "root.tar"
    (tmp_path / "r" / "bin").mkdir(parents=True)
    (tmp_path / "r" / "bin" / "tool").write_text("#!/bin/sh\n")
    with tarfile.open(src, "w") as tf:
        tf.add(tmp_path / "r", arcname=".")
    await images.import_rootfs(src, "imported:v1")
    image = await images.resolve("imported:v1")
    assert (image.layer_dirs[0] / "bin" / "tool").read_text() == "#!/bin/sh\n"
    before = snapshot(images.store.root)
    with pytest.raises(Exception) as exc:
        await images.import_rootfs(tmp_path / "nope", "x:1")
    assert "nope" in one_line(exc.value)
    assert snapshot(images.store.root) == before
