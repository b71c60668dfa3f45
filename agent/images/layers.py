"""Layer tar streams: apply one into a directory, and make one from a directory.

`unpack_layer` turns a (gzip or plain) layer blob into an overlayfs lower
directory while checking both the blob digest and the diff_id: `.wh.name`
becomes an overlay whiteout (char device 0/0) and `.wh..wh..opq` becomes the
`trusted.overlay.opaque=y` xattr on its directory. Paths never escape the
destination (no `..`, no writing through a symlink). `write_layer` is the
reverse, for the builder: an overlay upper dir (or a list of sources) becomes
a gzip tar with overlay whiteouts turned back into `.wh.` entries.
Synchronous: callers run these in a thread.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agent.images.errors import CorruptBlob
from agent.images.refs import GZIP_LAYERS

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 20


class HashingReader:
    """A read-only file wrapper that hashes and counts what passes through."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _clean_name(name: str, where: str) -> str:
    norm = posixpath.normpath("/" + name).lstrip("/")
    if ".." in name.split("/"):
        raise CorruptBlob(f"{where}: tar entry {name!r} escapes the layer")
    return "" if norm == "." else norm


def _safe_dir(root: Path, rel: str, where: str) -> Path:
    """root/rel as a real directory, created if missing, never through a symlink."""
    path = root
    for part in [p for p in rel.split("/") if p]:
        path = path / part
        if path.is_symlink():
            raise CorruptBlob(f"{where}: tar entry goes through symlink {rel!r}")
        if not path.exists():
            path.mkdir(mode=0o755)
        elif not path.is_dir():
            raise CorruptBlob(f"{where}: {rel!r} is not a directory")
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _apply_member(tf: tarfile.TarFile, member: tarfile.TarInfo, root: Path, where: str) -> None:
    name = _clean_name(member.name, where)
    if not name:
        return
    parent_rel, base = posixpath.split(name)
    parent = _safe_dir(root, parent_rel, where)
    if base == OPAQUE:
        os.setxattr(parent, OPAQUE_XATTR, b"y")
        return
    if base.startswith(WHITEOUT):
        target = parent / base[len(WHITEOUT) :]
        _remove(target)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return
    target = parent / base
    if member.isdir() and target.is_dir() and not target.is_symlink():
        os.chmod(target, member.mode & 0o7777)
        os.chown(target, member.uid, member.gid)
        return
    _remove(target)
    if member.islnk():
        link = _clean_name(member.linkname, where)
        source = _safe_dir(root, posixpath.dirname(link), where) / posixpath.basename(link)
        os.link(source, target, follow_symlinks=False)
        return
    member.name = name
    tf.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def unpack_layer(
    blob: Path, media_type: str, dest: Path, *, digest: str, diff_id: str, where: str
) -> None:
    """Apply the layer blob into the empty directory `dest`; verify digest and diff_id."""
    with open(blob, "rb") as raw_file:
        raw = HashingReader(raw_file)
        gz = gzip.GzipFile(fileobj=raw, mode="rb") if media_type in GZIP_LAYERS else None  # type: ignore[call-overload]
        plain = HashingReader(gz if gz is not None else raw)  # type: ignore[arg-type]
        try:
            with tarfile.open(fileobj=plain, mode="r|") as tf:  # type: ignore[call-overload]
                for member in tf:
                    _apply_member(tf, member, dest, where)
            plain.drain()
            raw.drain()
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
            if raw.digest != digest and isinstance(
                exc, (tarfile.TarError, EOFError, gzip.BadGzipFile)
            ):
                raise CorruptBlob(
                    f"{where}: blob {digest[:19]} is not a valid layer ({exc})"
                ) from None
            raise CorruptBlob(f"{where}: cannot unpack layer {digest[:19]}: {exc}") from None
    if raw.digest != digest:
        raise CorruptBlob(f"{where}: blob {digest[:19]} has digest {raw.digest[:19]}: corrupt")
    if plain.digest != diff_id:
        raise CorruptBlob(
            f"{where}: layer {digest[:19]} has diff_id {plain.digest[:19]}, config says {diff_id[:19]}"
        )


@dataclass(frozen=True)
class LayerFile:
    digest: str  # of the gzip blob
    diff_id: str  # of the uncompressed tar
    size: int


