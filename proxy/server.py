"""The data path's entry point: one worker's `Proxy`, and the names it is known by.

Owns `Proxy`, a worker's shared state (table, upstream pool, counters,
outliers, retry budget, its client connections) and the periodic sweep.
One request's work lives elsewhere: `proxy.client` (the client connection:
parsing, queueing, local answers, deadlines, flow control), `proxy.forward`
(routing, backend choice, upstream connections, retries, streaming the
answer back) and `proxy.request` (one request's state). Everything there is
callback driven: no Task, coroutine or response object per request. The
decisions applied live in pure modules (`select`, `health`, `httpmsg`,
`table`). `ClientConn` and `Request` stay importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from proxy.client import ClientConn
from proxy.health import Outliers, RetryBudget
from proxy.metrics import Metrics
from proxy.request import Request
from proxy.select import Balance
from proxy.settings import ProxySettings
from proxy.table import Table
from proxy.upstream import Pool

__all__ = ["ClientConn", "Proxy", "Request"]

log = logging.getLogger("gantry.proxy")

_now = time.monotonic


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
