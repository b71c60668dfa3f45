"""The node's image store, in the OCI image layout.

Owns <root>/oci-layout, index.json (one entry per tag, the full reference in
the `org.opencontainers.image.ref.name` annotation), blobs/sha256/<hex>
(content-addressed, digest checked when written and when read) and
layers/<diff_id hex>/ (each layer unpacked once, shared read-only by every
container as an overlayfs lower dir). Every write goes to tmp/ first and is
renamed into place, so a failed pull or build leaves blobs/, layers/ and
index.json as they were. It does no network I/O: the registry client and the
builder bring blobs in through `commit_blob` / `put_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.images.errors import CorruptBlob, ImageError, ImageInUse, NotFound
from agent.images.layers import unpack_layer
from agent.images.refs import (
    DIGEST_RE,
    Manifest,
    parse_config,
    parse_manifest,
    parse_ref,
    sha256_digest,
)
from agent.images.users import ids_in_layers

REF_ANNOTATION = "org.opencontainers.image.ref.name"
TMP_MAX_AGE_S = 3600.0  # gc removes temp files older than this (left by a crash)


@dataclass(frozen=True)
class Image:
    """What the agent needs to make a container of an image."""

    ref: str
    digest: str  # the manifest's digest
    config: dict[str, Any]  # the whole OCI image config document
    layer_dirs: tuple[Path, ...]  # unpacked layers, lowest first (overlay wants them reversed)

    @property
    def process(self) -> dict[str, Any]:
        """The config's `config` section: Env, Cmd, Entrypoint, WorkingDir, User, ..."""
        section = self.config.get("config") or {}
        return section if isinstance(section, dict) else {}

    @property
    def argv(self) -> list[str]:
        return list(self.process.get("Entrypoint") or []) + list(self.process.get("Cmd") or [])

    @property
    def env(self) -> list[str]:
        return list(self.process.get("Env") or [])

    def user_ids(self) -> tuple[int, int]:
        """The config's User as (uid, gid), names looked up in the image's passwd/group.

        Raises ValueError naming the unknown user or group. Reads files: call it in a thread.
        """
        return ids_in_layers(self.layer_dirs, str(self.process.get("User") or ""))


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    digest: str
    size: int  # manifest + config + compressed layers
    created: str


@dataclass(frozen=True)
class PruneResult:
    removed_refs: list[str] = field(default_factory=list)
    removed_blobs: int = 0
    removed_layers: int = 0
    freed_bytes: int = 0


