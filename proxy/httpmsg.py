"""HTTP/1.1 message heads: what the proxy forwards and what it answers itself.

Pure functions over bytes, called once per message: the request head sent
upstream (hop-by-hop headers dropped, X-Forwarded-For/-Proto/-Host set,
framing re-stated), the response head sent to the client (hop-by-hop
dropped, framing and Connection re-stated, the sticky cookie added), and the
short plain-text answers the proxy gives itself (400, 404, 408, 431,
502, 503, 504). No I/O; the parser lives in `proxy.server`.
"""

from __future__ import annotations

from dataclasses import dataclass

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"content-length",  # re-stated from the parser's framing
    }
)
# Request headers the proxy consumes or re-states itself.
_REQUEST_DROP = HOP_BY_HOP | {b"expect", b"x-forwarded-proto", b"x-forwarded-host"}

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


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


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
    extra_hop: set[bytes] = set()
    kept: list[bytes] = []
    for name, value in headers:
        low = name.lower()
        if low == b"host":
            if host:
                raise BadRequest("more than one Host header")
            host = value
        elif low == b"connection":
            extra_hop |= _connection_tokens(value)
            continue
        elif low == b"content-length":
            try:
                n = int(value)
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if n < 0 or (content_length is not None and content_length != n):
                raise BadRequest("conflicting Content-Length")
            content_length = n
        elif low == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif low == b"cookie":
            cookie = value.decode("latin-1")
        elif low == b"x-gantry-canary":
            override = value.decode("latin-1")
        elif low == b"expect":
            expect = value.strip().lower() == b"100-continue"
        elif low == b"upgrade":
            upgrade_value = value
        elif low == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        if low in _REQUEST_DROP:
            continue
        kept.append(name + b": " + value + b"\r\n")
    if extra_hop:
        kept = [line for line in kept if line.split(b":", 1)[0].lower() not in extra_hop]
    if chunked:
        content_length = None
    ip = client_ip.encode()
    lines = [method, b" ", target, b" HTTP/1.1\r\n", *kept]
    lines.append(b"X-Forwarded-For: " + (xff + b", " + ip if xff else ip) + b"\r\n")
    lines.append(b"X-Forwarded-Proto: http\r\n")
    if host:
        lines.append(b"X-Forwarded-Host: " + host + b"\r\n")
    if upgrade and upgrade_value:
        lines.append(b"Connection: Upgrade\r\nUpgrade: " + upgrade_value + b"\r\n")
    else:
        lines.append(b"Connection: keep-alive\r\n")
        upgrade_value = None
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        lines.append(b"Content-Length: " + str(content_length).encode() + b"\r\n")
    lines.append(b"\r\n")
    return RequestInfo(
        head=b"".join(lines),
        host=host.decode("latin-1"),
        cookie=cookie,
        override=override,
        content_length=content_length,
        chunked=chunked,
        expect_continue=expect,
        upgrade=upgrade_value,
    )


@dataclass(slots=True)
class ResponseInfo:
    head: bytes
    framing: str  # "length" | "chunked" | "close" | "none"
    content_length: int | None


def rewrite_response(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    bodyless: bool,
    upstream_chunked: bool,
    client_http11: bool,
    keep_alive: bool,
    set_cookie: bytes | None = None,
) -> ResponseInfo:
    """The client's response head and how its body is framed."""
    content_length: int | None = None
    extra_hop: set[bytes] = set()
    kept: list[bytes] = []
    upgrade_value = None
    for name, value in headers:
        low = name.lower()
        if low == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = None
            continue
        if low == b"connection":
            extra_hop |= _connection_tokens(value)
            continue
        if low == b"upgrade":
            upgrade_value = value
        if low in HOP_BY_HOP:
            continue
        kept.append(name + b": " + value + b"\r\n")
    if extra_hop:
        kept = [line for line in kept if line.split(b":", 1)[0].lower() not in extra_hop]
    lines = [b"HTTP/1.1 ", str(status).encode(), b" ", reason or b"OK", b"\r\n", *kept]
    if set_cookie is not None:
        lines.append(b"Set-Cookie: " + set_cookie + b"\r\n")
    if status == 101:
        lines.append(
            b"Connection: Upgrade\r\nUpgrade: " + (upgrade_value or b"websocket") + b"\r\n\r\n"
        )
        return ResponseInfo(b"".join(lines), "none", None)
    if bodyless:
        framing = "none"
        if content_length is not None:
            lines.append(b"Content-Length: " + str(content_length).encode() + b"\r\n")
    elif content_length is not None and not upstream_chunked:
        framing = "length"
        lines.append(b"Content-Length: " + str(content_length).encode() + b"\r\n")
    elif client_http11:
        framing = "chunked"
        lines.append(b"Transfer-Encoding: chunked\r\n")
    else:
        framing = "close"
        keep_alive = False
    lines.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    return ResponseInfo(b"".join(lines), framing, content_length)


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
