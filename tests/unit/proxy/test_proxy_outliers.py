"""Outlier ejection with exponential back-off and re-admission; the retry budget."""

from __future__ import annotations

from proxy.health import Outliers, RetryBudget


def test_ejected_after_consecutive_failures_only() -> None:
    o = Outliers(consecutive=3, base_ejection=1.0, max_ejection=10.0)
    assert o.failure("a", 0.0) is None
    assert o.failure("a", 0.0) is None
    o.success("a")  # breaks the run
    assert o.failure("a", 0.0) is None
    assert o.failure("a", 0.0) is None
    assert o.failure("a", 0.0) == 1.0
    assert "a" in o.ejected


def test_back_off_doubles_and_is_capped_and_readmits() -> None:
    o = Outliers(consecutive=1, base_ejection=1.0, max_ejection=3.0)
    assert o.failure("a", 0.0) == 1.0
    assert o.readmit(0.5) == [] and "a" in o.ejected
    assert o.readmit(1.0) == ["a"] and "a" not in o.ejected
    assert o.failure("a", 1.0) == 2.0
    assert o.readmit(3.0) == ["a"]
    assert o.failure("a", 3.0) == 3.0  # capped


def test_recovered_endpoint_forgets_its_back_off() -> None:
    o = Outliers(consecutive=2, base_ejection=1.0, max_ejection=30.0)
    o.failure("a", 0.0)
    assert o.failure("a", 0.0) == 1.0
    o.readmit(2.0)
    o.success("a")
    o.success("a")
    o.failure("a", 3.0)
    assert o.failure("a", 3.0) == 1.0


def test_forget_drops_removed_endpoints() -> None:
    o = Outliers(consecutive=1)
    o.failure("a", 0.0)
    o.forget({"b"})
    assert o.ejected == {}


def test_retry_budget_is_a_share_of_traffic() -> None:
    b = RetryBudget(ratio=0.25, burst=2.0, tokens=2.0)
    assert b.spend() and b.spend() and not b.spend()
    for _ in range(3):
        b.deposit()
    assert not b.spend()  # 0.75 of a retry: not yet
    b.deposit()
    assert b.spend()
    for _ in range(100):
        b.deposit()
    assert b.tokens == 2.0  # capped at the burst
