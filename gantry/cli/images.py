"""`gantry build|images|image rm|prune|import|demo|pull|push`: the local image store.

The store lives at <state dir>/images. Every image failure reaches the user
as one CLIError line (exit code 1); long transfers show progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from agent.images import buildrun
from agent.images.errors import ImageError
from agent.images.service import Images
from gantry.cli.errors import CLIError
from gantry.config import state_dir_from

T = TypeVar("T")


def store_root(args: argparse.Namespace) -> Path:
    return state_dir_from(os.environ, getattr(args, "state_dir", None)) / "images"


def _run(args: argparse.Namespace, work: Callable[[Images], Awaitable[T]]) -> T:
    async def go() -> T:
        async with Images(store_root(args)) as images:
            return await work(images)

    try:
        return asyncio.run(go())
    except ImageError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"image store {store_root(args)}: {exc.strerror or exc}") from None


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class ProgressLine:
    """Per-blob progress on stderr: redrawn in place on a terminal, one line per blob otherwise."""

    def __init__(self, verb: str, out: TextIO | None = None) -> None:
        self.verb, self.out = verb, out or sys.stderr
        self.tty = self.out.isatty()
        self.last = 0.0

    def __call__(self, digest: str, done: int, total: int) -> None:
        finished = done >= total
        now = time.monotonic()
        if not finished and (not self.tty or now - self.last < 0.2):
            return
        self.last = now
        line = f"{self.verb} {digest[7:19]}  {human(done)} / {human(total)}"
        if self.tty:
            self.out.write("\r" + line.ljust(60) + ("\n" if finished else ""))
        elif finished:
            self.out.write(line + "\n")
        self.out.flush()


def cmd_build(args: argparse.Namespace) -> int:
    context = Path(args.dir)
    gantryfile = Path(args.file) if args.file else None

    async def work(images: Images) -> Any:
        return await images.build(context, args.tag, gantryfile=gantryfile)

    # RUN steps execute in Gantry's isolation core (forked now, before any thread).
    buildrun.prepare_core(store_root(args) / "core")
    result = _run(args, work)
    for i, step in enumerate(result.steps, 1):
        print(f"step {i}/{len(result.steps)}: {step.text}{'  (cached)' if step.cached else ''}")
    print(f"built {result.ref} {result.digest}")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    infos = _run(args, _list)
    rows = [("REFERENCE", "DIGEST", "SIZE", "CREATED")]
    rows += [(i.ref, i.digest[7:19], human(i.size), i.created) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _list(images: Images) -> Any:
    return images.list()


def cmd_rm(args: argparse.Namespace) -> int:
    async def work(images: Images) -> None:
        for ref in args.refs:
            images.remove(ref)
            print(f"removed {ref}")

    _run(args, work)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    async def work(images: Images) -> Any:
        return images.prune(keep=set() if args.all else None, build_cache=args.all)

    result = _run(args, work)
    for ref in result.removed_refs:
        print(f"untagged {ref}")
    print(
        f"removed {result.removed_blobs} blob(s), {result.removed_layers} layer dir(s), freed {human(result.freed_bytes)}"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    async def work(images: Images) -> str:
        return await images.import_rootfs(Path(args.source), args.ref)

    print(f"imported {args.ref} {_run(args, work)}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    async def work(images: Images) -> str:
        return await images.pull(args.ref, progress=ProgressLine("pull"))

    print(f"pulled {args.ref} {_run(args, work)}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    async def work(images: Images) -> str:
        return await images.push(args.ref, source=args.source, progress=ProgressLine("push"))

    print(f"pushed {args.ref} {_run(args, work)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.images.demo import ensure_demo_images_async

    try:
        refs = asyncio.run(ensure_demo_images_async(store_root(args), args.registry))
    except ImageError as exc:
        raise CLIError(str(exc)) from None
    for ref in refs:
        print(ref)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("build", help="build an image from a Gantryfile")
    p.add_argument(
        "-t", "--tag", required=True, help="NAME:TAG (host:port/NAME:TAG names a registry)"
    )
    p.add_argument("-f", "--file", help="the Gantryfile (default DIR/Gantryfile)")
    p.add_argument("dir", metavar="DIR", help="build context directory")
    p.set_defaults(func=cmd_build)

    p = subparsers.add_parser("images", help="list local images")
    p.set_defaults(func=cmd_images)

    p = subparsers.add_parser("pull", help="pull an image from its registry")
    p.add_argument("ref", metavar="REF", help="host:port/NAME:TAG or host:port/NAME@sha256:...")
    p.set_defaults(func=cmd_pull)

    p = subparsers.add_parser("push", help="push a local image to the registry its name gives")
    p.add_argument("ref", metavar="REF", help="host:port/NAME:TAG")
    p.add_argument("--source", help="local image to push under REF (default REF itself)")
    p.set_defaults(func=cmd_push)

    image = subparsers.add_parser("image", help="manage local images")
    sub = image.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    p = sub.add_parser("rm", help="remove local image tags (and blobs nothing else uses)")
    p.add_argument("refs", metavar="REF", nargs="+")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("prune", help="remove blobs and layers no image uses")
    p.add_argument("--all", action="store_true", help="also remove every image and the build cache")
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser("import", help="make a base image from a root file system")
    p.add_argument("source", metavar="DIR|TAR")
    p.add_argument("ref", metavar="NAME:TAG")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("demo", help="build busybox, hello:v1, hello:v2 and push them to REGISTRY")
    p.add_argument("registry", metavar="REGISTRY", help="host:port")
    p.set_defaults(func=cmd_demo)
