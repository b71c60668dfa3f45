"""The data path: client connections, request dispatch, streaming and errors.

Owns one worker's HTTP/1.1 front end on asyncio.Protocol + httptools:
parsing client requests (400 for malformed, 431 for oversized heads, 408 for
slow clients), routing through the live `Table`, choosing a backend with
`proxy.select`, streaming bodies both ways with back-pressure, WebSocket
pass-through after a 101, retries and timeouts, and the per-request
bookkeeping (in-flight counts, outliers, metrics). Everything is callback
driven: no Task, coroutine or response object per request. The decisions it
applies live in pure modules (`select`, `health`, `httpmsg`, `table`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import httptools

from proxy import httpmsg
from proxy.health import Outliers, RetryBudget
from proxy.metrics import Metrics
from proxy.select import NO_KEY, Balance, Choice, NoBackend, RequestKey, choose, parse_bucket
from proxy.settings import ProxySettings
from proxy.table import Endpoint, Table, normalize_host
from proxy.upstream import Pool, UpstreamConn

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

# Reasons a client connection's reading is paused (a bit mask).
P_QUEUE, P_PENDING, P_UPSTREAM, P_UPGRADE = 1, 2, 4, 8


class Proxy:
    """One worker's shared state: table, pool, counters, connections."""

    def __init__(self, settings: ProxySettings, *, seed: int | None = None) -> None:
        self.settings = settings
        self.table = Table()
        self.policy: Balance = settings.balance_policy()
        self.rng = random.Random(seed)
        self.inflight: dict[str, int] = {}
        self.outliers = Outliers(
            consecutive=settings.outlier_consecutive,
            base_ejection=settings.outlier_base_ejection,
            max_ejection=settings.outlier_max_ejection,
        )
        self.budget = RetryBudget(ratio=settings.retry_budget_ratio)
        self.metrics = Metrics()
        self.pool = Pool(max_idle=settings.max_idle_per_endpoint)
        self.clients: set[ClientConn] = set()
        self.connecting: set[asyncio.Task[None]] = set()
        self.rr: dict[tuple[str, str], int] = {}
        self.cap = settings.max_inflight_per_endpoint
        self.draining = False
        self.hosts: dict[str, str] = {}  # Host header -> normalized host
        self.now = _now()  # coarse clock for deadlines, advanced by sweep()

    def set_table(self, table: Table) -> None:
        self.table = table
        keys = {e.key for r in table.routes for e in r.endpoints}
        self.outliers.forget(keys)
        serving = {e.key for r in table.routes for e in r.endpoints if e.serving}
        # Idle connections to endpoints that left or drain: closed. In-flight ones finish.
        self.pool.expire(-1.0, keep=serving)

    def sweep(self) -> None:
        """Periodic: timeouts, re-admissions, idle pool connections."""
        now = self.now = _now()
        for key in self.outliers.readmit(now):
            log.info("re-admitted endpoint %s", key)
        self.pool.expire(now - self.settings.upstream_idle_timeout)
        for client in list(self.clients):
            client.check_deadline(now)

    def new_connection(self) -> ClientConn:
        return ClientConn(self)

    def close_idle(self) -> None:
        """Shutdown: no new requests; idle keep-alive connections closed now."""
        self.draining = True
        for client in list(self.clients):
            client.drain()


class Request:
    """One request's exchange. Defaults live on the class: a request sets only what differs."""

    method = b""
    info: httpmsg.RequestInfo | None = None
    keep_alive = True
    http11 = True
    has_body = False
    body_done = False
    pending: list[bytes] | None = None  # body bytes waiting for the upstream
    pending_size = 0
    sent_body = False
    up: UpstreamConn | None = None
    choice: Choice | None = None
    deployment = ""
    started = 0.0
    deadline = 0.0
    attempts = 0
    status = 0
    framing = ""
    until_close = False
    upgrade_rest: list[bytes] | None = None
    upgrading = False
    done = False
    exclude: str | None = None
    held: Endpoint | None = None  # the endpoint whose in-flight slot we hold

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []


