"""Image test helpers: store snapshots, read-only overlay mounts, one-line errors."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """Every file, dir and link under a store (tmp/ and the lock aside), with content hashes."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts[:1] in (("tmp",), ("runc",)):
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(rel_dir / name)
            if rel in (".lock", "tmp", "runc"):
                continue
            if path.is_file() and not path.is_symlink():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "link" if path.is_symlink() else "dir"
    return out


@contextlib.contextmanager
def overlay(layer_dirs: tuple[Path, ...], work: Path) -> Iterator[Path]:
    """Mount the layers (lowest first) read-only as one overlay; yields the mount point."""
    merged = work / "merged"
    merged.mkdir(parents=True)
    lower = ":".join(str(p) for p in reversed(layer_dirs))
    if len(layer_dirs) == 1:
        (work / "empty").mkdir()
        lower += ":" + str(work / "empty")  # overlay wants two lowers when there is no upper
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged)], check=True
    )
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=False)


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    return msg


def tar_bytes(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """A layer tar from (kind, name, data): kind is 'file', 'dir', 'symlink' (data = target) or 'link'."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif kind in ("symlink", "link"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(data)
                tf.addfile(info)
            else:
                raw = data.encode() if isinstance(data, str) else data
                info.size, info.mode = len(raw), 0o644
                tf.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def put_image(
    store: object, ref: str, layers: list[bytes], config: dict[str, object] | None = None
) -> str:
    """Write an image made of plain (uncompressed) layer tars straight into a store; returns its digest."""
    import json

    from agent.images.refs import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256_digest
    from agent.images.store import ImageStore

    assert isinstance(store, ImageStore)
    descs = [
        {"mediaType": OCI_LAYER, "digest": store.put_bytes(raw), "size": len(raw)} for raw in layers
    ]
    cfg = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config or {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw) for raw in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": store.put_bytes(cfg), "size": len(cfg)},
            "layers": descs,
        }
    ).encode()
    digest = store.put_bytes(manifest)
    store.tag(ref, digest)
    return digest
