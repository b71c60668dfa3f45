"""A client of the OCI distribution API (pull and push) over aiohttp.

Speaks to any registry: anonymous, HTTP Basic, or Bearer tokens fetched from
the realm a 401's WWW-Authenticate challenge names; OCI and Docker v2
manifests; indexes resolved to linux/amd64. Blobs stream into temp files in
the store's tmp/ with their digest checked; only when every blob of an image
is in hand and verified does anything enter the store, so a failed pull
leaves it unchanged. Two pulls that need the same blob at once share one
download. http:// is used for loopback registries, https:// otherwise.
Every failure is an ImageError naming the ref and the problem.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from agent.images.errors import (
    AuthError,
    BadManifest,
    CorruptBlob,
    ImageError,
    NotFound,
    RegistryUnavailable,
)
from agent.images.refs import (
    ACCEPT,
    INDEX_TYPES,
    Ref,
    media_type_of,
    parse_challenge,
    parse_config,
    parse_json,
    parse_manifest,
    parse_ref,
    pick_platform,
    registry_base,
    sha256_digest,
)
from agent.images.store import ImageStore

Progress = Callable[[str, int, int], None]  # (digest, bytes done, bytes total)
MAX_MANIFEST = 4 << 20
CHUNK_SIZE = 32 << 20
WRITE_BATCH = 1 << 20


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _registry_error(body: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError, IndexError, KeyError):
        err = json.loads(body)["errors"][0]
        return f"{err.get('code')}: {err.get('message')}"
    return body[:120].decode(errors="replace").strip() or "no details"


class RegistryClient:
    """Pull and push images between registries and one local ImageStore."""

    def __init__(
        self,
        store: ImageStore,
        *,
        credentials: dict[str, Credentials] | None = None,
        insecure: frozenset[str] = frozenset(),
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.store = store
        self.chunk_size = chunk_size  # blobs larger than this are uploaded in PATCH chunks
        self.credentials = credentials or {}
        self.insecure = insecure  # registries spoken to over plain HTTP
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str], str] = {}
        self._inflight: dict[str, asyncio.Task[Path]] = {}
        self._waiters: collections.Counter[str] = collections.Counter()  # pulls holding a temp blob
        self.blob_downloads: collections.Counter[str] = collections.Counter()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Path):
                result.unlink(missing_ok=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # -- requests and auth ---------------------------------------------------
    def _auth_header(self, ref: Ref, scope: str) -> dict[str, str]:
        token = self._tokens.get((ref.registry, scope))
        if token:
            return {"Authorization": token}
        return {}

    async def _authenticate(self, ref: Ref, scope: str, challenge: str) -> None:
        scheme, params = parse_challenge(challenge)
        creds = self.credentials.get(ref.registry)
        if scheme == "basic":
            if creds is None:
                raise AuthError(f"{ref}: registry {ref.registry} wants a username and password")
            self._tokens[(ref.registry, scope)] = creds.basic()
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(
                f"{ref}: registry {ref.registry} sent an unsupported auth challenge {challenge!r}"
            )
        query = {"scope": scope}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"Authorization": creds.basic()} if creds else {}
        url = params["realm"] + "?" + urlencode(query)
        try:
            async with self._http().get(url, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise AuthError(
                        f"{ref}: token service {params['realm']} refused: {resp.status} {_registry_error(body)}"
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryUnavailable(
                f"{ref}: token service {params['realm']} unreachable ({exc})"
            ) from None
        doc = parse_json(body, f"{ref}: token response")
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise AuthError(f"{ref}: token service {params['realm']} returned no token")
        self._tokens[(ref.registry, scope)] = f"Bearer {token}"

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        ref: Ref,
        url: str,
        *,
        push: bool = False,
        headers: dict[str, str] | None = None,
        body: Callable[[], Any] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request with auth; on 401 authenticate once and retry."""
        if not url.startswith("http"):
            url = f"{registry_base(ref.registry, self.insecure)}/v2/{ref.repo}/{url}"
        scope = f"repository:{ref.repo}:{'pull,push' if push else 'pull'}"
        yielded = False
        for attempt in range(2):
            hdrs = {**(headers or {}), **self._auth_header(ref, scope)}
            try:
                async with self._http().request(
                    method, url, headers=hdrs, data=body() if body else None, allow_redirects=True
                ) as resp:
                    if resp.status == 401 and attempt == 0 and "WWW-Authenticate" in resp.headers:
                        challenge = resp.headers["WWW-Authenticate"]
                    elif resp.status == 401:
                        raise AuthError(
                            f"{ref}: registry {ref.registry} refused access ({_registry_error(await resp.read())})"
                        )
                    elif resp.status >= 500:
                        raise RegistryUnavailable(
                            f"{ref}: registry {ref.registry} failed: {resp.status} {_registry_error(await resp.read())}"
                        )
                    else:
                        yielded = True
                        yield resp
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if yielded and not isinstance(exc, (aiohttp.ClientError, TimeoutError)):
                    raise  # the caller's own (local file) error, not the registry's
                raise RegistryUnavailable(
                    f"{ref}: registry {ref.registry} unreachable ({type(exc).__name__}: {exc})"
                ) from None
            await self._authenticate(ref, scope, challenge)

    # -- pull ----------------------------------------------------------------
    async def _get_manifest(self, ref: Ref, reference: str) -> tuple[bytes, str, str]:
        async with self._request(
            "GET", ref, f"manifests/{reference}", headers={"Accept": ACCEPT}
        ) as resp:
            body = await resp.content.read(MAX_MANIFEST + 1)
            if resp.status == 404:
                raise NotFound(
                    f"{ref}: not found in registry {ref.registry} ({_registry_error(body)})"
                )
            if resp.status != 200:
                raise ImageError(
                    f"{ref}: registry {ref.registry} answered {resp.status} for the manifest"
                )
            if len(body) > MAX_MANIFEST:
                raise BadManifest(f"{ref}: manifest larger than {MAX_MANIFEST} bytes")
            header_type = resp.headers.get("Content-Type")
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise CorruptBlob(f"{ref}: manifest {reference[:19]} has digest {digest[:19]}: corrupt")
        return body, media_type_of(parse_json(body, f"{ref}: manifest"), header_type), digest

    def _temp_name(self, digest: str) -> Path:
        return (
            self.store.tmp
            / f"dl-{digest.split(':', 1)[1][:16]}-{os.getpid()}-{secrets.token_hex(4)}"
        )

    async def _download(self, ref: Ref, digest: str, size: int, progress: Progress | None) -> Path:
        tmp = self._temp_name(digest)
        self.blob_downloads[digest] += 1
        h = hashlib.sha256()
        done = 0
        try:
            async with self._request("GET", ref, f"blobs/{digest}") as resp:
                if resp.status == 404:
                    raise NotFound(f"{ref}: blob {digest[:19]} missing in registry {ref.registry}")
                if resp.status != 200:
                    raise ImageError(
                        f"{ref}: registry {ref.registry} answered {resp.status} for blob {digest[:19]}"
                    )
                f = await asyncio.to_thread(open, tmp, "wb")
                with f:
                    buf = bytearray()
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        h.update(chunk)
                        done += len(chunk)
                        buf += chunk
                        if done > size:
                            raise CorruptBlob(
                                f"{ref}: blob {digest[:19]} is larger than its {size} bytes: corrupt, not stored"
                            )
                        if len(buf) >= WRITE_BATCH:
                            await asyncio.to_thread(f.write, bytes(buf))
                            buf.clear()
                            if progress:
                                progress(digest, done, size)
                    await asyncio.to_thread(f.write, bytes(buf))
            if progress:
                progress(digest, done, size)
            if "sha256:" + h.hexdigest() != digest or done != size:
                raise CorruptBlob(
                    f"{ref}: blob {digest[:19]} from {ref.registry} does not match its digest: corrupt, not stored"
                )
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ImageError(
                f"{ref}: cannot write blob {digest[:19]} to {self.store.tmp}: {exc.strerror or exc}"
            ) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    async def _fetch(
        self, ref: Ref, digest: str, size: int, progress: Progress | None
    ) -> Path | None:
        """A verified temp file holding the blob, or None if the store has it. Shared per digest."""
        if self.store.has_blob(digest):
            return None
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.create_task(
                self._download(ref, digest, size, progress), name=f"pull-blob-{digest[7:19]}"
            )
            self._inflight[digest] = task
        return await asyncio.shield(task)

    def _commit(self, digest: str, tmp: Path | None) -> None:
        if tmp is None or self.store.has_blob(digest):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            return
        if tmp.exists():
            os.replace(tmp, self.store.blob_path(digest))
        elif not self.store.has_blob(digest):
            raise ImageError(f"blob {digest[:19]} vanished before it was stored")

    async def pull(self, ref_text: str, *, progress: Progress | None = None) -> str:
        """Fetch an image into the store and tag it; returns the manifest digest."""
        ref = parse_ref(ref_text)
        if not ref.registry:
            raise ImageError(
                f"{ref_text}: names no registry (use host:port/{ref.repo}:{ref.tag or 'latest'})"
            )
        body, media_type, digest = await self._get_manifest(ref, ref.reference)
        if media_type in INDEX_TYPES:
            chosen = pick_platform(body, f"{ref}: index")
            body, media_type, digest = await self._get_manifest(ref, chosen)
        manifest = parse_manifest(body, f"{ref}: manifest", media_type)
        blobs = [
            (manifest.config.digest, manifest.config.size),
            *((x.digest, x.size) for x in manifest.layers),
        ]
        unique = list(dict.fromkeys(blobs))
        held = [d for d, _ in unique if not self.store.has_blob(d)]
        self._waiters.update(held)
        try:
            results = await asyncio.gather(
                *(self._fetch(ref, d, s, progress) for d, s in unique), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            temps = {d: r for (d, _), r in zip(unique, results, strict=True) if isinstance(r, Path)}
            config_path = temps.get(manifest.config.digest) or self.store.blob_path(
                manifest.config.digest
            )
            config_bytes = await asyncio.to_thread(config_path.read_bytes)
            if sha256_digest(config_bytes) != manifest.config.digest:
                raise CorruptBlob(f"{ref}: config blob {manifest.config.digest[:19]} is corrupt")
            parse_config(config_bytes, f"{ref}: config", len(manifest.layers))
            for d, t in temps.items():
                self._commit(d, t)
            self.store.put_bytes(body)
            self.store.tag(str(ref), digest)
            return digest
        finally:
            self._release(ref, held)

    def _release(self, ref: Ref, held: list[str]) -> None:
        """Drop this pull's claim on its temp blobs; the last claimant removes uncommitted ones."""
        for d in held:
            self._waiters[d] -= 1
            if self._waiters[d] <= 0:
                del self._waiters[d]
                task = self._inflight.pop(d, None)
                if task is None:
                    continue
                if not task.done():
                    task.cancel()  # nobody wants it any more: _download removes its temp file
                elif not task.cancelled() and task.exception() is None:
                    task.result().unlink(missing_ok=True)  # gone already if it was committed

    async def remote_digest(self, ref_text: str) -> str | None:
        """The digest the registry holds for `ref_text`, or None if it has no such tag."""
        ref = parse_ref(ref_text)
        headers = {"Accept": ACCEPT}
        async with self._request(
            "HEAD", ref, f"manifests/{ref.reference}", headers=headers
        ) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise ImageError(
                    f"{ref}: registry {ref.registry} answered {resp.status} for the manifest"
                )
            return resp.headers.get("Docker-Content-Digest") or ref.digest or "unknown"

    # -- push ----------------------------------------------------------------
    async def _blob_exists(self, ref: Ref, digest: str) -> bool:
        async with self._request("HEAD", ref, f"blobs/{digest}", push=True) as resp:
            return resp.status == 200

    async def _upload(
        self, ref: Ref, digest: str, path: Path, size: int, progress: Progress | None
    ) -> None:
        async with self._request("POST", ref, "blobs/uploads/", push=True) as resp:
            if resp.status != 202 or "Location" not in resp.headers:
                raise ImageError(
                    f"{ref}: registry {ref.registry} refused an upload: {resp.status} {_registry_error(await resp.read())}"
                )
            location = urljoin(
                f"{registry_base(ref.registry, self.insecure)}/v2/{ref.repo}/blobs/uploads/",
                resp.headers["Location"],
            )
        if size > self.chunk_size:
            location = await self._upload_chunks(ref, location, digest, path, size, progress)
            size = 0
        sep = "&" if "?" in location else "?"

        def body() -> Any:
            return _file_chunks(path, digest, size, progress) if size else b""

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with self._request(
            "PUT", ref, f"{location}{sep}digest={digest}", push=True, headers=headers, body=body
        ) as resp:
            if resp.status not in (201, 204):
                raise ImageError(
                    f"{ref}: upload of blob {digest[:19]} failed: {resp.status} {_registry_error(await resp.read())}"
                )

    async def _upload_chunks(
        self, ref: Ref, location: str, digest: str, path: Path, size: int, progress: Progress | None
    ) -> str:
        """PATCH the blob in chunks; returns the Location for the closing PUT."""
        offset = 0
        f = await asyncio.to_thread(open, path, "rb")
        with f:
            while offset < size:
                chunk = await asyncio.to_thread(f.read, self.chunk_size)
                end = offset + len(chunk) - 1
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(chunk)),
                }
                async with self._request(
                    "PATCH", ref, location, push=True, headers=headers, body=_const(chunk)
                ) as resp:
                    if resp.status != 202 or "Location" not in resp.headers:
                        raise ImageError(
                            f"{ref}: chunk {offset}-{end} of blob {digest[:19]} refused: {resp.status} {_registry_error(await resp.read())}"
                        )
                    location = urljoin(location, resp.headers["Location"])
                offset = end + 1
                if progress:
                    progress(digest, offset, size)
        return location

    async def push(
        self, ref_text: str, *, source: str | None = None, progress: Progress | None = None
    ) -> str:
        """Push a local image (by `source`, default the same ref) to the registry `ref_text` names."""
        ref = parse_ref(ref_text)
        if not ref.registry:
            raise ImageError(
                f"{ref_text}: names no registry (use host:port/{ref.repo}:{ref.tag or 'latest'})"
            )
        digest, manifest, _ = await asyncio.to_thread(self.store.load, source or ref_text)
        for blob in (*manifest.layers, manifest.config):
            if not await self._blob_exists(ref, blob.digest):
                await self._upload(
                    ref, blob.digest, self.store.blob_path(blob.digest), blob.size, progress
                )
        body = await asyncio.to_thread(self.store.read_blob, digest, str(ref))
        headers = {"Content-Type": manifest.media_type}
        async with self._request(
            "PUT",
            ref,
            f"manifests/{ref.tag or digest}",
            push=True,
            headers=headers,
            body=lambda: body,
        ) as resp:
            if resp.status not in (200, 201):
                raise BadManifest(
                    f"{ref}: registry {ref.registry} refused the manifest: {resp.status} {_registry_error(await resp.read())}"
                )
        return digest


async def _file_chunks(
    path: Path, digest: str, size: int, progress: Progress | None
) -> AsyncIterator[bytes]:
    done = 0
    f = await asyncio.to_thread(open, path, "rb")
    with f:
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            done += len(chunk)
            if progress:
                progress(digest, done, size)
            yield chunk


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data
