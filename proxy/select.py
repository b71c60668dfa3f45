"""Backend choice: a pure function of the route, the request's key and an rng.

Owns the canary split (by exact weight over a 0..99 user bucket, so the share
does not depend on how many replicas each track has), the header override
(`X-Gantry-Canary: always|never`), the sticky cookie (it carries the user's
bucket, so a user stays on one version while the weight stays on the same
side of their bucket), and the balancing policies: least-request with two
random choices, round robin and weighted random, skipping ejected endpoints
and endpoints at their concurrency cap. No I/O, no clock: the caller passes
in-flight counts, the ejected set and a seeded `random.Random`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from proxy.table import CANARY, STABLE, Endpoint, Route

CANARY_HEADER = "x-gantry-canary"
COOKIE_NAME = "gantry-bucket"
BUCKETS = 100


class Balance(enum.Enum):
    LEAST_REQUEST = "least_request"
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"


class RequestKey(NamedTuple):
    """What of a request decides its version: the override header and the cookie bucket."""

    override: str | None = None  # "always" | "never" | None
    bucket: int | None = None  # from the sticky cookie, 0..99


NO_KEY = RequestKey()


class Choice(NamedTuple):
    endpoint: Endpoint
    track: str
    bucket: int
    set_cookie: bool  # the response should carry the (new) bucket cookie


@dataclass(frozen=True, slots=True)
class NoBackend:
    reason: str


def parse_override(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().lower()
    return value if value in ("always", "never") else None


def parse_bucket(cookie_header: str | None) -> int | None:
    """The bucket from a Cookie header ('a=1; gantry-bucket=42'), or None."""
    if not cookie_header or COOKIE_NAME not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME:
            try:
                bucket = int(value)
            except ValueError:
                return None
            return bucket if 0 <= bucket < BUCKETS else None
    return None


def choose_track(route: Route, key: RequestKey, rng: random.Random) -> tuple[str, int, bool]:
    """(track, bucket, set_cookie) for a request to `route`."""
    has_canary = bool(route.canary)
    bucket = key.bucket
    fresh = bucket is None
    if bucket is None:
        bucket = rng.randrange(BUCKETS) if has_canary and route.canary_weight else 0
    if not has_canary or key.override == "never":
        return STABLE, bucket, False
    if key.override == "always" or not route.stable:
        return CANARY, bucket, False
    track = CANARY if bucket < route.canary_weight else STABLE
    return track, bucket, fresh and 0 < route.canary_weight < BUCKETS


def pick_endpoint(
    candidates: tuple[Endpoint, ...],
    policy: Balance,
    rng: random.Random,
    *,
    inflight: Mapping[str, int],
    ejected: Collection[str],
    cap: int,
    seq: int = 0,
    exclude: str | None = None,
) -> Endpoint | NoBackend:
    """One endpoint among `candidates`, or why none can take the request."""
    if not candidates:
        return NoBackend("no ready endpoints")
    if not ejected and exclude is None:
        # Fast path: pick among all, accept unless the pick is at its cap.
        picked = _pick(candidates, policy, rng, inflight, seq)
        if not cap or inflight.get(picked.key, 0) < cap:
            return picked
    usable = candidates
    if ejected or exclude is not None or cap:
        usable = tuple(
            e
            for e in candidates
            if e.key not in ejected
            and e.key != exclude
            and (not cap or inflight.get(e.key, 0) < cap)
        )
        if not usable:
            # Panic mode: if every endpoint is ejected, outlier detection would only
            # turn a partial outage into a full one -- use them all (except the cap).
            usable = tuple(
                e
                for e in candidates
                if e.key != exclude and (not cap or inflight.get(e.key, 0) < cap)
            )
            if not usable:
                if cap and any(inflight.get(e.key, 0) >= cap for e in candidates):
                    return NoBackend("all endpoints at their concurrency cap")
                return NoBackend("no other endpoint to retry on")
    if exclude is not None:
        usable = _elsewhere(usable, candidates, exclude)
    return _pick(usable, policy, rng, inflight, seq)


def _elsewhere(
    usable: tuple[Endpoint, ...], candidates: tuple[Endpoint, ...], exclude: str
) -> tuple[Endpoint, ...]:
    """A retry prefers another machine than the failed endpoint's: a connect
    failure often means the whole node is gone, not just one replica."""
    failed = next((e for e in candidates if e.key == exclude), None)
    if failed is None:
        return usable
    if failed.node:
        others = tuple(e for e in usable if e.node != failed.node)
    else:
        others = tuple(e for e in usable if e.address != failed.address)
    return others or usable


def _pick(
    usable: tuple[Endpoint, ...],
    policy: Balance,
    rng: random.Random,
    inflight: Mapping[str, int],
    seq: int,
) -> Endpoint:
    n = len(usable)
    if n == 1:
        return usable[0]
    if policy is Balance.ROUND_ROBIN:
        return usable[seq % n]
    if policy is Balance.WEIGHTED:
        return _weighted(usable, rng)
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    a, b = usable[i], usable[j + 1 if j >= i else j]
    return a if inflight.get(a.key, 0) <= inflight.get(b.key, 0) else b


def _weighted(usable: tuple[Endpoint, ...], rng: random.Random) -> Endpoint:
    total = sum(e.weight for e in usable)
    point = rng.random() * total
    for e in usable:
        point -= e.weight
        if point < 0:
            return e
    return usable[-1]


def choose(
    route: Route,
    key: RequestKey,
    policy: Balance,
    rng: random.Random,
    *,
    inflight: Mapping[str, int],
    ejected: Collection[str],
    cap: int = 0,
    seq: int = 0,
    exclude: str | None = None,
) -> Choice | NoBackend:
    """Track by canary rules, then an endpoint of that track by `policy`."""
    track, bucket, set_cookie = choose_track(route, key, rng)
    candidates = route.canary if track == CANARY else route.stable
    picked = pick_endpoint(
        candidates,
        policy,
        rng,
        inflight=inflight,
        ejected=ejected,
        cap=cap,
        seq=seq,
        exclude=exclude,
    )
    if isinstance(picked, NoBackend):
        return NoBackend(f"deployment {route.deployment} ({track}): {picked.reason}")
    return Choice(picked, track, bucket, set_cookie)
