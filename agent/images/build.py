"""The image builder: a Gantryfile and a context directory in, an OCI image out.

Executes the parsed instructions in order. COPY makes a layer from the
context; RUN mounts an overlay of the image so far (lower dirs from the
store, a fresh upper dir), runs the command in a container through the
runtime `buildrun.step_runtime` picks, and turns the upper dir into the
layer; the rest only change the config. Each step's result is cached under
a key made of the parent chain, the instruction and (for COPY) the content
hash of its sources: an unchanged step is not re-run, and a change re-runs
that step and those after it. `import_rootfs` makes a base image from a
directory or tar. The result is tagged in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import glob
import hashlib
import json
import logging
import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.images import buildrun
from agent.images.errors import BuildError, ImageError
from agent.images.gantryfile import Instruction, parse
from agent.images.layers import (
    LayerFile,
    tree_hash,
    write_copy_layer,
    write_dir_layer,
    write_upper_layer,
)
from agent.images.refs import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor
from agent.images.store import ImageStore, normalize_ref

log = logging.getLogger("gantry.images.build")
Puller = Callable[[str], Any]  # async: pull a base image the store lacks


@dataclass(frozen=True)
class StepResult:
    line: int
    text: str
    cached: bool


@dataclass(frozen=True)
class BuildResult:
    ref: str
    digest: str
    steps: tuple[StepResult, ...]


@dataclass
class _State:
    layers: list[tuple[Descriptor, str]] = field(default_factory=list)  # (blob, diff_id)
    config: dict[str, Any] = field(default_factory=dict)  # the OCI config's `config` section
    history: list[dict[str, Any]] = field(default_factory=list)
    chain: str = ""
    created: str = (
        ""  # when the newest step was first made: unchanged rebuilds give the same digest
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _image_docs(state: _State, created: str) -> tuple[bytes, dict[str, Any]]:
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": state.config,
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in state.layers]},
        "history": state.history,
    }
    return json.dumps(config, sort_keys=True).encode(), config


def _manifest(config_desc: Descriptor, layers: list[tuple[Descriptor, str]]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d, _ in layers],
    }
    return json.dumps(doc, sort_keys=True).encode()


def _apply_meta(state: _State, ins: Instruction) -> None:
    """ENV, WORKDIR, USER, EXPOSE, CMD, ENTRYPOINT, LABEL: pure config changes."""
    cfg = state.config
    if ins.keyword == "ENV":
        env = [e for e in cfg.get("Env", [])]
        for pair in ins.args:
            k = pair.split("=", 1)[0]
            env = [e for e in env if e.split("=", 1)[0] != k] + [pair]
        cfg["Env"] = env
    elif ins.keyword == "WORKDIR":
        cfg["WorkingDir"] = posixpath.normpath(
            posixpath.join(cfg.get("WorkingDir") or "/", ins.args[0])
        )
    elif ins.keyword == "USER":
        cfg["User"] = ins.args[0]
    elif ins.keyword == "EXPOSE":
        ports = dict(cfg.get("ExposedPorts") or {})
        for p in ins.args:
            ports[p if "/" in p else f"{p}/tcp"] = {}
        cfg["ExposedPorts"] = ports
    elif ins.keyword == "CMD":
        cfg["Cmd"] = list(ins.args)
    elif ins.keyword == "ENTRYPOINT":
        cfg["Entrypoint"] = list(ins.args)
        cfg.pop("Cmd", None)
    elif ins.keyword == "LABEL":
        labels = dict(cfg.get("Labels") or {})
        for pair in ins.args:
            k, _, v = pair.partition("=")
            labels[k] = v
        cfg["Labels"] = labels


class Builder:
    """Builds Gantryfiles into images in one store."""

    def __init__(self, store: ImageStore, *, pull: Puller | None = None) -> None:
        self.store = store
        self.pull = pull
        self.cache_dir = store.root / "buildcache"
        self.cache_dir.mkdir(exist_ok=True)
        self.runtime = buildrun.step_runtime(store.root / "runc")

    # -- cache ---------------------------------------------------------------
    def _cache_get(self, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads((self.cache_dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        if all(self.store.has_blob(d) for d in entry.get("blobs", [])):
            return dict(entry)
        return None

    def _cache_put(self, key: str, entry: dict[str, Any]) -> None:
        path = self.cache_dir / f"{key}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)

    # -- steps ---------------------------------------------------------------
    async def _from(self, ins: Instruction, state: _State, where: str) -> None:
        base = ins.args[0]
        if base == "scratch":
            state.chain = _key("FROM scratch")
            return
        if self.store.lookup(base) is None and self.pull is not None:
            await self.pull(base)
        try:
            digest, manifest, config = await asyncio.to_thread(self.store.load, base)
        except ImageError as exc:
            raise BuildError(f"{where}: FROM {base}: {exc}") from None
        state.layers = list(zip(manifest.layers, config["rootfs"]["diff_ids"], strict=True))
        state.config = dict(config.get("config") or {})
        state.history = list(config.get("history") or [])
        state.chain = _key("FROM", digest)
        state.created = str(config.get("created") or "")

    def _copy_items(
        self, ins: Instruction, context: Path, state: _State, where: str
    ) -> list[tuple[Path, str]]:
        args = [a for a in ins.args if not a.startswith("--")]
        *sources, dest = args
        workdir = state.config.get("WorkingDir") or "/"
        dest_abs = posixpath.join(workdir, dest)
        root = context.resolve()
        items: list[tuple[Path, str]] = []
        for src in sources:
            if not Path(os.path.normpath(root / src)).is_relative_to(root):
                raise BuildError(f"{where}: COPY source {src!r} is outside the build context")
            matches = (
                sorted(glob.glob(str(root / src)))
                if any(c in src for c in "*?[")
                else [str(root / src)]
            )
            if not matches or not all(os.path.lexists(m) for m in matches):
                raise BuildError(f"{where}: COPY source {src!r} not found in {context}")
            for m in matches:
                path = Path(m)
                if not path.resolve().is_relative_to(root):
                    raise BuildError(f"{where}: COPY source {src!r} is outside the build context")
                if path.is_dir() and not path.is_symlink():
                    items.append((path, dest_abs))
                elif dest.endswith("/") or len(sources) > 1 or len(matches) > 1:
                    items.append((path, posixpath.join(dest_abs, path.name)))
                else:
                    items.append((path, dest_abs))
        return items

    def _copy_owner(self, ins: Instruction, state: _State, where: str) -> tuple[int, int]:
        chown = next((a.split("=", 1)[1] for a in ins.args if a.startswith("--chown=")), "")
        if not chown:
            return 0, 0
        with self._rootfs_view(state) as rootfs:
            try:
                return buildrun.resolve_user(rootfs, chown)
            except ValueError as exc:
                raise BuildError(f"{where}: COPY --chown: {exc}") from None

    @contextlib.contextmanager
    def _rootfs_view(self, state: _State) -> Any:
        """The top layers' /etc, merged enough for user lookups (no mount needed)."""
        tmp = Path(tempfile.mkdtemp(prefix="etc-", dir=self.store.tmp))
        try:
            (tmp / "etc").mkdir()
            for blob, diff_id in state.layers:
                layer = self.store.unpack_one(blob.digest, blob.media_type, diff_id, "build")
                for name in ("passwd", "group"):
                    if (layer / "etc" / name).is_file():
                        shutil.copyfile(layer / "etc" / name, tmp / "etc" / name)
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write_layer(self, writer: Callable[[Any], LayerFile]) -> tuple[Descriptor, str]:
        tmp = self.store.temp_path("layer-")
        try:
            with open(tmp, "wb") as f:
                lf = writer(f)
            self.store.commit_blob(tmp, lf.digest, verify=False)
        finally:
            tmp.unlink(missing_ok=True)
        return Descriptor(OCI_LAYER_GZIP, lf.digest, lf.size), lf.diff_id

    async def _copy(
        self, ins: Instruction, context: Path, state: _State, where: str
    ) -> tuple[Descriptor, str]:
        items = self._copy_items(ins, context, state, where)
        owner = await asyncio.to_thread(self._copy_owner, ins, state, where)
        return await asyncio.to_thread(
            self._write_layer, lambda f: write_copy_layer(items, f, owner=owner)
        )

    async def _run(self, ins: Instruction, state: _State, where: str) -> tuple[Descriptor, str]:
        lowers = [
            await asyncio.to_thread(self.store.unpack_one, b.digest, b.media_type, d, where)
            for b, d in state.layers
        ]
        if not lowers:
            raise BuildError(
                f"{where}: RUN needs a base image with a shell (FROM scratch has none)"
            )
        work = Path(tempfile.mkdtemp(prefix="run-", dir=self.store.tmp))
        upper, wdir, merged = work / "upper", work / "work", work / "merged"
        for d in (upper, wdir, merged):
            d.mkdir()
        opts = (
            f"lowerdir={':'.join(str(p) for p in reversed(lowers))},upperdir={upper},workdir={wdir}"
        )
        try:
            await _mount_overlay(opts, merged, where)
            try:
                outcome = await buildrun.run_step(
                    self.runtime, merged, work / "bundle",
                    argv=list(ins.args), env=list(state.config.get("Env") or []),
                    cwd=state.config.get("WorkingDir") or "/", user=state.config.get("User") or "",
                )  # fmt: skip
            except (ValueError, OSError) as exc:
                raise BuildError(f"{where}: RUN could not start: {exc}") from None
            finally:
                await _umount(merged)
            if outcome.exit_code != 0:
                raise BuildError(
                    f"{where}: RUN exited with {outcome.exit_code}: {outcome.output_tail or 'no output'}"
                )
            return await asyncio.to_thread(self._write_layer, lambda f: write_upper_layer(upper, f))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    # -- the build -----------------------------------------------------------
    async def build(
        self, context: Path, tag: str, *, gantryfile: Path | None = None
    ) -> BuildResult:
        """Build `context` with its Gantryfile (or `gantryfile`) and tag the image `tag`."""
        path = gantryfile or context / "Gantryfile"
        try:
            text = path.read_text()
        except OSError as exc:
            raise BuildError(f"{path}: cannot read ({exc.strerror})") from None
        normalize_ref(tag)
        instructions = parse(text, str(path))
        state = _State()
        steps: list[StepResult] = []
        for ins in instructions:
            where = f"{path}:{ins.line}"
            if ins.keyword == "FROM":
                await self._from(ins, state, where)
                steps.append(StepResult(ins.line, ins.text, True))
                continue
            steps.append(await self._step(ins, context, state, where))
        digest = await asyncio.to_thread(self._commit_image, state, tag)
        return BuildResult(normalize_ref(tag), digest, tuple(steps))

    async def _step(self, ins: Instruction, context: Path, state: _State, where: str) -> StepResult:
        extra = ""
        if ins.keyword == "COPY":
            items = self._copy_items(ins, context, state, where)
            extra = await asyncio.to_thread(tree_hash, [p for p, _ in items]) + json.dumps(
                [d for _, d in items]
            )
        key = _key(state.chain, ins.text, extra)
        entry = self._cache_get(key)
        cached = entry is not None
        if entry is None:
            entry = {"layer": None, "blobs": [], "created": _now()}
            if ins.keyword in ("COPY", "RUN"):
                log.info("build %s: %s", where, ins.text)
                desc, diff_id = await (
                    self._copy(ins, context, state, where)
                    if ins.keyword == "COPY"
                    else self._run(ins, state, where)
                )
                entry = {
                    "layer": [desc.media_type, desc.digest, desc.size, diff_id],
                    "blobs": [desc.digest],
                    "created": entry["created"],
                }
            self._cache_put(key, entry)
        if entry["layer"]:
            mt, digest, size, diff_id = entry["layer"]
            state.layers.append((Descriptor(mt, digest, size), diff_id))
        else:
            _apply_meta(state, ins)
        state.created = str(entry.get("created") or _now())
        hist: dict[str, Any] = {"created": state.created, "created_by": ins.text}
        if not entry["layer"]:
            hist["empty_layer"] = True
        state.history.append(hist)
        state.chain = key
        return StepResult(ins.line, ins.text, cached)

    def _commit_image(self, state: _State, tag: str) -> str:
        config_bytes, _ = _image_docs(state, state.created or _now())
        config_digest = self.store.put_bytes(config_bytes)
        manifest = _manifest(Descriptor(OCI_CONFIG, config_digest, len(config_bytes)), state.layers)
        digest = self.store.put_bytes(manifest)
        self.store.tag(tag, digest)
        return digest

    # -- import --------------------------------------------------------------
    async def import_rootfs(
        self, source: Path, tag: str, *, config: dict[str, Any] | None = None
    ) -> str:
        """A one-layer base image from a root file system directory or tar file."""
        normalize_ref(tag)
        state = _State(config=dict(config or {}))
        layer = await asyncio.to_thread(self._import_layer, source)
        state.layers.append(layer)
        state.history.append({"created_by": f"gantry image import {source.name}"})
        return await asyncio.to_thread(self._commit_image, state, tag)

    def _import_layer(self, source: Path) -> tuple[Descriptor, str]:
        if source.is_dir():
            return self._write_layer(lambda f: write_dir_layer(source, f))
        if not source.is_file():
            raise BuildError(f"{source}: no such directory or tar file")
        return self._import_tar(source)

    def _import_tar(self, source: Path) -> tuple[Descriptor, str]:
        work = Path(tempfile.mkdtemp(prefix="import-", dir=self.store.tmp))
        try:
            try:
                with tarfile.open(source) as tf:
                    for member in tf:
                        if member.name.startswith("/") or ".." in member.name.split("/"):
                            raise BuildError(
                                f"{source}: tar entry {member.name!r} escapes the root"
                            )
                        tf.extract(member, work, numeric_owner=True, filter="fully_trusted")
            except tarfile.TarError as exc:
                raise BuildError(f"{source}: not a readable tar file ({exc})") from None
            return self._write_layer(lambda f: write_dir_layer(work, f))
        finally:
            shutil.rmtree(work, ignore_errors=True)


async def _mount_overlay(opts: str, target: Path, where: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "mount", "-t", "overlay", "overlay", "-o", opts, str(target),
        stdout=subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise BuildError(
            f"{where}: cannot mount the build overlay: {err.decode(errors='replace').strip()}"
        )


async def _umount(target: Path) -> None:
    proc = await asyncio.create_subprocess_exec("umount", str(target), stderr=subprocess.DEVNULL)
    if await proc.wait() != 0:
        proc = await asyncio.create_subprocess_exec(
            "umount", "-l", str(target), stderr=subprocess.DEVNULL
        )
        await proc.wait()
