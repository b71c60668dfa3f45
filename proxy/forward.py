"""The forwarding side of a client connection: from a parsed request to its answer.

Owns `Forwarding`, the mixin `ClientConn` inherits (no wrapper: its methods
are the connection's own): routing a request through the live `Table`,
choosing a backend with `proxy.select`, connecting or taking a pooled
upstream connection, retries, the upstream events (`up_head`, `up_body`,
`up_done`, `up_upgrade`, `up_lost`, ... — the `Exchange` that
`proxy.upstream` calls), and finishing a request (observe, release its
in-flight slot, pool or close the upstream connection). It must not parse
client bytes, answer locally, or manage client deadlines and pausing: those
are `proxy.client`'s, reached through the same object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxy import httpmsg
from proxy.request import P_PENDING, P_UPGRADE, P_UPSTREAM, Request, track_override
from proxy.select import (
    NO_KEY,
    Balance,
    NoBackend,
    RequestKey,
    choose,
    parse_bucket,
    parse_override,
)
from proxy.table import Endpoint, normalize_host
from proxy.upstream import UpstreamConn

if TYPE_CHECKING:
    from proxy.server import Proxy

log = logging.getLogger("gantry.proxy")

_now = time.monotonic


class Forwarding:
    """Dispatch, upstream events and completion; mixed into `proxy.client.ClientConn`."""

    if TYPE_CHECKING:  # provided by ClientConn
        proxy: Proxy
        transport: asyncio.Transport | None
        queue: deque[Request]
        closing: bool
        upgraded: bool
        tunnel: UpstreamConn | None
        deadline: float
        deadline_kind: str

        def _local(
            self, status: int, message: str, *, req: Request | None = None, close: bool = False
        ) -> None: ...
        def _next(self, req: Request) -> None: ...
        def client_write(self, out: list[bytes]) -> None: ...
        def _write(self, data: bytes) -> None: ...
        def _pause(self, reason: int) -> None: ...
        def _resume(self, reason: int) -> None: ...
        def _abort(self) -> None: ...

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
            key = RequestKey(parse_override(info.override), parse_bucket(info.cookie))
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
        if req.info is not None and parse_override(req.info.override) is not None:
            return False
        other = "never" if req.choice is not None and req.choice.track == "canary" else "always"
        return self._dispatch(req, route, RequestKey(override=other), answer=False)

    # -- upstream events (Exchange; client_write is proxy.client's) ------------
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
            key = RequestKey(override=track_override(req))
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

    def _outlier_failure(self, deployment: str, key: str) -> None:
        proxy = self.proxy
        ejected_for = proxy.outliers.failure(key, _now())
        if ejected_for is not None:
            proxy.metrics.ejection(deployment)
            log.warning("ejected endpoint %s of %s for %.1fs", key, deployment, ejected_for)
