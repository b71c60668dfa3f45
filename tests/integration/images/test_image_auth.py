"""Bearer-token auth against a real docker-registry configured for token auth.

The token service is a small aiohttp app in the test that signs JWTs (RS256,
x5c header) with a self-signed key the registry trusts: anonymous callers
get pull-only tokens, alice:secret gets pull and push, wrong passwords 401.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from imgkit import one_line, put_image, snapshot, tar_bytes

from agent.images.errors import AuthError
from agent.images.registry import Credentials
from agent.images.service import Images
from gantry import procs


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    def __init__(self, d: Path) -> None:
        self.key, self.cert = d / "key.pem", d / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=gantry-test-issuer"],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()

    def token(self, scope: str, *, allowed: set[str]) -> str:
        access = []
        if scope:
            kind, name, actions = scope.split(":", 2)
            granted = [a for a in actions.split(",") if a in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": "gantry-test-issuer", "sub": "x", "aud": "gantry-test", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}  # fmt: skip
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        signing = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing.encode(),
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        return f"{signing}.{b64url(sig)}"


@pytest.fixture
async def token_service(tmp_path: Path) -> AsyncIterator[tuple[str, Issuer, list[dict[str, str]]]]:
    issuer = Issuer(tmp_path)
    seen: list[dict[str, str]] = []
    good = "Basic " + base64.b64encode(b"alice:secret").decode()

    async def token(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append({"auth": auth, **request.query})
        if auth and auth != good:
            return web.json_response({"details": "bad credentials"}, status=401)
        allowed = {"pull", "push"} if auth else {"pull"}
        return web.json_response(
            {"token": issuer.token(request.query.get("scope", ""), allowed=allowed)}
        )

    app = web.Application()
    app.router.add_get("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    port = procs.free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/token", issuer, seen
    finally:
        await runner.cleanup()


@pytest.fixture
def token_registry(
    tmp_path: Path, token_service: tuple[str, Issuer, list[dict[str, str]]]
) -> Iterator[str]:
    realm, issuer, _ = token_service
    port = procs.free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        procs.registry_config(root=tmp_path / "regdata", host="127.0.0.1", port=port)
        + "auth:\n  token:\n"
        + f"    realm: {realm}\n    service: gantry-test\n    issuer: gantry-test-issuer\n"
        + f"    rootcertbundle: {issuer.cert}\n"
    )
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log, stderr=log, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)  # noqa: S310
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "registry.log"
            ).read_text()
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        procs.stop_pid(proc.pid, proc=proc)
        log.close()


LAYER = tar_bytes([("file", "hello.txt", "hi\n")])


async def test_bearer_token_push_and_anonymous_pull(
    tmp_path: Path, token_registry: str, token_service: tuple[str, Issuer, list[dict[str, str]]]
) -> None:
    _, _, seen = token_service
    ref = f"{token_registry}/secure/app:v1"
    creds = {token_registry: Credentials("alice", "secret")}
    async with Images(tmp_path / "a", credentials=creds) as alice:
        digest = put_image(alice.store, "app:v1", [LAYER])
        assert await alice.push(ref, source="app:v1") == digest
    assert any(
        s.get("scope") == "repository:secure/app:pull,push" and s.get("service") == "gantry-test"
        for s in seen
    )
    async with Images(tmp_path / "anon") as anon:
        image = await anon.resolve(ref)
        assert image.digest == digest
        assert (image.layer_dirs[0] / "hello.txt").read_text() == "hi\n"
        put_image(anon.store, "other:v1", [tar_bytes([("file", "x", "x")])])
        with pytest.raises(AuthError) as exc:
            await anon.push(f"{token_registry}/secure/other:v1", source="other:v1")
        assert token_registry in one_line(exc.value)


async def test_wrong_password_is_an_auth_error_and_store_unchanged(
    tmp_path: Path, token_registry: str
) -> None:
    creds = {token_registry: Credentials("alice", "wrong")}
    async with Images(tmp_path / "b", credentials=creds) as images:
        before = snapshot(images.store.root)
        with pytest.raises(AuthError) as exc:
            await images.pull(f"{token_registry}/secure/app:v1")
        msg = one_line(exc.value)
        assert "secure/app:v1" in msg and "token service" in msg and "401" in msg
        assert snapshot(images.store.root) == before
