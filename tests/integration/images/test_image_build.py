"""The builder: RUN in a container, layer cache, whiteouts through build/push/pull, config."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from imgkit import one_line, overlay, snapshot

from agent.images.errors import BuildError
from agent.images.service import Images

CACHED = """\
FROM busybox:latest
COPY a.txt /a.txt
RUN date +%s%N > /stamp
COPY b.txt /b.txt
RUN cat /a.txt /b.txt > /ab
CMD ["/bin/cat", "/ab"]
"""


def _ctx(tmp_path: Path, text: str, **files: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Gantryfile").write_text(text)
    for name, content in files.items():
        (ctx / name).write_text(content)
    return ctx


async def test_rebuild_reruns_nothing_and_a_changed_copy_reruns_only_what_follows(
    images: Images, busybox: str, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path, CACHED, **{"a.txt": "A\n", "b.txt": "B\n"})
    first = await images.build(ctx, "cache:v1")
    assert [s.cached for s in first.steps] == [True, False, False, False, False, False]
    stamp = ((await images.resolve("cache:v1")).layer_dirs[2] / "stamp").read_text()

    again = await images.build(ctx, "cache:v1")
    assert [s.cached for s in again.steps] == [True] * 6
    assert again.digest == first.digest
    assert ((await images.resolve("cache:v1")).layer_dirs[2] / "stamp").read_text() == stamp

    (ctx / "b.txt").write_text("B2\n")
    changed = await images.build(ctx, "cache:v2")
    assert [(s.text.split()[0], s.cached) for s in changed.steps] == [
        ("FROM", True), ("COPY", True), ("RUN", True), ("COPY", False), ("RUN", False), ("CMD", False),
    ]  # fmt: skip
    image = await images.resolve("cache:v2")
    assert (
        image.layer_dirs[2] / "stamp"
    ).read_text() == stamp  # the RUN before the change did not run
    assert (image.layer_dirs[-1] / "ab").read_text() == "A\nB2\n"


async def test_deleted_file_and_opaque_dir_survive_build_push_pull_and_run(
    images: Images, busybox: str, registry: str, tmp_path: Path
) -> None:
    text = (
        "FROM busybox:latest\n"
        "RUN mkdir -p /d && echo x > /d/x && echo f > /f && echo k > /k\n"
        "RUN rm /f && rm -rf /d && mkdir /d && echo n > /d/n\n"
    )
    ref = f"{registry}/wh:v1"
    await images.build(_ctx(tmp_path, text), ref)
    _, manifest, _ = images.store.load(ref)
    with tarfile.open(
        fileobj=io.BytesIO(images.store.blob_path(manifest.layers[-1].digest).read_bytes())
    ) as tf:
        names = tf.getnames()
    assert ".wh.f" in names and "d/.wh..wh..opq" in names and "d/n" in names
    await images.push(ref)

    async with Images(tmp_path / "other") as fresh:
        image = await fresh.resolve(ref)
        with overlay(image.layer_dirs, tmp_path / "mnt") as root:
            assert not (root / "f").exists()
            assert (root / "k").read_text() == "k\n"
            assert sorted(os.listdir(root / "d")) == ["n"]
        ctx2 = tmp_path / "ctx2"
        ctx2.mkdir()
        (ctx2 / "Gantryfile").write_text(f"FROM {ref}\nRUN test ! -e /f && ls /d > /listing\n")
        await fresh.build(ctx2, "check:v1")
        top = (await fresh.resolve("check:v1")).layer_dirs[-1]
        assert (top / "listing").read_text() == "n\n"


async def test_config_fields_user_and_workdir(images: Images, busybox: str, tmp_path: Path) -> None:
    text = """\
FROM busybox:latest
ENV GREETING=hi
WORKDIR /app
COPY --chown=app:app tool.sh ./
USER app
RUN id -u > /tmp/uid && pwd > /tmp/pwd && echo $GREETING > /tmp/env
EXPOSE 8080
LABEL team=gantry
ENTRYPOINT ["/bin/sh"]
CMD ["tool.sh"]
"""
    result = await images.build(_ctx(tmp_path, text, **{"tool.sh": "echo tool\n"}), "cfg:v1")
    image = await images.resolve("cfg:v1")
    cfg = image.process
    assert "GREETING=hi" in cfg["Env"] and cfg["WorkingDir"] == "/app" and cfg["User"] == "app"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}} and cfg["Labels"] == {"team": "gantry"}
    assert image.argv == ["/bin/sh", "tool.sh"]
    assert len(image.config["rootfs"]["diff_ids"]) == 3
    assert [h["created_by"] for h in image.config["history"]][-len(result.steps) + 1 :] == [
        s.text for s in result.steps[1:]
    ]
    top = image.layer_dirs[-1]
    assert (top / "tmp" / "uid").read_text() == "1000\n"
    assert (top / "tmp" / "pwd").read_text() == "/app\n"
    assert (top / "tmp" / "env").read_text() == "hi\n"
    assert image.user_ids() == (1000, 1000)
    tool = image.layer_dirs[-2] / "app" / "tool.sh"
    assert (tool.stat().st_uid, tool.stat().st_gid) == (1000, 1000)


async def test_failing_run_and_bad_gantryfiles_are_one_line_errors(
    images: Images, busybox: str, tmp_path: Path
) -> None:
    await images.resolve("busybox:latest")  # its layer unpacked: the failed steps must add nothing
    before = snapshot(images.store.root)
    ctx = _ctx(tmp_path, "FROM busybox:latest\nENV A=1\nRUN echo boom >&2; exit 3\n")
    with pytest.raises(BuildError) as exc:
        await images.build(ctx, "bad:v1")
    msg = one_line(exc.value)
    assert msg.startswith(f"{ctx / 'Gantryfile'}:3:") and "exited with 3" in msg and "boom" in msg
    assert images.store.lookup("bad:v1") is None
    for text, words in (
        ("FROM busybox:latest\nCOPY missing.txt /x\n", "'missing.txt' not found"),
        ("FROM busybox:latest\nCOPY ../../etc/passwd /x\n", "outside the build context"),
        ("FROM nosuch:v1\n", "nosuch:v1"),
        ("FROM scratch\nRUN true\n", "needs a base image"),
        ("FROM busybox:latest\nBOGUS x\n", ":2: unknown instruction"),
    ):
        (ctx / "Gantryfile").write_text(text)
        with pytest.raises(BuildError) as exc:
            await images.build(ctx, "bad:v1")
        assert words in one_line(exc.value)
    assert {
        k: v for k, v in snapshot(images.store.root).items() if not k.startswith("buildcache")
    } == {k: v for k, v in before.items() if not k.startswith("buildcache")}
