"""Per-object events: bounded, deduplicated records that `describe` shows.

One etcd record per (object, reason) under /gantry/events/<kind>/<name>/:
a repeated reason bumps `count` and `lastSeen` instead of adding a record,
so an object's events stay bounded by its number of reasons. Writes are
fenced like every leader write; a failed event write is logged, never
raised (events explain, they do not decide).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from controller import keys
from controller.errors import GantryError
from controller.store import Json, Store

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def merge_event(
    old: Json | None, *, obj: str, type_: str, reason: str, message: str, now: float
) -> Json:
    """The event record after one more occurrence (pure)."""
    if old and old.get("message") == message and old.get("type") == type_:
        return {**old, "lastSeen": iso(now), "count": int(old.get("count", 1)) + 1}
    return {
        "object": obj,
        "type": type_,
        "reason": reason,
        "message": message,
        "firstSeen": iso(now),
        "lastSeen": iso(now),
        "count": 1,
    }


class Events:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(
        self, kind: str, name: str, reason: str, message: str, *, type_: str = NORMAL
    ) -> None:
        obj = f"{kind}/{name}"
        log.info("event %s %s: %s", obj, reason, message)
        now = time.time()
        try:
            await self.store.update(
                keys.event(kind, name, reason),
                lambda old: merge_event(
                    old, obj=obj, type_=type_, reason=reason, message=message, now=now
                ),
            )
        except GantryError as exc:
            log.warning("could not record event %s %s: %s", obj, reason, exc)

    async def list(self, kind: str, name: str) -> list[dict[str, Any]]:
        items, _ = await self.store.list(keys.events(kind, name))
        return sorted((i.value for i in items), key=lambda v: str(v.get("lastSeen", "")))
