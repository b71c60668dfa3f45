"""The one door to images for the agent and the CLI.

`Images(root)` holds a store, a registry client and a builder over the same
directory. `resolve(ref)` is what the agent calls when an assignment names an
image: the image's config and its unpacked layer dirs, pulled first if the
node lacks it (only refs that name a registry can be pulled).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from agent.images.build import Builder, BuildResult
from agent.images.errors import NotFound
from agent.images.refs import parse_ref
from agent.images.registry import Credentials, Progress, RegistryClient
from agent.images.store import Image, ImageInfo, ImageStore, PruneResult


class Images:
    def __init__(
        self,
        root: Path,
        *,
        credentials: dict[str, Credentials] | None = None,
        insecure: frozenset[str] = frozenset(),
    ) -> None:
        self.store = ImageStore(root)
        self.client = RegistryClient(self.store, credentials=credentials, insecure=insecure)
        self.builder = Builder(self.store, pull=self._pull_for_build)

    async def __aenter__(self) -> Images:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def _pull_for_build(self, ref: str) -> Any:
        if parse_ref(ref).registry:
            return await self.client.pull(ref)
        return None

    async def resolve(
        self, ref: str, *, pull: bool = True, progress: Progress | None = None
    ) -> Image:
        """Config + layer dirs (lowest first) of `ref`, pulling it when missing and `pull`."""
        if self.store.lookup(ref) is None:
            if not pull or not parse_ref(ref).registry:
                raise NotFound(f"{ref}: no such image in the local store")
            await self.client.pull(ref, progress=progress)
        return await self.store.resolve(ref)

    async def pull(self, ref: str, *, progress: Progress | None = None) -> str:
        return await self.client.pull(ref, progress=progress)

    async def push(
        self, ref: str, *, source: str | None = None, progress: Progress | None = None
    ) -> str:
        return await self.client.push(ref, source=source, progress=progress)

    async def build(
        self, context: Path, tag: str, *, gantryfile: Path | None = None
    ) -> BuildResult:
        return await self.builder.build(context, tag, gantryfile=gantryfile)

    async def import_rootfs(
        self, source: Path, tag: str, *, config: dict[str, Any] | None = None
    ) -> str:
        return await self.builder.import_rootfs(source, tag, config=config)

    def list(self) -> list[ImageInfo]:
        return self.store.images()

    def remove(self, ref: str, *, in_use: Collection[str] = ()) -> None:
        self.store.remove(ref, in_use=in_use)

    def prune(
        self, *, keep: Collection[str] | None = None, build_cache: bool = False
    ) -> PruneResult:
        return self.store.prune(keep=keep, build_cache=build_cache)
