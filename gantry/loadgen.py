"""Constant HTTP load through the proxy, recording every answer.

Used by the end-to-end tests and the rollout benchmark to show that scaling,
rolling updates, promotes, aborts, a lost node and a lost leader fail no
request. Workers are threads (each may join a host's network namespace, see
gantry.netlab) with keep-alive connections; each answer is recorded with
its time, status and the version and replica that served it. A run is
bounded: it stops by itself after `max_seconds`.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gantry import netlab


@dataclass(frozen=True)
class Answer:
    at: float
    status: int  # 0: no HTTP answer at all
    version: str
    replica: str
    error: str = ""


@dataclass
class Load:
    url: str
    host: str = ""
    netns: str | None = None
    workers: int = 4
    timeout: float = 10.0
    max_seconds: float = 600.0
    pause: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        return list(self.answers)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def _worker(self) -> None:
        if self.netns:
            netlab.setns_thread(self.netns)
        parts = urlsplit(self.url)
        path = parts.path or "/"
        end = time.monotonic() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < end:
            if conn is None:
                conn = http.client.HTTPConnection(
                    parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.timeout
                )
            try:
                conn.request("GET", path, headers={"Host": self.host or parts.netloc})
                resp = conn.getresponse()
                body = resp.read()
                version, replica = _parse(body)
                self._record(Answer(time.monotonic(), resp.status, version, replica))
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(Answer(time.monotonic(), 0, "", "", f"{type(exc).__name__}: {exc}"))
                if conn is not None:
                    conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    # -- reading the record ------------------------------------------------------

    def since(self, t0: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= t0]

    def failures(self, t0: float = 0.0) -> list[Answer]:
        return [a for a in self.since(t0) if a.status != 200]


def _parse(body: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(doc, dict):
        return "", ""
    return str(doc.get("version", "")), str(doc.get("hostname", ""))


def share(answers: list[Answer], version: str) -> float:
    ok = [a for a in answers if a.status == 200]
    return sum(1 for a in ok if a.version == version) / len(ok) if ok else 0.0


def summary(answers: list[Answer]) -> str:
    codes = Counter(a.status for a in answers)
    return ", ".join(f"{n} x {code or 'no answer'}" for code, n in sorted(codes.items()))
