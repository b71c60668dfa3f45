"""The client side of a connection: parsing, queueing, local answers, deadlines.

Owns `ClientConn`, the asyncio.Protocol for one client connection: the
httptools request callbacks (400 for malformed, 431 for oversized heads),
the cache of body-less request heads seen before, the queue of pipelined
requests answered in order, answers from the proxy itself, deadlines (408
for slow clients, 504 for slow upstreams), pausing its reading (flow
control), closing. It does not route, choose backends or talk to upstreams:
those methods come from the `proxy.forward.Forwarding` mixin it inherits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from proxy import httpmsg
from proxy.forward import Forwarding
from proxy.request import P_PENDING, P_QUEUE, P_UPGRADE, Request
from proxy.upstream import UpstreamConn

if TYPE_CHECKING:
    from proxy.server import Proxy

log = logging.getLogger("gantry.proxy")

_PENDING_LIMIT = 256 * 1024  # buffered request body before the client is paused
_now = time.monotonic

# Body-less request heads seen before, byte for byte (a client repeats its
# requests): one read holding exactly one such head -> what parsing it gave
# (the peer it came from, since X-Forwarded-For names it). A hit skips httptools
# and the header rewrite; routing, selection and metrics still run per request.
_HEAD_CACHE_MAX = 1024
_HEAD_CACHE_BYTES = 2048  # longer heads are not kept
_req_heads: dict[bytes, tuple[str, bytes, bytes, bool, bool, httpmsg.RequestInfo]] = {}


class ClientConn(Forwarding, asyncio.Protocol):
    """One client connection: parses requests and runs their exchanges in order."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.queue: deque[Request] = deque()
        self.cur: Request | None = None
        self.head_size = 0
        self.raw_head = 0
        self.in_head = False
        self.paused = 0
        self.deadline = 0.0
        self.deadline_kind = ""
        self.closing = False
        self.tunnel: UpstreamConn | None = None
        self.upgraded = False
        self.begun = 0  # messages begun during one feed of the parser
        self.known: tuple[str, bytes, bytes, bool, bool, httpmsg.RequestInfo] | None = None

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.proxy.clients.add(self)
        self._set_deadline(self.proxy.settings.header_timeout, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy.clients.discard(self)
        if self.tunnel is not None:
            tunnel, self.tunnel = self.tunnel, None
            tunnel.tunnel = None
            tunnel.close()
        while self.queue:
            req = self.queue.popleft()
            if not req.done:
                self._abandon(req, 499)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            assert self.tunnel.transport is not None
            self.tunnel.transport.write(data)
            return
        if self.upgraded:
            req = self.queue[0] if self.queue else None
            if req is not None and req.upgrade_rest is not None:
                req.upgrade_rest.append(data)
                self._pause(P_UPGRADE)
            return
        if self.closing:
            return
        whole = self.cur is None and not self.in_head and len(data) <= _HEAD_CACHE_BYTES
        if whole:
            seen = _req_heads.get(data)
            if seen is not None and seen[0] == self.peer:
                self._known_request(seen)
                return
            self.begun = 0
            self.known = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            if self.queue:
                req = self.queue[-1]
                req.upgrade_rest = [data[exc.args[0] :]]
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
            limit = self.proxy.settings.max_header_bytes
            if isinstance(cause, _HeadTooLarge):
                self._reject(431, f"request head larger than {limit} bytes")
            elif isinstance(cause, httpmsg.BadRequest):
                self._reject(400, str(cause))
            elif cause is not None:
                log.error("request handling failed: %r", cause)
                self._reject(400, "request could not be handled")
            else:
                self._reject(400, f"malformed request ({exc})")
        else:
            known, self.known = self.known, None
            if whole and known is not None and self.begun == 1 and self.cur is None:
                # `data` was exactly one complete body-less request: remember it.
                if len(_req_heads) >= _HEAD_CACHE_MAX:
                    _req_heads.clear()
                _req_heads[data] = known
            if self.in_head:
                self.raw_head += len(data)
                if self.raw_head > self.proxy.settings.max_header_bytes:
                    limit = self.proxy.settings.max_header_bytes
                    self._reject(431, f"request head larger than {limit} bytes")

    def pause_writing(self) -> None:
        req = self.queue[0] if self.queue else None
        up = self.tunnel or (req.up if req is not None else None)
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        req = self.queue[0] if self.queue else None
        up = self.tunnel or (req.up if req is not None else None)
        if up is not None and up.transport is not None and not up.transport.is_closing():
            up.transport.resume_reading()

    # -- httptools callbacks (request side) ---------------------------------
    def on_message_begin(self) -> None:
        self.begun += 1
        self.cur = Request()
        self.in_head = True
        self.head_size = 0
        self.raw_head = 0
        if self.deadline_kind != "head":
            self.deadline = self.proxy.now + self.proxy.settings.header_timeout
            self.deadline_kind = "head"

    def on_url(self, url: bytes) -> None:
        assert self.cur is not None
        self.cur.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.cur is not None
        self.cur.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.proxy.settings.max_header_bytes:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        req = self.cur
        assert req is not None
        self.in_head = False
        self.deadline_kind = ""
        parser = self.parser
        req.method = parser.get_method()
        req.keep_alive = parser.should_keep_alive() and not self.proxy.draining
        req.http11 = parser.get_http_version() == "1.1"
        if req.method == b"CONNECT":
            raise httpmsg.BadRequest("CONNECT is not supported")
        info = req.info = httpmsg.rewrite_request(
            req.method, req.url, req.headers, client_ip=self.peer, upgrade=parser.should_upgrade()
        )
        req.headers = []
        req.has_body = info.chunked or bool(info.content_length)
        req.body_done = not req.has_body
        if self.begun == 1 and not req.has_body and info.upgrade is None:
            keep = parser.should_keep_alive()
            self.known = (self.peer, req.method, req.url, keep, req.http11, info)
        self._enqueue(req)

    def _known_request(
        self, seen: tuple[str, bytes, bytes, bool, bool, httpmsg.RequestInfo]
    ) -> None:
        """A request head seen before: what parsing and rewriting it gave, without either."""
        _, method, url, keep, http11, info = seen
        req = Request()
        req.method = method
        req.url = url
        req.keep_alive = keep and not self.proxy.draining
        req.http11 = http11
        req.info = info
        req.body_done = True
        self.deadline_kind = ""
        self._enqueue(req)

    def _enqueue(self, req: Request) -> None:
        req.started = _now()
        self.queue.append(req)
        if len(self.queue) == 1:
            self._start(req)
        else:
            self._pause(P_QUEUE)

    def on_body(self, body: bytes) -> None:
        req = self.cur
        if req is None or req.done:
            return
        data = [b"%x\r\n" % len(body), body, b"\r\n"] if req.info and req.info.chunked else [body]
        up = req.up
        if up is not None and req.pending_size == 0 and up.transport is not None:
            req.sent_body = True
            up.transport.writelines(data)
        else:
            if req.pending is None:
                req.pending = []
            req.pending.extend(data)
            req.pending_size += len(body)
            if req.pending_size > _PENDING_LIMIT:
                self._pause(P_PENDING)

    def on_message_complete(self) -> None:
        req = self.cur
        self.cur = None
        if req is None:
            return
        req.body_done = True
        if req.info is not None and req.info.chunked and not req.done:
            up = req.up
            if up is not None and req.pending_size == 0 and up.transport is not None:
                up.transport.write(httpmsg.LAST_CHUNK)
            else:
                req.pending = [*(req.pending or ()), httpmsg.LAST_CHUNK]

    # -- queue order and local answers ----------------------------------------
    def _next(self, req: Request) -> None:
        """The response to `req` is written: close, or go on with the next request."""
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        if not req.keep_alive or not req.body_done or self.closing:
            self._close()
            return
        if self.queue:
            nxt = self.queue[0]
            self._resume(P_QUEUE)
            self._start(nxt)
        elif self.proxy.draining:
            self._close()
        else:
            self.deadline = self.proxy.now + self.proxy.settings.keepalive_timeout
            self.deadline_kind = "idle"

    def _local(
        self, status: int, message: str, *, req: Request | None = None, close: bool = False
    ) -> None:
        """Answer from the proxy itself."""
        proxy = self.proxy
        if req is not None and req.done:
            return
        keep = (
            not close
            and not self.upgraded
            and req is not None
            and req.keep_alive
            and req.body_done
            and len(self.queue) <= 1
        )
        if req is not None:
            req.done = True
            req.status = status
            if req.choice is not None and req.deployment:
                self._observe(req)
            else:
                proxy.metrics.unrouted[status] = proxy.metrics.unrouted.get(status, 0) + 1
            self._release(req)
            if req.up is not None:
                req.up.abort()
        else:
            proxy.metrics.unrouted[status] = proxy.metrics.unrouted.get(status, 0) + 1
        if status >= 500:
            log.info("%d for %s: %s", status, req.deployment if req else "-", message)
        self._write(httpmsg.local_response(status, message, keep_alive=keep))
        if req is not None and keep:
            req.keep_alive = True
            self._next(req)
        else:
            self._close()

    def _reject(self, status: int, message: str) -> None:
        """Input that cannot be parsed: answer it (after what is in flight), then close."""
        active = [r for r in self.queue if not r.done]
        broken = self.cur if self.cur is not None and self.cur in active else None
        if not active:
            self._local(status, message, close=True)
        elif broken is not None and active == [broken] and not broken.status:
            self._local(status, message, req=broken, close=True)  # e.g. a bad chunked body
        else:  # answers already under way: finish them, then close without reading more
            for r in active:
                r.keep_alive = False
            self._pause(P_QUEUE)

    # -- deadlines, pausing, writing, closing ---------------------------------
    def _set_deadline(self, seconds: float, kind: str) -> None:
        self.deadline = _now() + seconds
        self.deadline_kind = kind

    def check_deadline(self, now: float) -> None:
        if self.closing or self.tunnel is not None:
            return
        req = self.queue[0] if self.queue else None
        if req is not None and not req.done and req.deadline and now > req.deadline:
            if req.status:
                self.proxy.metrics.upstream_error(req.deployment, "timeout")
                self._abandon(req, req.status)
                self._abort()
            elif not req.body_done:
                self._local(408, "request body not received in time", req=req, close=True)
            else:
                self.proxy.metrics.upstream_error(req.deployment, "timeout")
                if req.up is not None:
                    self._outlier_failure(req.deployment, req.up.key)
                self._release(req)
                timeout = self.proxy.settings.request_timeout
                self._local(
                    504, f"upstream did not answer within {timeout:g}s", req=req, close=True
                )
            return
        if self.deadline_kind and now > self.deadline:
            if self.deadline_kind == "head" and (self.in_head or self.cur is not None):
                self._reject(408, "request head not received in time")
            else:
                self._close()

    def drain(self) -> None:
        if not self.queue and not self.in_head and self.tunnel is None:
            self._close()

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def client_write(self, out: list[bytes]) -> None:
        if self.transport is not None and not self.closing:
            # One buffer: uvloop writes it at once; several small ones are joined first.
            if len(out) == 1:
                self.transport.write(out[0])
            elif len(out) < 8:
                self.transport.write(b"".join(out))
            else:
                self.transport.writelines(out)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def _close(self) -> None:
        if not self.closing and self.transport is not None:
            self.closing = True
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.closing = True
            self.transport.abort()


class _HeadTooLarge(Exception):
    pass