class ClientConn(asyncio.Protocol):
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

    # -- dispatch -----------------------------------------------------------
    def _start(self, req: Request) -> None:
        info = req.info
        assert info is not None
        proxy = self.proxy
        path = req.url.decode("latin-1")
        host = proxy.hosts.get(info.host)
        if host is None:
            if len(proxy.hosts) > 4096:
                proxy.hosts.clear()
            host = proxy.hosts[info.host] = normalize_host(info.host)
        route = proxy.table.lookup(host, path) if path[:1] == "/" else None
        if route is None:
            self._local(404, f"no route for host {info.host!r} path {path[:200]!r}", req=req)
            return
        req.deployment = route.deployment
        req.deadline = req.started + proxy.settings.request_timeout
        if info.expect_continue and req.has_body:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if info.override is None and info.cookie is None:
            key = NO_KEY
        else:
            key = RequestKey(_override(info.override), parse_bucket(info.cookie))
        self._dispatch(req, route, key)

    def _dispatch(self, req: Request, route: Any, key: RequestKey, *, answer: bool = True) -> bool:
        """Pick an endpoint and send; without one, answer 503 (or return False)."""
        proxy = self.proxy
        seq = 0
        if proxy.policy is Balance.ROUND_ROBIN:
            rr_key = (route.deployment, "")
            seq = proxy.rr.get(rr_key, 0)
            proxy.rr[rr_key] = seq + 1
        picked = choose(
            route,
            key,
            proxy.policy,
            proxy.rng,
            inflight=proxy.inflight,
            ejected=proxy.outliers.ejected,
            cap=proxy.cap,
            seq=seq,
            exclude=req.exclude,
        )
        if isinstance(picked, NoBackend):
            if answer:
                self._local(503, picked.reason, req=req)
            return False
        req.choice = picked
        ep = req.held = picked.endpoint
        proxy.inflight[ep.key] = proxy.inflight.get(ep.key, 0) + 1
        req.attempts += 1
        if req.attempts == 1:
            proxy.budget.deposit()
        conn = proxy.pool.take(ep.key)
        if conn is not None:
            self._attach(req, conn)
            return True
        task = asyncio.get_running_loop().create_task(
            self._connect(req, ep), name=f"proxy-connect-{ep.key}"
        )
        proxy.connecting.add(task)
        task.add_done_callback(proxy.connecting.discard)
        return True

    async def _connect(self, req: Request, ep: Endpoint) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(proxy.settings.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConn(ep.key, proxy.pool), ep.address, ep.port
                )
        except TimeoutError:
            self._connect_failed(req, ep, "timeout", f"connect to {ep.key} timed out", 504)
            return
        except OSError as exc:
            why = exc.strerror or str(exc)
            self._connect_failed(req, ep, "connect", f"connect to {ep.key} failed: {why}", 502)
            return
        if req.done or self.closing:
            self._release(req)
            proxy.pool.put(conn, _now())
            return
        proxy.pool.busy.add(conn)
        self._attach(req, conn)

    def _connect_failed(
        self, req: Request, ep: Endpoint, reason: str, msg: str, status: int
    ) -> None:
        proxy = self.proxy
        self._release(req)
        proxy.metrics.upstream_error(req.deployment, reason)
        self._outlier_failure(req.deployment, ep.key)
        if req.done or self.closing:
            return
        if self._retry(req, ep.key):
            return
        self._local(status, msg, req=req)

    def _attach(self, req: Request, conn: UpstreamConn) -> None:
        req.up = conn
        info = req.info
        assert info is not None
        out = [info.head]
        if req.pending:
            out.extend(req.pending)
            req.pending = None
            req.pending_size = 0
            req.sent_body = True
            self._resume(P_PENDING)
        conn.send(self, out, fast=req.method != b"HEAD" and not info.upgrade)

    def _retry(self, req: Request, failed_key: str) -> bool:
        """Once, on another endpoint, if nothing unsafe was sent and the budget allows."""
        proxy = self.proxy
        if req.attempts >= 2 or req.sent_body or proxy.draining:
            return False
        if not proxy.budget.spend():
            return False
        route = proxy.table.by_deployment.get(req.deployment)
        if route is None or req.choice is None:
            return False
        req.exclude = failed_key
        req.up = None
        track = req.choice.track
        key = RequestKey(override="always" if track == "canary" else "never")
        if not self._dispatch(req, route, key, answer=False) and not self._retry_other_track(
            req, route
        ):
            proxy.budget.tokens += 1.0  # not spent after all
            return False
        proxy.metrics.retry(req.deployment)
        return True

    def _retry_other_track(self, req: Request, route: Any) -> bool:
        """No other endpoint of the version chosen by weight (a one-replica canary):
        the request never reached a backend, so the other version may answer it.
        A version forced by the X-Gantry-Canary header stays forced."""
        if req.info is not None and _override(req.info.override) is not None:
            return False
        other = "never" if req.choice is not None and req.choice.track == "canary" else "always"
        return self._dispatch(req, route, RequestKey(override=other), answer=False)

    # -- upstream events (Exchange) -------------------------------------------
    def client_write(self, out: list[bytes]) -> None:
        if self.transport is not None and not self.closing:
            # One buffer: uvloop writes it at once; several small ones are joined first.
            if len(out) == 1:
                self.transport.write(out[0])
            elif len(out) < 8:
                self.transport.write(b"".join(out))
            else:
                self.transport.writelines(out)

    def up_head(
        self, conn: UpstreamConn, status: int, headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        req = self.queue[0] if self.queue else None
        if req is None or req.up is not conn:
            return
        choice = req.choice
        assert choice is not None
        req.status = status
        bodyless = req.method == b"HEAD" or status in (204, 304)
        cookie = (
            b"gantry-bucket=%d; Path=/; Max-Age=2592000" % choice.bucket
            if choice.set_cookie
            else None
        )
        if status == 101 and not req.upgrading and req.info is not None and req.info.upgrade:
            req.upgrading = True
        if isinstance(headers, tuple):  # a head the upstream side has seen before
            resp = httpmsg.rewrite_response_cached(
                status,
                conn.reason,
                headers,
                bodyless=bodyless,
                client_http11=req.http11,
                keep_alive=req.keep_alive and not self.upgraded,
                set_cookie=cookie,
            )
        else:
            resp = httpmsg.rewrite_response(
                status,
                conn.reason,
                headers,
                bodyless=bodyless,
                client_http11=req.http11,
                keep_alive=req.keep_alive and not self.upgraded,
                set_cookie=cookie,
            )
        req.framing = resp.framing
        req.until_close = resp.until_close
        if resp.framing == "close":
            req.keep_alive = False
        conn.out.append(resp.head)
        if status >= 500:
            self._outlier_failure(req.deployment, conn.key)
        else:
            self.proxy.outliers.success(conn.key)
        if req.method == b"HEAD":
            # The parser cannot know a HEAD answer has no body: end here, and do not
            # reuse the connection (its parser state is not trustworthy).
            conn.finish_without_body()
            self._finish(req, conn, reusable=False)

    def up_body(self, conn: UpstreamConn, data: bytes) -> None:
        req = self.queue[0] if self.queue else None
        if req is None or req.up is not conn:
            return
        if req.framing == "chunked":
            conn.out.extend((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            conn.out.append(data)

    def up_done(self, conn: UpstreamConn) -> None:
        req = self.queue[0] if self.queue else None
        if req is None or req.up is not conn:
            return
        if req.framing == "chunked":
            conn.out.append(httpmsg.LAST_CHUNK)
        self._finish(req, conn, reusable=conn.keep_alive)

    def up_upgrade(self, conn: UpstreamConn, rest: bytes) -> None:
        req = self.queue[0] if self.queue else None
        if req is None or req.up is not conn or not req.upgrading or self.transport is None:
            conn.abort()
            return
        # WebSocket (or other Upgrade) tunnel: bytes pass through both ways until either closes.
        self._observe(req)
        req.done = True
        self.tunnel = conn
        conn.tunnel = self.transport
        if rest:
            self.transport.write(rest)
        assert conn.transport is not None
        for chunk in req.upgrade_rest or []:
            conn.transport.write(chunk)
        req.upgrade_rest = None
        self.deadline = 0.0
        self.deadline_kind = ""
        self._resume(P_UPGRADE)

    def up_lost(self, conn: UpstreamConn, why: str) -> None:
        req = self.queue[0] if self.queue else None
        if req is None or req.up is not conn or req.done:
            return
        proxy = self.proxy
        if req.status and req.until_close and why == "closed":
            # An EOF-delimited body ends here: finish it for the client.
            if conn.out:
                self.client_write(conn.out)
                conn.out = []
            if req.framing == "chunked":
                self._write(httpmsg.LAST_CHUNK)
            self._finish(req, conn, reusable=False)
            return
        ep_key = conn.key
        if req.status:  # mid-response: nothing to say to the client but a cut
            proxy.metrics.upstream_error(req.deployment, "reset")
            self._outlier_failure(req.deployment, ep_key)
            self._abandon(req, req.status)
            self._abort()
            return
        stale = conn.reused and not conn.got_bytes
        if not stale:
            proxy.metrics.upstream_error(req.deployment, "reset" if why == "reset" else "closed")
            self._outlier_failure(req.deployment, ep_key)
        self._release(req)
        safe = req.method in httpmsg.IDEMPOTENT and not req.has_body
        if stale and safe and req.attempts < 3:
            req.attempts -= 1  # a dead pooled connection: try again, it is not the endpoint's fault
            req.up = None
            route = proxy.table.by_deployment.get(req.deployment)
            key = RequestKey(override=_track_override(req))
            if route is not None and self._dispatch(req, route, key, answer=False):
                return
        if safe and self._retry(req, ep_key):
            return
        self._local(
            502, f"upstream {ep_key} {why} the connection before answering ({why})", req=req
        )

    def up_pause_writing(self) -> None:
        self._pause(P_UPSTREAM)

    def up_resume_writing(self) -> None:
        self._resume(P_UPSTREAM)

    # -- completion ---------------------------------------------------------
    def _finish(self, req: Request, conn: UpstreamConn, *, reusable: bool) -> None:
        req.done = True
        proxy = self.proxy
        self._release(req)
        self._observe(req)
        conn.flush()
        if reusable and req.body_done and not conn.closed:
            proxy.pool.put(conn, proxy.now)
        else:
            proxy.pool.busy.discard(conn)
            conn.close()
        self._next(req)

    def _observe(self, req: Request) -> None:
        assert req.choice is not None
        stats = self.proxy.metrics.track(req.deployment, req.choice.track)
        stats.observe(req.status, (_now() - req.started) * 1000.0)

    def _release(self, req: Request) -> None:
        ep, req.held = req.held, None
        if ep is None:
            return
        inflight = self.proxy.inflight
        n = inflight.get(ep.key, 0) - 1
        if n > 0:
            inflight[ep.key] = n
        else:
            inflight.pop(ep.key, None)

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

    def _abandon(self, req: Request, status: int) -> None:
        """The client went away (or we cut it): release and count the request."""
        req.done = True
        if req.choice is None:
            return
        self._release(req)
        req.status = status
        self._observe(req)
        up = req.up
        if up is not None:
            self.proxy.pool.busy.discard(up)
            up.abort()  # mid-exchange: the connection's state is unknown

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

    # -- deadlines, pausing, closing ------------------------------------------
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

    def _outlier_failure(self, deployment: str, key: str) -> None:
        proxy = self.proxy
        ejected_for = proxy.outliers.failure(key, _now())
        if ejected_for is not None:
            proxy.metrics.ejection(deployment)
            log.warning("ejected endpoint %s of %s for %.1fs", key, deployment, ejected_for)


class _HeadTooLarge(Exception):
    pass


def _override(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().lower()
    return value if value in ("always", "never") else None


def _track_override(req: Request) -> str | None:
    if req.choice is None:
        return None
    return "always" if req.choice.track == "canary" else "never"
