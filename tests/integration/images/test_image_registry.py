"""Push and pull against a real registry (Debian's docker-registry), and skopeo/umoci interop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from imgkit import one_line, overlay, snapshot

from agent.images.errors import BadManifest, CorruptBlob, NotFound, RegistryUnavailable
from agent.images.refs import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from agent.images.service import Images
from gantry import procs

APP = 'FROM busybox:latest\nENV A=1\nCOPY app.txt /app/app.txt\nCMD ["/bin/cat", "/app/app.txt"]\n'


async def _build_app(images: Images, tmp_path: Path, ref: str, text: str = "hello\n") -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "app.txt").write_text(text)
    (ctx / "Gantryfile").write_text(APP)
    return (await images.build(ctx, ref)).digest


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, check=False, timeout=120
    )


async def test_push_then_pull_into_empty_store_is_byte_identical(
    images: Images, busybox: str, registry: str, tmp_path: Path
) -> None:
    ref = f"{registry}/app:v1"
    digest = await _build_app(images, tmp_path, ref)
    assert await images.push(ref) == digest
    async with Images(tmp_path / "other") as fresh:
        assert fresh.list() == []
        assert await fresh.pull(ref) == digest
        _, manifest, _ = fresh.store.load(ref)
        for blob in (digest, manifest.config.digest, *(x.digest for x in manifest.layers)):
            assert (
                fresh.store.blob_path(blob).read_bytes()
                == images.store.blob_path(blob).read_bytes()
            )
        image = await fresh.resolve(ref)
        assert image.digest == digest
        assert image.argv == ["/bin/cat", "/app/app.txt"] and "A=1" in image.env
        assert (image.layer_dirs[-1] / "app" / "app.txt").read_text() == "hello\n"
        # A warm pull fetches nothing.
        before = sum(fresh.client.blob_downloads.values())
        assert await fresh.pull(ref) == digest
        assert sum(fresh.client.blob_downloads.values()) == before


async def test_skopeo_reads_what_gantry_pushed(
    images: Images, busybox: str, registry: str, tmp_path: Path
) -> None:
    ref = f"{registry}/app:v1"
    digest = await _build_app(images, tmp_path, ref)
    await images.push(ref)
    inspect = await asyncio.to_thread(_skopeo, "inspect", "--tls-verify=false", f"docker://{ref}")
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)
    assert info["Digest"] == digest and len(info["Layers"]) == 2
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    dest = tmp_path / "oci-copy"
    copy = await asyncio.to_thread(
        _skopeo, "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:v1"
    )
    assert copy.returncode == 0, copy.stderr
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    # umoci, too, can unpack it into a runtime bundle with the file in place.
    bundle = tmp_path / "bundle"
    unpack = await asyncio.to_thread(
        subprocess.run,
        ["umoci", "unpack", "--image", f"{dest}:v1", str(bundle)],
        capture_output=True,
        text=True,
    )
    assert unpack.returncode == 0, unpack.stderr
    assert (bundle / "rootfs" / "app" / "app.txt").read_text() == "hello\n"


def _umoci(*args: str) -> None:
    result = subprocess.run(
        ["umoci", *args], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"umoci {' '.join(args)}: {result.stderr}"


async def test_umoci_image_pushed_by_skopeo_is_pulled_unpacked_and_run(
    images: Images, busybox_rootfs: Path, registry: str, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    _umoci("init", "--layout", str(layout))
    _umoci("new", "--image", f"{layout}:base")
    bundle = tmp_path / "bundle"
    _umoci("unpack", "--image", f"{layout}:base", str(bundle))
    shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True, dirs_exist_ok=True)
    (bundle / "rootfs" / "etc" / "gone.txt").write_text("lower\n")
    (bundle / "rootfs" / "data").mkdir()
    (bundle / "rootfs" / "data" / "old.txt").write_text("old\n")
    _umoci("repack", "--image", f"{layout}:base", str(bundle))
    # Second layer: delete a file (umoci writes a .wh. whiteout) and add one.
    (bundle / "rootfs" / "etc" / "gone.txt").unlink()
    (bundle / "rootfs" / "hello.txt").write_text("from umoci\n")
    _umoci("repack", "--image", f"{layout}:base", str(bundle))
    _umoci(
        "config",
        "--image",
        f"{layout}:base",
        "--config.cmd",
        "/bin/cat",
        "--config.cmd",
        "/hello.txt",
    )
    ref = f"{registry}/umoci:v1"
    copy = await asyncio.to_thread(
        _skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:base", f"docker://{ref}"
    )
    assert copy.returncode == 0, copy.stderr

    image = await images.resolve(ref)  # pulls: the store lacked it
    assert image.argv == ["/bin/cat", "/hello.txt"]
    with overlay(image.layer_dirs, tmp_path / "mnt") as root:
        assert (root / "hello.txt").read_text() == "from umoci\n"
        assert (root / "data" / "old.txt").read_text() == "old\n"
        assert not (root / "etc" / "gone.txt").exists()
        assert (root / "bin" / "busybox").stat().st_size == os.stat("/bin/busybox").st_size
    # And it runs: a build step executes in a container made of it.
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Gantryfile").write_text(
        f"FROM {ref}\nRUN cat /hello.txt > /seen && test ! -e /etc/gone.txt && busybox true\n"
    )
    built = await images.build(ctx, "ran:v1")
    top = (await images.resolve("ran:v1")).layer_dirs[-1]
    assert (top / "seen").read_text() == "from umoci\n", built


async def test_concurrent_pulls_download_a_shared_layer_once(
    images: Images, busybox: str, registry: str, tmp_path: Path
) -> None:
    await _build_app(images, tmp_path, f"{registry}/app:v1", "one\n")
    await _build_app(images, tmp_path, f"{registry}/app:v2", "two\n")
    await images.push(f"{registry}/app:v1")
    await images.push(f"{registry}/app:v2")
    base_layer = images.store.load(f"{registry}/app:v1")[1].layers[0].digest
    async with Images(tmp_path / "other") as fresh:
        await asyncio.gather(fresh.pull(f"{registry}/app:v1"), fresh.pull(f"{registry}/app:v2"))
        assert fresh.client.blob_downloads[base_layer] == 1
        assert fresh.store.has_blob(base_layer)
        one = await fresh.resolve(f"{registry}/app:v1")
        two = await fresh.resolve(f"{registry}/app:v2")
        assert one.layer_dirs[0] == two.layer_dirs[0]  # unpacked once, shared


def _registry_blob(data_dir: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return (
        data_dir
        / "registry"
        / "docker"
        / "registry"
        / "v2"
        / "blobs"
        / "sha256"
        / hexd[:2]
        / hexd
        / "data"
    )


async def test_corrupt_blob_in_registry_is_refused_and_never_stored(
    images: Images, busybox: str, tmp_path: Path
) -> None:
    svc = procs.start_registry(tmp_path / "reg")
    try:
        registry = svc.extra["endpoint"]
        ref = f"{registry}/app:v1"
        await _build_app(images, tmp_path, ref)
        await images.push(ref)
        layer = images.store.load(ref)[1].layers[-1].digest
        blob = _registry_blob(tmp_path / "reg", layer)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        async with Images(tmp_path / "other") as fresh:
            before = snapshot(fresh.store.root)
            with pytest.raises(CorruptBlob) as exc:
                await fresh.resolve(ref)
            msg = one_line(exc.value)
            assert ref in msg and layer[:19] in msg and "corrupt" in msg
            assert snapshot(fresh.store.root) == before
            assert not any(p.name.startswith("dl-") for p in fresh.store.tmp.iterdir())
        # A good image pulled at the same time, sharing the base layer, is unharmed.
        good = f"{registry}/app:good"
        await _build_app(images, tmp_path, good, "good\n")
        await images.push(good)
        async with Images(tmp_path / "third") as third:
            results = await asyncio.gather(
                third.pull(ref), third.pull(good), return_exceptions=True
            )
            assert isinstance(results[0], CorruptBlob) and results[1] == images.store.lookup(good)
            # (How often the shared base is downloaded depends on which pull ends
            # first; test_concurrent_pulls_download_a_shared_layer_once covers that.)
            assert (await third.resolve(good)).digest == results[1]
            assert third.store.lookup(ref) is None
            assert not any(p.name.startswith("dl-") for p in third.store.tmp.iterdir())
    finally:
        svc.stop()


async def test_corrupt_blob_in_local_store_is_refused(
    images: Images, busybox: str, tmp_path: Path
) -> None:
    digest = await _build_app(images, tmp_path, "app:v1")
    layer = images.store.load("app:v1")[1].layers[-1]
    path = images.store.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBlob) as exc:
        await images.resolve("app:v1")
    assert layer.digest[:19] in one_line(exc.value)
    assert not images.store.layer_dir(
        images.store.load("app:v1")[2]["rootfs"]["diff_ids"][-1]
    ).exists()
    config = images.store.load("app:v1")[1].config.digest
    images.store.blob_path(config).write_bytes(b'{"tampered": true}')
    with pytest.raises(CorruptBlob, match="corrupt"):
        images.store.load("app:v1")
    assert digest


async def test_missing_tag_down_registry_and_bad_manifest_leave_store_unchanged(
    images: Images, busybox: str, registry: str, tmp_path: Path
) -> None:
    before = snapshot(images.store.root)
    with pytest.raises(NotFound) as exc:
        await images.pull(f"{registry}/nosuch:v1")
    assert f"{registry}/nosuch:v1" in one_line(exc.value)
    assert snapshot(images.store.root) == before
    await _build_app(images, tmp_path, f"{registry}/app:v1")
    await images.push(f"{registry}/app:v1")
    before = snapshot(images.store.root)
    with pytest.raises(NotFound) as exc:
        await images.pull(f"{registry}/app:nosuchtag")
    assert "app:nosuchtag" in one_line(exc.value)
    dead = f"127.0.0.1:{procs.free_port()}"
    with pytest.raises(RegistryUnavailable) as exc2:
        await images.pull(f"{dead}/app:v1")
    assert dead in one_line(exc2.value)
    with pytest.raises(NotFound):
        await images.resolve("local-only:v9")
    assert snapshot(images.store.root) == before

    # Manifests the registry accepts but Gantry must refuse.
    _, manifest, _ = images.store.load(f"{registry}/app:v1")
    good = json.loads(images.store.read_blob(images.store.lookup(f"{registry}/app:v1") or "", "t"))
    weird = dict(good, layers=[dict(good["layers"][0], mediaType="application/x-not-a-layer")])
    short_config = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cfg_digest = "sha256:" + hashlib.sha256(short_config).hexdigest()
    wrong_ids = dict(
        good, config={"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(short_config)}
    )
    import aiohttp

    async with aiohttp.ClientSession() as http:
        base = f"http://{registry}/v2/app"
        async with http.post(f"{base}/blobs/uploads/") as resp:
            loc = resp.headers["Location"]
        sep = "&" if "?" in loc else "?"
        async with http.put(f"{loc}{sep}digest={cfg_digest}", data=short_config) as resp:
            assert resp.status == 201
        for tag, doc in (("weird", weird), ("wrongids", wrong_ids)):
            body = json.dumps(doc).encode()
            async with http.put(
                f"{base}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST}
            ) as resp:
                assert resp.status == 201, await resp.text()
    before = snapshot(images.store.root)
    with pytest.raises(BadManifest) as exc3:
        await images.pull(f"{registry}/app:weird")
    assert "app:weird" in one_line(exc3.value) and "application/x-not-a-layer" in str(exc3.value)
    with pytest.raises(BadManifest) as exc4:
        await images.pull(f"{registry}/app:wrongids")
    assert "diff_ids" in one_line(exc4.value)
    assert snapshot(images.store.root) == before
    assert OCI_LAYER_GZIP == manifest.layers[0].media_type


async def test_docker_v2_manifest_and_index_pick_linux_amd64(
    images: Images, busybox: str, registry: str, tmp_path: Path
) -> None:
    v1 = await _build_app(images, tmp_path, f"{registry}/app:v1", "one\n")
    v2 = await _build_app(images, tmp_path, f"{registry}/app:v2", "two\n")
    await images.push(f"{registry}/app:v1")
    await images.push(f"{registry}/app:v2")
    # skopeo rewrites it as a Docker v2 schema 2 manifest.
    copy = await asyncio.to_thread(
        _skopeo, "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2",
        f"docker://{registry}/app:v1", f"docker://{registry}/app:docker",
    )  # fmt: skip
    assert copy.returncode == 0, copy.stderr
    # An index whose linux/amd64 entry is v1 and linux/arm64 entry is v2.
    sizes = {d: images.store.blob_path(d).stat().st_size for d in (v1, v2)}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": v2, "size": sizes[v2],
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": v1, "size": sizes[v1],
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }  # fmt: skip
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"http://{registry}/v2/app/manifests/multi",
            data=json.dumps(index).encode(),
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        ) as resp:
            assert resp.status == 201, await resp.text()

    async with Images(tmp_path / "other") as fresh:
        docker = await fresh.resolve(f"{registry}/app:docker")
        _, manifest, _ = fresh.store.load(f"{registry}/app:docker")
        assert manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        assert (docker.layer_dirs[-1] / "app" / "app.txt").read_text() == "one\n"
        multi = await fresh.resolve(f"{registry}/app:multi")
        assert multi.digest == v1
        assert (multi.layer_dirs[-1] / "app" / "app.txt").read_text() == "one\n"
        # The Docker-typed image can be pushed on from this store, and skopeo still reads it.
        assert (
            await fresh.push(f"{registry}/again:v1", source=f"{registry}/app:docker")
            == docker.digest
        )
    inspect = await asyncio.to_thread(
        _skopeo, "inspect", "--tls-verify=false", f"docker://{registry}/again:v1"
    )
    assert inspect.returncode == 0 and json.loads(inspect.stdout)["Digest"] == docker.digest


async def test_chunked_upload(images: Images, busybox: str, registry: str, tmp_path: Path) -> None:
    ref = f"{registry}/chunked:v1"
    digest = await _build_app(images, tmp_path, ref)
    images.client.chunk_size = 100_000  # the ~1 MB busybox layer goes up in 11 PATCHes
    seen: list[int] = []
    assert await images.push(ref, progress=lambda d, done, total: seen.append(done)) == digest
    assert len([n for n in seen if n % 100_000 == 0]) >= 10
    async with Images(tmp_path / "other") as fresh:
        assert await fresh.pull(ref) == digest
        layer = fresh.store.load(ref)[1].layers[0].digest
        assert (
            fresh.store.blob_path(layer).read_bytes() == images.store.blob_path(layer).read_bytes()
        )


async def test_cancelled_pull_leaves_nothing_behind(
    images: Images, busybox: str, registry: str, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big.bin").write_bytes(os.urandom(6 << 20))  # incompressible: a 6 MB layer
    (ctx / "Gantryfile").write_text("FROM busybox:latest\nCOPY big.bin /big.bin\n")
    ref = f"{registry}/big:v1"
    digest = (await images.build(ctx, ref)).digest
    await images.push(ref)
    async with Images(tmp_path / "other") as fresh:
        before = snapshot(fresh.store.root)
        started = asyncio.Event()

        def progress(d: str, done: int, total: int) -> None:
            if 0 < done < total:
                started.set()

        task = asyncio.create_task(fresh.pull(ref, progress=progress), name="test-pull")
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(600):  # the shared download notices it is unwanted and cleans up
            if not any(fresh.store.tmp.iterdir()):
                break
            await asyncio.sleep(0.05)
        assert list(fresh.store.tmp.iterdir()) == []
        assert snapshot(fresh.store.root) == before
        assert await fresh.pull(ref) == digest
        assert list(fresh.store.tmp.iterdir()) == []
