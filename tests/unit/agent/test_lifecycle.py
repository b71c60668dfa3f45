"""The container lifecycle state machine: every phase, every event."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent import lifecycle as lc
from agent.lifecycle import Act, Phase, RestartPolicy

T0 = 1000.0


def rec(**kw: object) -> lc.Replica:
    base = lc.Replica(name="web-1", epoch=3)
    return replace(base, **kw)  # type: ignore[arg-type]


def run(r: lc.Replica, *events: object, now: float = T0) -> tuple[lc.Replica, list[Act]]:
    acts: list[Act] = []
    for ev in events:
        r, a = lc.step(r, ev, now)  # type: ignore[arg-type]
        acts.extend(a)
    return r, acts


def running(now: float = T0, **kw: object) -> lc.Replica:
    r, _ = run(rec(**kw), lc.Assigned(), lc.Pulled(), lc.Created(), lc.Started(), now=now)
    assert r.phase is Phase.RUNNING
    return r


# ---- the happy path --------------------------------------------------------------


def test_assigned_pulls_then_creates_then_starts() -> None:
    r = rec()
    r, a = lc.step(r, lc.Assigned(), T0)
    assert r.phase is Phase.PULLING and a == (Act.REPORT, Act.PULL)
    r, a = lc.step(r, lc.Pulled(), T0)
    assert r.phase is Phase.CREATING and r.pulled and a == (Act.REPORT, Act.CREATE)
    r, a = lc.step(r, lc.Created(), T0)
    assert r.phase is Phase.STARTING and a == (Act.START,)
    r, a = lc.step(r, lc.Started(), T0 + 1)
    assert r.phase is Phase.RUNNING and r.started_at == T0 + 1
    assert a == (Act.START_PROBES, Act.REPORT)
    assert not r.ready


def test_assigned_with_image_present_skips_pull() -> None:
    r, a = lc.step(rec(pulled=True), lc.Assigned(), T0)
    assert r.phase is Phase.CREATING and a == (Act.REPORT, Act.CREATE)


def test_assigned_twice_is_ignored() -> None:
    r, _ = lc.step(rec(), lc.Assigned(), T0)
    r2, a = lc.step(r, lc.Assigned(), T0)
    assert r2 == r and a == ()


def test_readiness_flips_ready_and_reports_only_on_change() -> None:
    r = running()
    r, a = lc.step(r, lc.Readiness(True), T0)
    assert r.ready and a == (Act.REPORT,)
    r, a = lc.step(r, lc.Readiness(True), T0)
    assert a == ()
    r, a = lc.step(r, lc.Readiness(False), T0)
    assert not r.ready and a == (Act.REPORT,)


def test_readiness_ignored_outside_running() -> None:
    r, _ = lc.step(rec(), lc.Assigned(), T0)
    r2, a = lc.step(r, lc.Readiness(True), T0)
    assert r2 == r and a == ()


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (Phase.PENDING, lc.Pulled()),
        (Phase.RUNNING, lc.Created()),
        (Phase.RUNNING, lc.Started()),
        (Phase.CREATING, lc.PullFailed("x")),
        (Phase.PULLING, lc.CreateFailed("x")),
        (Phase.CREATING, lc.StartFailed("x")),
        (Phase.PENDING, lc.Exited(0)),
        (Phase.BACKOFF, lc.Exited(1)),
        (Phase.STARTING, lc.LivenessFailed()),
    ],
)
def test_out_of_order_events_change_nothing(phase: Phase, event: object) -> None:
    r = rec(phase=phase)
    r2, a = lc.step(r, event, T0)  # type: ignore[arg-type]
    assert r2 == r and a == ()


# ---- restarts and backoff ---------------------------------------------------------


def test_crash_under_always_backs_off_then_recreates() -> None:
    r = running()
    r, a = lc.step(r, lc.Exited(1), T0 + 5)
    assert r.phase is Phase.BACKOFF and r.restarts == 1 and r.exit_code == 1
    assert r.reason == "CrashLoopBackOff"
    assert a == (Act.STOP_PROBES, Act.CLEANUP, Act.REPORT)
    assert lc.next_deadline(r) == T0 + 6  # 1 s
    r2, a = lc.step(r, lc.Tick(), T0 + 5.5)
    assert r2 == r and a == ()
    r, a = lc.step(r, lc.Tick(), T0 + 6)
    assert r.phase is Phase.CREATING and a == (Act.REPORT, Act.CREATE)
    assert lc.next_deadline(r) is None


def test_backoff_doubles_and_caps() -> None:
    r = running()
    delays = []
    now = T0
    for _ in range(8):
        r, _ = lc.step(r, lc.Exited(1), now)
        delays.append(r.backoff_delay)
        now = r.deadline or now
        r, _ = run(r, lc.Tick(), lc.Created(), lc.Started(), now=now)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert r.restarts == 8


def test_backoff_resets_after_a_long_run() -> None:
    timing = lc.Timing(backoff_reset=60)
    r = running(timing=timing)
    for _ in range(3):
        r, _ = lc.step(r, lc.Exited(1), T0)
        r, _ = run(r, lc.Tick(), lc.Created(), lc.Started(), now=r.deadline or T0)
    assert r.backoff_delay == 4
    started = r.started_at or 0
    r, _ = lc.step(r, lc.Exited(1), started + 61)
    assert r.backoff_delay == 1


def test_next_backoff_is_pure() -> None:
    t = lc.Timing(backoff_base=2, backoff_cap=5, backoff_reset=10)
    assert lc.next_backoff(rec(timing=t), T0) == 2
    assert lc.next_backoff(rec(timing=t, backoff_delay=2, started_at=T0), T0 + 1) == 4
    assert lc.next_backoff(rec(timing=t, backoff_delay=4, started_at=T0), T0 + 1) == 5
    assert lc.next_backoff(rec(timing=t, backoff_delay=4, started_at=T0), T0 + 10) == 2


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        (RestartPolicy.ALWAYS, 0, True),
        (RestartPolicy.ALWAYS, 1, True),
        (RestartPolicy.ON_FAILURE, 0, False),
        (RestartPolicy.ON_FAILURE, 2, True),
        (RestartPolicy.NEVER, 0, False),
        (RestartPolicy.NEVER, 137, False),
    ],
)
def test_restart_policy(policy: RestartPolicy, code: int, restart: bool) -> None:
    assert lc.should_restart(policy, code) is restart
    r, a = lc.step(running(policy=policy), lc.Exited(code), T0)
    if restart:
        assert r.phase is Phase.BACKOFF and r.restarts == 1
    else:
        assert r.phase is (Phase.EXITED if code == 0 else Phase.FAILED)
        assert r.restarts == 0 and r.deadline is None
        assert a == (Act.STOP_PROBES, Act.CLEANUP, Act.REPORT)
        assert lc.report_phase(r) == ("Exited" if code == 0 else "Failed")


def test_restart_policy_parse() -> None:
    assert RestartPolicy.parse("") is RestartPolicy.ALWAYS
    assert RestartPolicy.parse("onfailure") is RestartPolicy.ON_FAILURE
    with pytest.raises(ValueError, match="restartPolicy"):
        RestartPolicy.parse("Sometimes")


def test_pull_failure_backs_off_and_pulls_again() -> None:
    r, _ = lc.step(rec(policy=RestartPolicy.NEVER), lc.Assigned(), T0)
    r, a = lc.step(r, lc.PullFailed("no such image"), T0)
    assert r.phase is Phase.BACKOFF and r.reason == "ImagePullBackOff"
    assert r.message == "no such image" and r.restarts == 0
    r, a = lc.step(r, lc.Tick(), T0 + 1)
    assert r.phase is Phase.PULLING and a == (Act.REPORT, Act.PULL)


def test_create_failure_backs_off_and_cleans() -> None:
    r, _ = run(rec(), lc.Assigned(), lc.Pulled())
    r, a = lc.step(r, lc.CreateFailed("bad bundle"), T0)
    assert r.phase is Phase.BACKOFF and r.reason == "StartError"
    assert a == (Act.CLEANUP, Act.REPORT)


def test_start_failure_under_never_fails() -> None:
    r, _ = run(rec(policy=RestartPolicy.NEVER), lc.Assigned(), lc.Pulled(), lc.Created())
    r, a = lc.step(r, lc.StartFailed("exec: no such file"), T0)
    assert r.phase is Phase.FAILED and a == (Act.CLEANUP, Act.REPORT)


def test_liveness_failure_stops_then_restarts() -> None:
    r = running(grace_seconds=5)
    r, a = lc.step(r, lc.LivenessFailed("GET / -> 500"), T0 + 1)
    assert r.phase is Phase.STOPPING and r.reason == "LivenessProbeFailed"
    assert a == (Act.STOP_PROBES, Act.SIGNAL_TERM, Act.REPORT)
    assert r.deadline == T0 + 6
    r, a = lc.step(r, lc.Exited(143), T0 + 2)
    assert r.phase is Phase.BACKOFF and r.restarts == 1
    assert r.reason == "LivenessProbeFailed"


def test_liveness_failure_under_never_ends_failed() -> None:
    r = running(policy=RestartPolicy.NEVER)
    r, _ = lc.step(r, lc.LivenessFailed(), T0)
    r, _ = lc.step(r, lc.Exited(143), T0)
    assert r.phase is Phase.FAILED and r.reason == "LivenessProbeFailed"


# ---- graceful stop ------------------------------------------------------------------


def test_drain_then_term_then_kill_then_removed() -> None:
    r = running(grace_seconds=10)
    r, _ = lc.step(r, lc.Readiness(True), T0)
    r, a = lc.step(r, lc.StopRequested(drain_seconds=3, reason="Drain"), T0)
    assert r.phase is Phase.DRAINING and not r.ready
    assert a == (Act.STOP_PROBES, Act.REPORT)
    assert lc.report_phase(r) == "Running"
    r2, a = lc.step(r, lc.Tick(), T0 + 2.9)
    assert a == ()
    r, a = lc.step(r, lc.Tick(), T0 + 3)
    assert r.phase is Phase.STOPPING and Act.SIGNAL_TERM in a
    assert r.deadline == T0 + 13
    r, a = lc.step(r, lc.Tick(), T0 + 12)
    assert a == ()
    r, a = lc.step(r, lc.Tick(), T0 + 13)
    assert a == (Act.SIGNAL_KILL,) and r.kill_sent
    r, a = lc.step(r, lc.Exited(137), T0 + 13.1)
    assert r.phase is Phase.REMOVED and r.restarts == 0
    assert a == (Act.STOP_PROBES, Act.CLEANUP, Act.REPORT, Act.FORGET)
    assert lc.report_phase(r) == "Stopped"


def test_stop_without_drain_terms_at_once() -> None:
    r, a = lc.step(running(), lc.StopRequested(0), T0)
    assert r.phase is Phase.STOPPING and a == (Act.STOP_PROBES, Act.SIGNAL_TERM, Act.REPORT)


def test_exit_after_term_never_restarts_even_under_always() -> None:
    r, _ = lc.step(running(), lc.StopRequested(0), T0)
    r, a = lc.step(r, lc.Exited(143), T0 + 1)
    assert r.phase is Phase.REMOVED and Act.FORGET in a


def test_exit_while_draining_removes() -> None:
    r, _ = lc.step(running(), lc.StopRequested(5), T0)
    r, a = lc.step(r, lc.Exited(0), T0 + 1)
    assert r.phase is Phase.REMOVED and a[-1] is Act.FORGET and Act.CLEANUP in a


def test_lost_exit_after_kill_is_assumed() -> None:
    r, _ = lc.step(running(grace_seconds=1), lc.StopRequested(0), T0)
    r, _ = lc.step(r, lc.Tick(), T0 + 1)
    r, a = lc.step(r, lc.Tick(), T0 + 1 + r.timing.kill_timeout)
    assert r.phase is Phase.REMOVED and r.exit_code == 137 and Act.CLEANUP in a


@pytest.mark.parametrize(
    ("events", "cleanup"),
    [
        ((), False),  # Pending
        ((lc.Assigned(), lc.PullFailed("x")), True),  # Backoff
    ],
)
def test_stop_before_running_removes_at_once(events: tuple[object, ...], cleanup: bool) -> None:
    r, _ = run(rec(), *events)
    r, a = lc.step(r, lc.StopRequested(5), T0)
    assert r.phase is Phase.REMOVED and a[-1] is Act.FORGET
    assert (Act.CLEANUP in a) is cleanup


def test_stop_of_terminal_replica_removes_it() -> None:
    r, _ = lc.step(running(policy=RestartPolicy.NEVER), lc.Exited(0), T0)
    r, a = lc.step(r, lc.StopRequested(0), T0)
    assert r.phase is Phase.REMOVED and a == (Act.CLEANUP, Act.REPORT, Act.FORGET)


def test_stop_during_pull_waits_for_the_pull() -> None:
    r, _ = lc.step(rec(), lc.Assigned(), T0)
    r, a = lc.step(r, lc.StopRequested(0), T0)
    assert r.phase is Phase.PULLING and a == () and r.stop_requested
    r, a = lc.step(r, lc.Pulled(), T0)
    assert r.phase is Phase.REMOVED and a == (Act.REPORT, Act.FORGET)


def test_stop_during_create_cleans_after_create() -> None:
    r, _ = run(rec(), lc.Assigned(), lc.Pulled(), lc.StopRequested(0))
    r, a = lc.step(r, lc.Created(), T0)
    assert r.phase is Phase.REMOVED and a == (Act.CLEANUP, Act.REPORT, Act.FORGET)


def test_stop_during_start_terms_once_started() -> None:
    r, _ = run(rec(), lc.Assigned(), lc.Pulled(), lc.Created(), lc.StopRequested(9))
    r, a = lc.step(r, lc.Started(), T0)
    assert r.phase is Phase.STOPPING and Act.SIGNAL_TERM in a and Act.START_PROBES not in a


def test_stop_during_failed_create_removes() -> None:
    r, _ = run(rec(), lc.Assigned(), lc.Pulled(), lc.StopRequested(0))
    r, a = lc.step(r, lc.CreateFailed("x"), T0)
    assert r.phase is Phase.REMOVED and Act.CLEANUP in a


def test_stop_during_liveness_restart_removes_instead_of_restart() -> None:
    r, _ = lc.step(running(), lc.LivenessFailed(), T0)
    r, a = lc.step(r, lc.StopRequested(0), T0)
    assert a == () and r.stop_requested
    r, a = lc.step(r, lc.Exited(143), T0)
    assert r.phase is Phase.REMOVED


def test_second_stop_is_ignored() -> None:
    r, _ = lc.step(running(), lc.StopRequested(5), T0)
    r2, a = lc.step(r, lc.StopRequested(0), T0)
    assert r2 == r and a == ()


def test_stop_during_pending_pull_failure_removes() -> None:
    r, _ = run(rec(), lc.Assigned(), lc.StopRequested(0))
    r, a = lc.step(r, lc.PullFailed("x"), T0)
    assert r.phase is Phase.REMOVED and Act.CLEANUP not in a


# ---- adoption and reporting ---------------------------------------------------------------


def test_adopted_runs_probes_and_reports() -> None:
    r, a = lc.step(rec(restarts=2), lc.Adopted(), T0)
    assert r.phase is Phase.RUNNING and r.pulled and r.restarts == 2
    assert a == (Act.START_PROBES, Act.REPORT)
    r, a = lc.step(r, lc.StopRequested(0), T0)
    assert Act.SIGNAL_TERM in a


@pytest.mark.parametrize(
    ("phase", "text"),
    [
        (Phase.PENDING, "Starting"),
        (Phase.PULLING, "Starting"),
        (Phase.CREATING, "Starting"),
        (Phase.STARTING, "Starting"),
        (Phase.BACKOFF, "Starting"),
        (Phase.RUNNING, "Running"),
        (Phase.DRAINING, "Running"),
        (Phase.STOPPING, "Running"),
        (Phase.EXITED, "Exited"),
        (Phase.FAILED, "Failed"),
        (Phase.REMOVED, "Stopped"),
    ],
)
def test_report_phase(phase: Phase, text: str) -> None:
    assert lc.report_phase(rec(phase=phase)) == text


def test_tick_without_deadline_does_nothing() -> None:
    r = running()
    assert lc.step(r, lc.Tick(), T0 + 1e6) == (r, ())
