"""Unit tests for migrator.apply.throttle's wait with the one signal that needs no server:
the lock waiters the last batch counted, on a clock the sleep moves.

The signals read from the server (replica lag, autovacuum) are tested against real servers
in tests/integration/test_throttle.py; here they are switched off, so ``check`` reads
nothing and the connection is never used."""

from __future__ import annotations

from typing import Any

from migrator.apply.health import LOCK_WAITERS, Pause
from migrator.apply.throttle import Throttle, ThrottleSettings

NO_SERVER_SIGNALS = {"max_replica_lag": 0, "pause_on_autovacuum": False}
NO_CONNECTION: Any = None  # check() reads nothing from the server with both off


class Clock:
    """A monotonic clock the sleep moves on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def throttle(clock: Clock, **settings: Any) -> Throttle:
    merged = {**NO_SERVER_SIGNALS, "check_interval": 1.0, **settings}
    return Throttle(ThrottleSettings(**merged), "public.items", clock.sleep, clock)


def test_waiters_up_to_the_limit_do_not_pause():
    clock = Clock()
    watched = throttle(clock, max_lock_waiters=2)
    watched.after_batch(2)
    assert watched.check(NO_CONNECTION) is None
    assert watched.wait_until_healthy(NO_CONNECTION, "005_backfill") == 0.0
    assert clock.slept == []


def test_more_waiters_than_the_limit_pause_once_with_the_numbers():
    clock = Clock()
    watched = throttle(clock, max_lock_waiters=1)
    watched.after_batch(2)
    assert watched.check(NO_CONNECTION) == Pause(
        LOCK_WAITERS,
        "2 session(s) waited on the last batch's locks (at most 1)",
        {"lock_waiters": 2, "max_lock_waiters": 1},
    )
    heartbeats: list[tuple[Pause, float]] = []
    paused = watched.wait_until_healthy(
        NO_CONNECTION, "005_backfill", lambda pause, seconds: heartbeats.append((pause, seconds))
    )
    # One pause lets the waiters through: the next check is healthy, no heartbeat.
    assert (paused, clock.slept, heartbeats) == (1.0, [1.0], [])
    assert watched.check(NO_CONNECTION) is None


def test_after_a_short_batch_the_waiters_pause_is_as_long_as_the_batch():
    clock = Clock()
    watched = throttle(clock, check_interval=1.0)
    assert watched.wait_until_healthy(NO_CONNECTION, "005_backfill") == 0.0
    clock.now += 0.25  # the batch
    watched.after_batch(1)
    assert watched.batch_seconds == 0.25
    assert watched.wait_until_healthy(NO_CONNECTION, "005_backfill") == 0.25
    assert clock.slept == [0.25]


def test_after_a_long_batch_the_pause_is_the_check_interval():
    clock = Clock()
    watched = throttle(clock, check_interval=0.5)
    watched.wait_until_healthy(NO_CONNECTION, "005_backfill")
    clock.now += 3.0
    watched.after_batch(1)
    assert watched.wait_until_healthy(NO_CONNECTION, "005_backfill") == 0.5
    assert clock.slept == [0.5]


def test_waiters_before_any_measured_batch_pause_the_check_interval():
    clock = Clock()
    watched = throttle(clock, check_interval=0.75)
    watched.after_batch(1)  # no wait_until_healthy before it: the batch was not timed
    assert watched.batch_seconds == 0.0
    assert watched.wait_until_healthy(NO_CONNECTION, "005_backfill") == 0.75
