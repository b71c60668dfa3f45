"""Connections to backends: an asyncio.Protocol with httptools, and their pool.

Owns one keep-alive connection to an upstream endpoint (`UpstreamConn`) and
the per-endpoint stack of idle ones (`Pool`). A connection parses responses
and hands each event to the exchange that owns it (`Exchange`, implemented
by `proxy.client.ClientConn`); it goes back to the pool only after a
complete, well-framed response to a completely sent request. It knows
nothing of routing, metrics or clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from http import HTTPStatus
from typing import Protocol, cast

import httptools


class Exchange(Protocol):
    def up_head(
        self, conn: UpstreamConn, status: int, headers: Sequence[tuple[bytes, bytes]]
    ) -> None: ...
    def up_body(self, conn: UpstreamConn, data: bytes) -> None: ...
    def up_done(self, conn: UpstreamConn) -> None: ...
    def up_upgrade(self, conn: UpstreamConn, rest: bytes) -> None: ...
    def up_lost(self, conn: UpstreamConn, why: str) -> None: ...
    def up_pause_writing(self) -> None: ...
    def up_resume_writing(self) -> None: ...


# Reason phrases by status (the upstream's own phrase is not kept: it costs a
# parser callback per response and HTTP/2 dropped them anyway).
REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}

# Answer heads seen before, byte for byte (a backend repeats its head but for
# the Date, which changes once a second): raw head -> what httptools made of it
# (status, headers, Content-Length, keep-alive). Only plain HTTP/1.1 answers
# with one Content-Length and no Transfer-Encoding are kept; a hit skips the
# parser and frames the body by counting bytes. Any byte of difference is a
# miss, handled by httptools as before.
_CRLF2 = b"\r\n\r\n"
_HEADS_MAX = 512
_HEAD_BYTES = 4096  # longer heads are not kept
_heads: dict[bytes, tuple[int, tuple[tuple[bytes, bytes], ...], int, bool]] = {}


class UpstreamConn(asyncio.Protocol):
    __slots__ = (
        "key",
        "pool",
        "transport",
        "parser",
        "owner",
        "headers",
        "reason",
        "got_bytes",
        "closed",
        "reused",
        "tunnel",
        "idle_since",
        "out",
        "skip_body",
        "status",
        "fast",
        "remaining",
        "keep_alive",
        "raw_head",
    )

    def __init__(self, key: str, pool: Pool) -> None:
        self.key = key
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.owner: Exchange | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.got_bytes = False  # any response byte for the current request
        self.closed = False
        self.reused = False
        self.tunnel: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.out: list[bytes] = []  # bytes for the client, flushed once per read
        self.skip_body = False
        self.status = 0
        self.fast = False  # the exchange allows the head cache for this answer
        self.remaining = 0  # cached head: body bytes still to come
        self.keep_alive = False  # the last complete answer allows reuse
        self.raw_head: bytes | None = None  # being parsed: to remember if plain

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        owner = self.owner
        if owner is None:  # bytes while idle: the connection is not reusable
            self.close()
            return
        if self.remaining:
            self._counted_body(owner, data)
            return
        if not self.got_bytes and self.fast:
            self.got_bytes = True
            end = data.find(_CRLF2, 0, _HEAD_BYTES)
            if end > 0:
                raw = data[: end + 4]
                seen = _heads.get(raw)
                if seen is not None:
                    self._known_head(owner, seen, data[end + 4 :])
                    return
                self.raw_head = raw
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.flush()
            if self.owner is not None:
                self.owner.up_upgrade(self, data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self.flush()
            self.close()
            if self.owner is not None:
                self.owner.up_lost(self, f"malformed response ({exc})")
            return
        if self.status == 101 and self.tunnel is None and self.owner is not None:
            self.flush()
            self.owner.up_upgrade(self, b"")
            return
        self.flush()

    def _known_head(
        self,
        owner: Exchange,
        seen: tuple[int, tuple[tuple[bytes, bytes], ...], int, bool],
        rest: bytes,
    ) -> None:
        status, headers, length, keep = seen
        self.status = status
        self.reason = REASONS.get(status, b"Unknown")
        owner.up_head(self, status, headers)
        if self.owner is not owner:
            return
        self.keep_alive = keep
        self.remaining = length
        if rest or not length:
            self._counted_body(owner, rest)

    def _counted_body(self, owner: Exchange, data: bytes) -> None:
        """Body bytes of an answer whose head came from `_heads`, framed by count."""
        n = len(data)
        left = self.remaining
        if n < left:
            self.remaining = left - n
            owner.up_body(self, data)
            self.flush()
            return
        self.remaining = 0
        if n > left:  # bytes beyond the answer: the connection is not reusable
            data = data[:left]
            self.keep_alive = False
        if data:
            owner.up_body(self, data)
        owner.up_done(self)
        self.flush()

    def _remember(self, raw: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """After httptools parsed `raw`: keep it if it is a plain Content-Length answer."""
        if status < 200 or status == 204 or status == 304 or status > 599:
            return
        if self.parser.get_http_version() != "1.1":
            return
        length = -1
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                if length >= 0 or not value.isdigit():
                    return
                length = int(value)
            elif lname == b"transfer-encoding":
                return
        if length < 0:
            return
        if len(_heads) >= _HEADS_MAX:
            _heads.clear()
        _heads[raw] = (status, tuple(headers), length, self.parser.should_keep_alive())

    def flush(self) -> None:
        if self.out and self.owner is not None:
            out, self.out = self.out, []
            self.owner.client_write(out)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.up_lost(self, "reset" if exc else "closed")

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.up_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.up_resume_writing()

    # -- httptools callbacks ----------------------------------------------
    def on_message_begin(self) -> None:
        if self.owner is None:  # another answer after the one we asked for: unusable
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers, self.headers = self.headers, []
        self.status = status = self.parser.get_status_code()
        self.reason = REASONS.get(status, b"Unknown")
        raw, self.raw_head = self.raw_head, None
        if 100 <= status < 200 and status != 101:
            self.skip_body = True  # 100 Continue, 103 Early Hints: swallowed
            return
        if raw is not None:
            self._remember(raw, status, headers)
        if self.owner is not None:
            self.owner.up_head(self, status, headers)

    def on_body(self, body: bytes) -> None:
        if self.owner is not None and not self.skip_body:
            self.owner.up_body(self, body)

    def on_message_complete(self) -> None:
        if self.skip_body:
            self.skip_body = False
            return
        if self.owner is not None and self.status != 101:
            self.keep_alive = self.parser.should_keep_alive()
            self.owner.up_done(self)

    # -- used by the exchange ---------------------------------------------
    def send(self, owner: Exchange, data: list[bytes], *, fast: bool = False) -> None:
        """Send a request; `fast` allows the head cache for its answer (not for HEAD
        or Upgrade requests, whose answers only the parser may judge)."""
        self.owner = owner
        self.got_bytes = False
        self.skip_body = False
        self.status = 0
        self.fast = fast
        self.remaining = 0
        self.raw_head = None
        assert self.transport is not None
        if len(data) == 1:
            self.transport.write(data[0])
        else:
            self.transport.writelines(data)

    def finish_without_body(self) -> None:
        """A HEAD answer: the parser would wait for a body; start a fresh one."""
        self.skip_body = True
        self.parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        self.closed = True
        self.owner = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.owner = None
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Idle keep-alive connections per endpoint key, newest on top."""

    def __init__(self, *, max_idle: int) -> None:
        self.max_idle = max_idle
        self.idle: dict[str, list[UpstreamConn]] = {}
        self.busy: set[UpstreamConn] = set()

    def take(self, key: str) -> UpstreamConn | None:
        stack = self.idle.get(key)
        while stack:
            conn = stack.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                self.busy.add(conn)
                return conn
        return None

    def put(self, conn: UpstreamConn, now: float) -> None:
        self.busy.discard(conn)
        conn.owner = None
        if conn.closed:
            return
        stack = self.idle.setdefault(conn.key, [])
        if len(stack) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        stack.append(conn)

    def discard(self, conn: UpstreamConn) -> None:
        self.busy.discard(conn)
        stack = self.idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)

    def expire(self, older_than: float, keep: set[str] | None = None) -> None:
        """Close idle connections unused since `older_than` or to removed endpoints."""
        for key, stack in list(self.idle.items()):
            gone = keep is not None and key not in keep
            for conn in [c for c in stack if gone or c.idle_since < older_than]:
                stack.remove(conn)
                conn.close()
            if not stack:
                del self.idle[key]

    def close_all(self) -> None:
        for stack in self.idle.values():
            for conn in stack:
                conn.close()
        self.idle.clear()
        for conn in list(self.busy):
            conn.abort()
        self.busy.clear()