def normalize_ref(ref: str) -> str:
    """'hello' -> 'hello:latest'; digests and full refs unchanged in form."""
    if DIGEST_RE.match(ref):
        return ref
    return str(parse_ref(ref))


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.tmp = self.root / "tmp"
        for d in (self.blobs, self.layers, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.root / "oci-layout").exists():
            self._write_atomic(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.root / "index.json").exists():
            self._write_index([])
        self._unpack_locks: dict[str, asyncio.Lock] = {}

    # -- files ---------------------------------------------------------------
    def temp_path(self, prefix: str = "part-") -> Path:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=self.tmp)
        os.close(fd)
        return Path(name)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, name = tempfile.mkstemp(prefix=".w-", dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Cross-process lock around index read-modify-write and garbage collection."""
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- blobs ---------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if not DIGEST_RE.match(digest):
            raise ImageError(f"bad digest {digest!r}")
        return self.blobs / digest.split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str, where: str) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{where}: blob {digest[:19]} is missing from the store") from None
        if sha256_digest(data) != digest:
            raise CorruptBlob(
                f"{where}: blob {digest[:19]} in the store is corrupt (digest mismatch)"
            )
        return data

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_digest(data)
        if not self.has_blob(digest):
            self._write_atomic(self.blob_path(digest), data)
        return digest

    def commit_blob(self, tmp: Path, digest: str, *, verify: bool = True) -> None:
        """Move a downloaded/built temp file into blobs/ under its (checked) digest."""
        if verify:
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if "sha256:" + h.hexdigest() != digest:
                tmp.unlink(missing_ok=True)
                raise CorruptBlob(f"blob {digest[:19]}: content does not match its digest")
        if self.has_blob(digest):
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, self.blob_path(digest))

    # -- index ---------------------------------------------------------------
    def _read_index(self) -> list[dict[str, Any]]:
        try:
            doc = json.loads((self.root / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise ImageError(f"image store {self.root}: index.json unreadable ({exc})") from None
        return list(doc.get("manifests") or [])

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }
        self._write_atomic(self.root / "index.json", json.dumps(doc, indent=1).encode())

    def lookup(self, ref: str) -> str | None:
        """The manifest digest a tag names locally (or the digest itself if held)."""
        key = normalize_ref(ref)
        for entry in self._read_index():
            if (entry.get("annotations") or {}).get(REF_ANNOTATION) == key:
                return str(entry["digest"])
        digest = key if DIGEST_RE.match(key) else parse_ref(key).digest
        if digest and self.has_blob(digest):
            return digest
        return None

    def tag(self, ref: str, digest: str) -> None:
        key = normalize_ref(ref)
        media_type = self.manifest(digest, key).media_type
        size = self.blob_path(digest).stat().st_size
        with self.locked():
            entries = [
                e
                for e in self._read_index()
                if (e.get("annotations") or {}).get(REF_ANNOTATION) != key
            ]
            entries.append(
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": size,
                    "annotations": {REF_ANNOTATION: key},
                }
            )
            self._write_index(entries)

    def refs(self) -> dict[str, str]:
        """Every local tag -> manifest digest."""
        out = {}
        for entry in self._read_index():
            ref = (entry.get("annotations") or {}).get(REF_ANNOTATION)
            if ref:
                out[str(ref)] = str(entry["digest"])
        return out

    # -- manifests and configs -----------------------------------------------
    def manifest(self, digest: str, where: str) -> Manifest:
        return parse_manifest(self.read_blob(digest, where), where)

    def config(self, manifest: Manifest, where: str) -> dict[str, Any]:
        return parse_config(
            self.read_blob(manifest.config.digest, where), where, len(manifest.layers)
        )

    def load(self, ref: str) -> tuple[str, Manifest, dict[str, Any]]:
        digest = self.lookup(ref)
        if digest is None:
            raise NotFound(f"{ref}: no such image in the local store")
        manifest = self.manifest(digest, ref)
        return digest, manifest, self.config(manifest, ref)

    def images(self) -> list[ImageInfo]:
        out = []
        for ref, digest in sorted(self.refs().items()):
            try:
                manifest = self.manifest(digest, ref)
                created = str(self.config(manifest, ref).get("created", ""))
            except ImageError:
                out.append(ImageInfo(ref, digest, 0, "(broken)"))
                continue
            size = self.blob_path(digest).stat().st_size + manifest.config.size
            size += sum(layer.size for layer in manifest.layers)
            out.append(ImageInfo(ref, digest, size, created))
        return out

    # -- layers --------------------------------------------------------------
    def layer_dir(self, diff_id: str) -> Path:
        return self.layers / diff_id.split(":", 1)[1]

    def unpack_one(self, blob_digest: str, media_type: str, diff_id: str, where: str) -> Path:
        """Unpack one layer blob into layers/<diff_id> unless it is there (sync)."""
        final = self.layer_dir(diff_id)
        if final.is_dir():
            return final
        if not self.has_blob(blob_digest):
            raise NotFound(f"{where}: layer blob {blob_digest[:19]} is missing from the store")
        work = Path(tempfile.mkdtemp(prefix="layer-", dir=self.tmp))
        try:
            os.chmod(work, 0o755)
            unpack_layer(
                self.blob_path(blob_digest),
                media_type,
                work,
                digest=blob_digest,
                diff_id=diff_id,
                where=where,
            )
            try:
                os.rename(work, final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return final

    async def unpack(
        self, manifest: Manifest, config: dict[str, Any], where: str
    ) -> tuple[Path, ...]:
        diff_ids = config["rootfs"]["diff_ids"]
        dirs = []
        for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
            lock = self._unpack_locks.setdefault(diff_id, asyncio.Lock())
            async with lock:
                dirs.append(
                    await asyncio.to_thread(
                        self.unpack_one, layer.digest, layer.media_type, diff_id, where
                    )
                )
        return tuple(dirs)

    async def resolve(self, ref: str) -> Image:
        """A local image's config and unpacked layer dirs; NotFound if not held."""
        digest, manifest, config = await asyncio.to_thread(self.load, ref)
        dirs = await self.unpack(manifest, config, ref)
        return Image(normalize_ref(ref), digest, config, dirs)

    # -- removal -------------------------------------------------------------
    def remove(self, ref: str, *, in_use: Collection[str] = ()) -> None:
        key = normalize_ref(ref)
        with self.locked():
            entries = self._read_index()
            keep = [e for e in entries if (e.get("annotations") or {}).get(REF_ANNOTATION) != key]
            if len(keep) == len(entries):
                raise NotFound(f"{ref}: no such image in the local store")
            gone = next(e for e in entries if e not in keep)
            if key in in_use or gone["digest"] in in_use:
                raise ImageInUse(f"{ref}: image is used by a container")
            self._write_index(keep)
        self.gc()

    def prune(
        self, *, keep: Collection[str] | None = None, build_cache: bool = False
    ) -> PruneResult:
        """Drop tags not in `keep` (None keeps every tag), then unreferenced blobs and layers.

        The agent passes the refs/digests its containers use; `build_cache`
        also forgets the builder's layer cache so its blobs can go.
        """
        removed: list[str] = []
        if build_cache:
            self.clear_build_cache()
        if keep is not None:
            wanted = {normalize_ref(k) if not DIGEST_RE.match(k) else k for k in keep}
            with self.locked():
                entries = self._read_index()
                kept = []
                for e in entries:
                    ref = (e.get("annotations") or {}).get(REF_ANNOTATION, "")
                    if ref in wanted or e["digest"] in wanted:
                        kept.append(e)
                    else:
                        removed.append(ref)
                self._write_index(kept)
        blobs, layers, freed = self.gc()
        return PruneResult(removed, blobs, layers, freed)

    def gc(self) -> tuple[int, int, int]:
        """Remove blobs and unpacked layers no tagged image references, and stale temp files."""
        with self.locked():
            live_blobs: set[str] = set()
            live_layers: set[str] = set()
            for digest in set(self.refs().values()):
                live_blobs.add(digest)
                with contextlib.suppress(ImageError):
                    manifest = self.manifest(digest, digest)
                    live_blobs.add(manifest.config.digest)
                    live_blobs.update(layer.digest for layer in manifest.layers)
                    live_layers.update(self.config(manifest, digest)["rootfs"]["diff_ids"])
            live_blobs.update(self._cache_blobs())
            n_blobs = n_layers = freed = 0
            for path in self.blobs.iterdir():
                if "sha256:" + path.name not in live_blobs:
                    freed += path.stat().st_size
                    path.unlink()
                    n_blobs += 1
            stale = time.time() - TMP_MAX_AGE_S
            for path in self.tmp.iterdir():
                with contextlib.suppress(OSError):
                    if path.lstat().st_mtime < stale:
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path)
                        else:
                            path.unlink()
            live_hex = {d.split(":", 1)[1] for d in live_layers}
            for path in self.layers.iterdir():
                if path.name not in live_hex:
                    shutil.rmtree(path, ignore_errors=True)
                    n_layers += 1
            return n_blobs, n_layers, freed

    def _cache_blobs(self) -> set[str]:
        """Blobs the build cache points at (kept by gc so cached builds stay fast)."""
        out: set[str] = set()
        cache = self.root / "buildcache"
        if cache.is_dir():
            for path in cache.glob("*.json"):
                with contextlib.suppress(OSError, ValueError):
                    out.update(
                        d
                        for d in json.loads(path.read_text()).get("blobs", [])
                        if isinstance(d, str)
                    )
        return out

    def clear_build_cache(self) -> None:
        shutil.rmtree(self.root / "buildcache", ignore_errors=True)