def _tarinfo(tf: tarfile.TarFile, path: Path, arcname: str) -> tarfile.TarInfo:
    info = tf.gettarinfo(str(path), arcname)
    info.uname = info.gname = ""
    return info


def _add(
    tf: tarfile.TarFile, path: Path, arcname: str, *, owner: tuple[int, int] | None = None
) -> None:
    info = _tarinfo(tf, path, arcname)
    if owner is not None:
        info.uid, info.gid = owner
    if info.isreg():
        with open(path, "rb") as f:
            tf.addfile(info, f)
    else:
        tf.addfile(info)


def _walk(top: Path) -> Iterable[Path]:
    """Every path under top, parents before children, in sorted order."""
    entries = sorted(os.scandir(top), key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def _add_upper_entry(tf: tarfile.TarFile, path: Path, rel: str) -> None:
    st = path.lstat()
    if _is_whiteout(st):
        parent, base = posixpath.split(rel)
        info = tarfile.TarInfo(posixpath.join(parent, WHITEOUT + base))
        info.mode = 0o644
        tf.addfile(info)
        return
    _add(tf, path, rel)
    if stat.S_ISDIR(st.st_mode):
        try:
            opaque = os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False)
        except OSError:
            opaque = b""
        if opaque == b"y":
            info = tarfile.TarInfo(posixpath.join(rel, OPAQUE))
            info.mode = 0o644
            tf.addfile(info)


class _LayerWriter:
    """Opens out as gzip(tar) and hashes both streams."""

    def __init__(self, out: IO[bytes]) -> None:
        self.blob = HashingWriter(out)
        self.gz = gzip.GzipFile(fileobj=self.blob, mode="wb", mtime=0, compresslevel=6)  # type: ignore[call-overload]
        self.plain = HashingWriter(self.gz)  # type: ignore[arg-type]
        self.tf = tarfile.open(fileobj=self.plain, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]

    def close(self) -> LayerFile:
        self.tf.close()
        self.gz.close()
        return LayerFile(self.blob.digest, self.plain.digest, self.blob.size)


def write_upper_layer(upper: Path, out: IO[bytes]) -> LayerFile:
    """An overlay upper dir as a gzip layer, whiteouts as `.wh.` entries."""
    writer = _LayerWriter(out)
    for path in _walk(upper):
        _add_upper_entry(writer.tf, path, path.relative_to(upper).as_posix())
    return writer.close()


def write_dir_layer(root: Path, out: IO[bytes]) -> LayerFile:
    """A whole directory tree as a gzip layer (import of a root file system)."""
    writer = _LayerWriter(out)
    for path in _walk(root):
        _add(writer.tf, path, path.relative_to(root).as_posix())
    return writer.close()


def write_copy_layer(
    items: list[tuple[Path, str]], out: IO[bytes], *, owner: tuple[int, int] = (0, 0)
) -> LayerFile:
    """Sources copied to destinations ('/app/x'): dirs copy their content, like COPY."""
    writer = _LayerWriter(out)
    made: set[str] = set()

    def parents(dest: str) -> None:
        parts = [p for p in dest.split("/") if p][:-1]
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            if rel not in made:
                made.add(rel)
                info = tarfile.TarInfo(rel)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                writer.tf.addfile(info)

    for src, dest in items:
        dest_rel = dest.strip("/")
        parents(dest_rel + "/x" if src.is_dir() and not src.is_symlink() else dest_rel)
        if src.is_dir() and not src.is_symlink():
            if dest_rel:
                made.add(dest_rel)
            for path in _walk(src):
                rel = posixpath.join(dest_rel, path.relative_to(src).as_posix())
                _add(writer.tf, path, rel, owner=owner)
        else:
            _add(writer.tf, src, dest_rel, owner=owner)
    return writer.close()


def tree_hash(paths: Iterable[Path]) -> str:
    """Content hash of files and trees (names, modes, contents, link targets)."""
    h = hashlib.sha256()
    for top in paths:
        todo: list[Path] = [top]
        if top.is_dir() and not top.is_symlink():
            todo += list(_walk(top))
        for path in todo:
            st = path.lstat()
            rel = path.relative_to(top.parent).as_posix()
            h.update(f"{rel}\0{st.st_mode}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
            h.update(b"\0")
    return "sha256:" + h.hexdigest()
