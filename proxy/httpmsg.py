"""HTTP/1.1 message heads: what the proxy forwards and what it answers itself.

Pure functions over bytes, called once per message: the request head sent
upstream (hop-by-hop headers dropped, X-Forwarded-For/-Proto/-Host set,
framing re-stated), the response head sent to the client (hop-by-hop
dropped, framing and Connection re-stated, the sticky cookie added), and the
short plain-text answers the proxy gives itself (400, 404, 408, 431,
502, 503, 504). No I/O; the parser lives in `proxy.client`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class BadRequest(ValueError):
    """A request head the proxy refuses (answered 400)."""


@dataclass(slots=True)
class RequestInfo:
    """What the proxy needs to know of a request head, from one pass over it."""

    head: bytes
    host: str
    cookie: str | None
    override: str | None
    content_length: int | None
    chunked: bool
    expect_continue: bool
    upgrade: bytes | None


# Header names are classified once per spelling (a dict lookup per header after that).
(K_KEEP, K_HOST, K_CONNECTION, K_CL, K_TE, K_COOKIE, K_CANARY, K_EXPECT, K_UPGRADE, K_XFF,
 K_DROP) = range(1, 12)  # fmt: skip
_HOP_ONLY = (b"keep-alive", b"proxy-connection", b"te", b"trailer", b"proxy-authenticate",
             b"proxy-authorization")  # fmt: skip
_REQUEST_KINDS = {
    b"host": K_HOST,
    b"connection": K_CONNECTION,
    b"content-length": K_CL,
    b"transfer-encoding": K_TE,
    b"cookie": K_COOKIE,
    b"x-gantry-canary": K_CANARY,
    b"expect": K_EXPECT,
    b"upgrade": K_UPGRADE,
    b"x-forwarded-for": K_XFF,
    b"x-forwarded-proto": K_DROP,
    b"x-forwarded-host": K_DROP,
    **dict.fromkeys(_HOP_ONLY, K_DROP),
}
_RESPONSE_KINDS = {
    b"connection": K_CONNECTION,
    b"content-length": K_CL,
    b"transfer-encoding": K_TE,
    b"upgrade": K_UPGRADE,
    **dict.fromkeys(_HOP_ONLY, K_DROP),
}
_request_cache: dict[bytes, int] = {}
_response_cache: dict[bytes, int] = {}
# Connection tokens that name nothing beyond what is dropped anyway.
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", *_HOP_ONLY})


def _classify(name: bytes, table: dict[bytes, int], cache: dict[bytes, int]) -> int:
    kind = table.get(name.lower(), K_KEEP)
    if len(cache) < 4096:
        cache[name] = kind
    return kind


_PLAIN_VALUES = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"Upgrade", b"upgrade"}
)


def _extra_hop(value: bytes, into: set[bytes] | None) -> set[bytes] | None:
    """Header names a Connection header lists (beyond the usual hop-by-hop ones)."""
    if value in _PLAIN_VALUES:
        return into
    for token in value.split(b","):
        token = token.strip().lower()
        if token and token not in _PLAIN_TOKENS:
            into = into or set()
            into.add(token)
    return into


def _without(parts: list[bytes], names: set[bytes]) -> list[bytes]:
    """`parts` = [name, b": ", value, b"\\r\\n", ...]: drop the headers named in `names`."""
    out: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in names:
            out.extend(parts[i : i + 4])
    return out


def rewrite_request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    client_ip: str,
    upgrade: bool,
) -> RequestInfo:
    """The upstream request head and the facts routing and framing need."""
    host = b""
    cookie = override = None
    content_length: int | None = None
    chunked = expect = False
    upgrade_value: bytes | None = None
    xff: bytes | None = None
    extra: set[bytes] | None = None
    kept: list[bytes] = [method, b" ", target, b" HTTP/1.1\r\n"]
    cached = _request_cache.get
    extend = kept.extend
    for name, value in headers:
        kind = cached(name) or _classify(name, _REQUEST_KINDS, _request_cache)
        if kind == K_KEEP:
            extend((name, b": ", value, b"\r\n"))
        elif kind == K_HOST:
            if host:
                raise BadRequest("more than one Host header")
            host = value
            extend((name, b": ", value, b"\r\n"))
        elif kind == K_CONNECTION:
            extra = _extra_hop(value, extra)
        elif kind == K_CL:
            try:
                n = int(value)
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if n < 0 or (content_length is not None and content_length != n):
                raise BadRequest("conflicting Content-Length")
            content_length = n
        elif kind == K_TE:
            chunked = chunked or b"chunked" in value.lower()
        elif kind == K_COOKIE:
            cookie = value.decode("latin-1")
            extend((name, b": ", value, b"\r\n"))
        elif kind == K_CANARY:
            override = value.decode("latin-1")
            extend((name, b": ", value, b"\r\n"))
        elif kind == K_EXPECT:
            expect = value.strip().lower() == b"100-continue"
        elif kind == K_UPGRADE:
            upgrade_value = value
        elif kind == K_XFF:
            xff = value if xff is None else xff + b", " + value
    if extra:
        kept = kept[:4] + _without(kept[4:], extra)
    if chunked:
        content_length = None
    ip = client_ip.encode()
    kept.append(b"X-Forwarded-For: " + (xff + b", " + ip if xff else ip) + b"\r\n")
    if host:
        kept.append(b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: " + host + b"\r\n")
    else:
        kept.append(b"X-Forwarded-Proto: http\r\n")
    if upgrade and upgrade_value:
        kept.append(b"Connection: Upgrade\r\nUpgrade: " + upgrade_value + b"\r\n\r\n")
    else:
        upgrade_value = None
        if chunked:
            kept.append(b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n")
        elif content_length is not None:
            kept.append(b"Connection: keep-alive\r\nContent-Length: %d\r\n\r\n" % content_length)
        else:
            kept.append(b"Connection: keep-alive\r\n\r\n")
    return RequestInfo(
        b"".join(kept),
        host.decode("latin-1"),
        cookie,
        override,
        content_length,
        chunked,
        expect,
        upgrade_value,
    )


@dataclass(slots=True)
class ResponseInfo:
    head: bytes
    framing: str  # to the client: "length" | "chunked" | "close" | "none"
    until_close: bool = False  # the upstream body ends when the upstream closes


_rewritten: dict[tuple[object, ...], ResponseInfo] = {}


def rewrite_response_cached(
    status: int,
    reason: bytes,
    headers: tuple[tuple[bytes, bytes], ...],
    *,
    bodyless: bool,
    client_http11: bool,
    keep_alive: bool,
    set_cookie: bytes | None = None,
) -> ResponseInfo:
    """`rewrite_response` memoized, for a head the upstream side has seen before
    (a tuple of headers: hashable, and the same objects again, so cheap to hash)."""
    key = (status, headers, bodyless, client_http11, keep_alive, set_cookie)
    info = _rewritten.get(key)
    if info is None:
        info = rewrite_response(
            status,
            reason,
            headers,
            bodyless=bodyless,
            client_http11=client_http11,
            keep_alive=keep_alive,
            set_cookie=set_cookie,
        )
        if len(_rewritten) >= 1024:
            _rewritten.clear()
        _rewritten[key] = info
    return info


def rewrite_response(
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    bodyless: bool,
    client_http11: bool,
    keep_alive: bool,
    set_cookie: bytes | None = None,
) -> ResponseInfo:
    """The client's response head and how its body is framed."""
    cl_line: bytes | None = None
    chunked = False
    extra: set[bytes] | None = None
    upgrade_value = None
    kept: list[bytes] = [b"HTTP/1.1 %d %s\r\n" % (status, reason or b"OK")]
    cached = _response_cache.get
    extend = kept.extend
    for name, value in headers:
        kind = cached(name) or _classify(name, _RESPONSE_KINDS, _response_cache)
        if kind == K_KEEP:
            extend((name, b": ", value, b"\r\n"))
        elif kind == K_CL:
            cl_line = b"Content-Length: " + value + b"\r\n"
        elif kind == K_TE:
            chunked = chunked or b"chunked" in value.lower()
        elif kind == K_CONNECTION:
            extra = _extra_hop(value, extra)
        elif kind == K_UPGRADE:
            upgrade_value = value
    if extra:
        kept = kept[:1] + _without(kept[1:], extra)
    if set_cookie is not None:
        kept.append(b"Set-Cookie: " + set_cookie + b"\r\n")
    if status == 101:
        kept.append(
            b"Connection: Upgrade\r\nUpgrade: " + (upgrade_value or b"websocket") + b"\r\n\r\n"
        )
        return ResponseInfo(b"".join(kept), "none")
    if bodyless:
        framing = "none"
        if cl_line is not None:
            kept.append(cl_line)
    elif cl_line is not None and not chunked:
        framing = "length"
        kept.append(cl_line)
    elif client_http11:
        framing = "chunked"
        kept.append(b"Transfer-Encoding: chunked\r\n")
    else:
        framing = "close"
        keep_alive = False
    kept.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    until_close = not bodyless and not chunked and cl_line is None
    return ResponseInfo(b"".join(kept), framing, until_close)


def local_response(status: int, message: str, *, keep_alive: bool) -> bytes:
    """A short plain-text answer from the proxy itself, saying why."""
    body = f"{status} {REASONS.get(status, b'Error').decode()}: {message}\n".encode()
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error")),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n",
            body,
        ]
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
