"""Pure helpers for image references, digests, media types and manifests.

Parses `[registry/]repo[:tag][@sha256:...]`, checks digests, picks the
linux/amd64 entry of an index, parses a registry's WWW-Authenticate
challenge and validates manifests. No I/O here.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from agent.images.errors import BadManifest, ImageError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
GZIP_LAYERS = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP)
PLAIN_LAYERS = (OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar")
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
LOOPBACK_HOSTS = ("localhost", "127.", "[::1]")


@dataclass(frozen=True)
class Ref:
    """A parsed image reference. `registry` is '' for a local-only name."""

    registry: str
    repo: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repo}" if self.registry else self.repo

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or 'latest'}"

    def with_registry(self, registry: str) -> Ref:
        return Ref(registry, self.repo, self.tag, self.digest)


def parse_ref(text: str) -> Ref:
    """Parse 'host:port/repo:tag', 'repo:tag', 'repo@sha256:...'; tag defaults to latest."""
    raw = text.strip()
    if not raw:
        raise ImageError("empty image reference")
    digest = None
    if "@" in raw:
        raw, digest = raw.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise ImageError(f"{text}: bad digest {digest!r} (want sha256:<64 hex>)")
    registry = ""
    first, _, rest = raw.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, raw = first, rest
    tag = None
    if ":" in raw.rsplit("/", 1)[-1]:
        raw, tag = raw.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise ImageError(f"{text}: bad tag {tag!r}")
    if not _REPO_RE.match(raw):
        raise ImageError(f"{text}: bad repository name {raw!r} (lower case, digits, . _ - /)")
    if tag is None and digest is None:
        tag = "latest"
    return Ref(registry, raw, tag, digest)


def is_loopback(registry: str) -> bool:
    return registry.startswith(LOOPBACK_HOSTS)


def registry_base(registry: str, insecure: frozenset[str] = frozenset()) -> str:
    """https://, except for loopback registries and those named insecure (plain HTTP)."""
    scheme = "http" if is_loopback(registry) or registry in insecure else "https"
    return f"{scheme}://{registry}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str, where: str) -> str:
    if not DIGEST_RE.match(digest):
        raise BadManifest(f"{where}: bad digest {digest!r}")
    return digest


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadManifest(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadManifest(f"{where}: expected a JSON object")
    return doc


def media_type_of(doc: dict[str, Any], header: str | None) -> str:
    mt = doc.get("mediaType") or (header or "").split(";")[0].strip()
    if not mt and "manifests" in doc:
        return OCI_INDEX
    if not mt and "layers" in doc:
        return OCI_MANIFEST
    return str(mt)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _descriptor(d: Any, where: str) -> Descriptor:
    if not isinstance(d, dict):
        raise BadManifest(f"{where}: descriptor is not an object")
    size = d.get("size")
    if not isinstance(size, int) or size < 0:
        raise BadManifest(f"{where}: descriptor has no valid size")
    return Descriptor(str(d.get("mediaType", "")), check_digest(str(d.get("digest")), where), size)


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def parse_manifest(data: bytes, where: str, header_type: str | None = None) -> Manifest:
    """Validate an image manifest (OCI or Docker v2 schema 2)."""
    doc = parse_json(data, where)
    mt = media_type_of(doc, header_type)
    if mt not in MANIFEST_TYPES:
        raise BadManifest(f"{where}: unsupported manifest media type {mt!r}")
    if doc.get("schemaVersion") != 2:
        raise BadManifest(f"{where}: schemaVersion must be 2")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise BadManifest(f"{where}: manifest has no layers list")
    config = _descriptor(doc.get("config"), f"{where} config")
    parsed = tuple(_descriptor(x, f"{where} layer {i}") for i, x in enumerate(layers))
    for i, layer in enumerate(parsed):
        if layer.media_type not in GZIP_LAYERS + PLAIN_LAYERS:
            raise BadManifest(f"{where} layer {i}: unsupported media type {layer.media_type!r}")
    return Manifest(mt, config, parsed)


def pick_platform(data: bytes, where: str, *, os: str = "linux", arch: str = "amd64") -> str:
    """From an index / manifest list, the digest of the os/arch image manifest."""
    doc = parse_json(data, where)
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise BadManifest(f"{where}: index has no manifests list")
    seen = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        plat = entry.get("platform") or {}
        seen.append(f"{plat.get('os')}/{plat.get('architecture')}")
        if plat.get("os") == os and plat.get("architecture") == arch:
            return check_digest(str(entry.get("digest")), where)
    raise NotFoundPlatform(
        f"{where}: no {os}/{arch} image in index (has {', '.join(seen) or 'none'})"
    )


class NotFoundPlatform(BadManifest):
    pass


def parse_config(data: bytes, where: str, n_layers: int) -> dict[str, Any]:
    doc = parse_json(data, where)
    diff_ids = (doc.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != n_layers:
        raise BadManifest(f"{where}: rootfs.diff_ids does not match the {n_layers} layer(s)")
    for d in diff_ids:
        check_digest(str(d), where)
    return doc


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="...",scope="..."' -> ('bearer', {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params
