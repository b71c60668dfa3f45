"""Passive health: outlier ejection with exponential back-off, and a retry budget.

Owns the bookkeeping a worker keeps per upstream endpoint (keyed
'address:port'): consecutive failures (5xx answers, connect errors, resets),
ejection with a back-off that doubles with each ejection, re-admission when it
runs out, and the token bucket that caps retries to a share of traffic. Time
is passed in (`now`), nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _State:
    failures: int = 0
    ejections: int = 0
    successes_since_readmit: int = 0


@dataclass(slots=True)
class Outliers:
    """Consecutive-failure ejection. `ejected` maps key -> re-admission time."""

    consecutive: int = 5
    base_ejection: float = 1.0
    max_ejection: float = 30.0
    ejected: dict[str, float] = field(default_factory=dict)
    _states: dict[str, _State] = field(default_factory=dict)

    def success(self, key: str) -> None:
        state = self._states.get(key)
        if state is None:
            return
        state.failures = 0
        state.successes_since_readmit += 1
        if state.successes_since_readmit >= self.consecutive:
            del self._states[key]  # healthy again: forget the back-off

    def failure(self, key: str, now: float) -> float | None:
        """Count a failure; returns the ejection's duration if this one ejects."""
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        state.failures += 1
        state.successes_since_readmit = 0
        if state.failures < self.consecutive or key in self.ejected:
            return None
        duration = min(self.max_ejection, self.base_ejection * 2**state.ejections)
        state.ejections += 1
        state.failures = 0
        self.ejected[key] = now + duration
        return duration

    def readmit(self, now: float) -> list[str]:
        """Re-admit endpoints whose back-off ran out; returns their keys."""
        due = [k for k, until in self.ejected.items() if until <= now]
        for key in due:
            del self.ejected[key]
        return due

    def forget(self, keep: set[str]) -> None:
        """Drop state of endpoints no longer in the table."""
        for key in [k for k in self._states if k not in keep]:
            del self._states[key]
        for key in [k for k in self.ejected if k not in keep]:
            del self.ejected[key]


@dataclass(slots=True)
class RetryBudget:
    """Each request deposits `ratio` of a retry (up to `burst`); a retry spends one."""

    ratio: float = 0.2
    burst: float = 10.0
    tokens: float = 10.0

    def deposit(self) -> None:
        tokens = self.tokens + self.ratio
        self.tokens = tokens if tokens < self.burst else self.burst

    def spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
