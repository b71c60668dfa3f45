"""Heads the proxy forwards and answers: hop-by-hop, X-Forwarded-*, framing."""

from __future__ import annotations

import pytest

from proxy.httpmsg import BadRequest, local_response, rewrite_request, rewrite_response


def lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")


def test_request_drops_hop_by_hop_and_sets_forwarded() -> None:
    info = rewrite_request(
        b"GET",
        b"/a?b=1",
        [
            (b"Host", b"shop.test:8080"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"X-Forwarded-For", b"1.2.3.4"),
            (b"X-Forwarded-Proto", b"https"),
            (b"Accept", b"*/*"),
        ],
        client_ip="127.0.0.9",
        upgrade=False,
    )
    head = lines(info.head)
    assert head[0] == b"GET /a?b=1 HTTP/1.1"
    assert b"Host: shop.test:8080" in head and b"Accept: */*" in head
    for gone in (
        b"X-Secret",
        b"Keep-Alive",
        b"TE",
        b"Proxy-Authorization",
        b"X-Forwarded-Proto: https",
    ):
        assert not any(h.startswith(gone) for h in head), gone
    assert b"X-Forwarded-For: 1.2.3.4, 127.0.0.9" in head
    assert b"X-Forwarded-Proto: http" in head
    assert b"X-Forwarded-Host: shop.test:8080" in head
    assert b"Connection: keep-alive" in head
    assert info.host == "shop.test:8080" and info.content_length is None and not info.chunked


def test_request_framing_and_facts() -> None:
    info = rewrite_request(
        b"POST",
        b"/",
        [
            (b"Host", b"h"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Cookie", b"gantry-bucket=3"),
            (b"X-Gantry-Canary", b"always"),
            (b"Expect", b"100-continue"),
        ],
        client_ip="1.1.1.1",
        upgrade=False,
    )
    head = lines(info.head)
    assert b"Transfer-Encoding: chunked" in head and not any(h.startswith(b"Expect") for h in head)
    assert (
        info.chunked
        and info.cookie == "gantry-bucket=3"
        and info.override == "always"
        and info.expect_continue
    )
    info = rewrite_request(
        b"PUT",
        b"/",
        [(b"Host", b"h"), (b"Content-Length", b"5")],
        client_ip="1.1.1.1",
        upgrade=False,
    )
    assert b"Content-Length: 5" in lines(info.head) and info.content_length == 5


def test_websocket_upgrade_is_forwarded() -> None:
    info = rewrite_request(
        b"GET",
        b"/ws",
        [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
        client_ip="1.1.1.1",
        upgrade=True,
    )
    head = lines(info.head)
    assert b"Connection: Upgrade" in head and b"Upgrade: websocket" in head


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Host", b"a"), (b"Host", b"b")],
        [(b"Host", b"a"), (b"Content-Length", b"x")],
        [(b"Host", b"a"), (b"Content-Length", b"1"), (b"Content-Length", b"2")],
    ],
)
def test_bad_requests(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(BadRequest):
        rewrite_request(b"GET", b"/", headers, client_ip="1.1.1.1", upgrade=False)


def test_response_framing() -> None:
    base = [(b"Content-Type", b"text/plain"), (b"Connection", b"close"), (b"Keep-Alive", b"x")]
    r = rewrite_response(
        200,
        b"OK",
        [*base, (b"Content-Length", b"10")],
        bodyless=False,
        client_http11=True,
        keep_alive=True,
    )
    assert (
        r.framing == "length"
        and b"Content-Length: 10" in lines(r.head)
        and b"Connection: keep-alive" in lines(r.head)
    )
    assert not any(h.startswith(b"Keep-Alive") for h in lines(r.head))
    r = rewrite_response(
        200,
        b"OK",
        [*base, (b"Transfer-Encoding", b"chunked")],
        bodyless=False,
        client_http11=True,
        keep_alive=True,
    )
    assert r.framing == "chunked" and b"Transfer-Encoding: chunked" in lines(r.head)
    r = rewrite_response(
        200,
        b"OK",
        base,
        bodyless=False,
        client_http11=False,
        keep_alive=True,
    )
    assert r.framing == "close" and b"Connection: close" in lines(r.head)
    r = rewrite_response(
        200,
        b"OK",
        [(b"Content-Length", b"10")],
        bodyless=True,
        client_http11=True,
        keep_alive=True,
        set_cookie=b"gantry-bucket=4",
    )
    assert (
        r.framing == "none"
        and b"Content-Length: 10" in lines(r.head)
        and b"Set-Cookie: gantry-bucket=4" in lines(r.head)
    )


def test_local_response_says_why() -> None:
    raw = local_response(503, "deployment web (stable): no ready endpoints", keep_alive=False)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable") and b"Connection: close" in head
    assert body == b"503 Service Unavailable: deployment web (stable): no ready endpoints\n"
    assert f"Content-Length: {len(body)}".encode() in head
