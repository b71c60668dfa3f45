"""One request's exchange record, and the small pure facts the data path shares.

Owns `Request` (per-request state, defaults on the class so a request sets
only what differs), the bit mask of reasons a client connection's reading is
paused, and the pure helper that pins a retried request to its track. No
I/O and no behaviour: the client side (`proxy.client`) and the forwarding side
(`proxy.forward`) act on it.
"""

from __future__ import annotations

from proxy import httpmsg
from proxy.select import Choice
from proxy.table import Endpoint
from proxy.upstream import UpstreamConn

# Reasons a client connection's reading is paused (a bit mask).
P_QUEUE, P_PENDING, P_UPSTREAM, P_UPGRADE = 1, 2, 4, 8


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


def track_override(req: Request) -> str | None:
    """The X-Gantry-Canary override that keeps a retried request on its chosen track."""
    if req.choice is None:
        return None
    return "always" if req.choice.track == "canary" else "never"
