"""The image commands, driven through their argparse registration like `gantry` does."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.images.demo import make_busybox_rootfs
from gantry.cli import images as cli
from gantry.cli.errors import CLIError


def gantry(state: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gantry")
    parser.add_argument("--state-dir")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--state-dir", str(state), *argv])
    return int(args.func(args))


def test_import_build_push_pull_list_rm_prune(
    tmp_path: Path, registry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = tmp_path / "node1", tmp_path / "node2"
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    make_busybox_rootfs(rootfs)
    assert gantry(one, "image", "import", str(rootfs), "busybox:latest") == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "msg").write_text("hi\n")
    (ctx / "Build.g").write_text("FROM busybox:latest\nCOPY msg /msg\nRUN cat /msg > /copy\n")
    ref = f"{registry}/cli:v1"
    assert gantry(one, "build", "-t", ref, "-f", str(ctx / "Build.g"), str(ctx)) == 0
    out = capsys.readouterr().out
    assert "step 3/3: RUN cat /msg > /copy" in out and f"built {ref} sha256:" in out
    assert gantry(one, "build", "-t", ref, "-f", str(ctx / "Build.g"), str(ctx)) == 0
    assert "step 3/3: RUN cat /msg > /copy  (cached)" in capsys.readouterr().out

    assert gantry(one, "push", ref) == 0
    pushed = capsys.readouterr()
    assert f"pushed {ref} sha256:" in pushed.out and "push " in pushed.err and " / " in pushed.err
    assert gantry(two, "pull", ref) == 0
    pulled = capsys.readouterr()
    digest = pulled.out.split()[-1]
    assert pulled.out.startswith(f"pulled {ref} sha256:") and "pull " in pulled.err
    assert gantry(two, "images") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["REFERENCE", "DIGEST", "SIZE", "CREATED"]
    assert listing[1].split()[:2] == [ref, digest[7:19]]

    assert gantry(two, "image", "rm", ref) == 0
    assert gantry(two, "image", "prune") == 0
    assert "removed 0 blob(s)" in capsys.readouterr().out.splitlines()[-1]
    assert gantry(two, "images") == 0
    assert capsys.readouterr().out.splitlines()[1:] == []
    assert list((two / "images" / "blobs" / "sha256").iterdir()) == []
    assert gantry(one, "image", "prune", "--all") == 0
    assert "untagged busybox:latest" in capsys.readouterr().out
    assert gantry(two, "image", "demo", registry) == 0
    assert capsys.readouterr().out.split() == [
        f"{registry}/{t}" for t in ("busybox:latest", "hello:v1", "hello:v2")
    ]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["pull", "{registry}/nosuch:v1"], "{registry}/nosuch:v1: not found"),
        (["pull", "nosuch:v1"], "names no registry"),
        (["image", "rm", "nosuch:v1"], "nosuch:v1: no such image"),
        (["push", "{registry}/nosuch:v1"], "no such image in the local store"),
        (["build", "-t", "x:1", "{ctx}"], "Gantryfile:2: unknown instruction 'NOPE'"),
        (["image", "import", "{ctx}/missing", "x:1"], "missing: no such directory or tar file"),
        (["build", "-t", "Bad Name", "{ctx}"], "bad repository name"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, registry: str, argv: list[str], words: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Gantryfile").write_text("FROM scratch\nNOPE\n")
    fill = {"registry": registry, "ctx": str(ctx)}
    with pytest.raises(CLIError) as exc:
        gantry(tmp_path / "state", *(a.format(**fill) for a in argv))
    msg = str(exc.value)
    assert words.format(**fill) in msg and "\n" not in msg
