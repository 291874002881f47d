"""Unit tests for migrator.apply.health: what the throttle's signals mean, and how long a
pause sleeps."""

from __future__ import annotations

import pytest

from migrator.apply.health import (
    AUTOVACUUM,
    LOCK_WAITERS,
    REPLICA_LAG,
    Pause,
    autovacuum_pause,
    lag_pause,
    pause_length,
    size_text,
    through_functions,
    waiters_pause,
)
from migrator.apply.throttle import (
    AUTOVACUUM_FUNCTION_SQL,
    AUTOVACUUM_SQL,
    REPLICA_LAG_FUNCTION_SQL,
    REPLICA_LAG_SQL,
    queries_for,
)

MB = 2**20


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.0 kB"),
        (1536, "1.5 kB"),
        (MB - 1, "1024.0 kB"),
        (64 * MB, "64.0 MB"),
        (3 * 2**30, "3.0 GB"),
        (2**40, "1.0 TB"),
        (5 * 2**50, "5120.0 TB"),
    ],
)
def test_size_text(size, text):
    assert size_text(size) == text


@pytest.mark.parametrize(
    ("sees_views", "lag_function", "autovacuum_function", "lag", "autovacuum"),
    [
        (False, False, False, False, False),
        (False, True, False, True, False),
        (False, False, True, False, True),
        (False, True, True, True, True),
        (True, True, True, False, False),
        (True, False, True, False, False),
        (True, False, False, False, False),
    ],
)
def test_the_functions_only_for_a_role_that_does_not_see_the_views(
    sees_views, lag_function, autovacuum_function, lag, autovacuum
):
    chosen = through_functions(sees_views, lag_function, autovacuum_function)
    assert chosen == {REPLICA_LAG: lag, AUTOVACUUM: autovacuum}
    queries = queries_for(sees_views, lag_function, autovacuum_function)
    assert queries[REPLICA_LAG] == (REPLICA_LAG_FUNCTION_SQL if lag else REPLICA_LAG_SQL)
    assert queries[AUTOVACUUM] == (AUTOVACUUM_FUNCTION_SQL if autovacuum else AUTOVACUUM_SQL)


def test_waiters_up_to_the_limit_do_not_pause():
    assert waiters_pause(0, 0) is None
    assert waiters_pause(3, 3) is None


def test_more_waiters_than_the_limit_pause_with_the_numbers():
    assert waiters_pause(1, 0) == Pause(
        LOCK_WAITERS,
        "1 session(s) waited on the last batch's locks (at most 0)",
        {"lock_waiters": 1, "max_lock_waiters": 0},
    )
    assert waiters_pause(4, 3) is not None


def test_a_lag_over_the_limit_pauses_naming_the_standby():
    assert lag_pause((0, 3 * MB, "standby"), MB) == (
        Pause(
            REPLICA_LAG,
            "replica 'standby' has 3.0 MB of WAL not replayed (at most 1.0 MB)",
            {"replica_lag_bytes": 3 * MB, "max_replica_lag": MB, "standby": "standby"},
        ),
        0,
    )


def test_a_lag_read_through_the_function_names_no_standby():
    pause, hidden = lag_pause((0, MB + 1, None), MB)
    assert pause is not None and hidden == 0
    assert pause.message == "a replica has 1.0 MB of WAL not replayed (at most 1.0 MB)"
    assert pause.numbers["standby"] is None


@pytest.mark.parametrize("row", [(0, MB, "s"), (0, 0, "s"), (0, None, None)])
def test_a_lag_at_most_the_limit_or_no_standby_does_not_pause(row):
    assert lag_pause(row, MB) == (None, 0)


def test_hidden_walsenders_make_the_lag_unknown_not_a_pause():
    assert lag_pause((2, 5 * MB, "s"), MB) == (None, 2)


def test_an_autovacuum_worker_on_the_table_pauses():
    row = (0, "public.items", "scanning heap", False, 1)
    assert autovacuum_pause(row) == (
        Pause(
            AUTOVACUUM,
            "autovacuum is working on public.items (scanning heap)",
            {"relation": "public.items", "phase": "scanning heap", "wraparound": False},
        ),
        0,
    )


def test_an_anti_wraparound_run_says_so_and_hidden_ones_are_counted_beside_it():
    pause, hidden = autovacuum_pause((3, "pg_toast.pg_toast_1", "vacuuming indexes", True, 2))
    assert pause is not None and hidden == 3
    assert pause.message.startswith("an anti-wraparound autovacuum is working on pg_toast")


@pytest.mark.parametrize(
    ("row", "hidden"), [((0, None, None, False, 0), 0), ((2, None, None, False, 0), 2)]
)
def test_no_worker_on_the_table_does_not_pause(row, hidden):
    assert autovacuum_pause(row) == (None, hidden)


def test_after_a_short_batch_the_waiters_pause_is_as_long_as_the_batch():
    waiters = Pause(LOCK_WAITERS, "waiters")
    assert pause_length(waiters, 1.0, 0.25) == 0.25
    assert pause_length(waiters, 1.0, 3.0) == 1.0
    assert pause_length(waiters, 1.0, 1.0) == 1.0
    assert pause_length(waiters, 0.5, 0.0) == 0.5  # the batch was not measured


@pytest.mark.parametrize("signal", [REPLICA_LAG, AUTOVACUUM])
def test_another_signal_pauses_the_check_interval_even_after_a_short_batch(signal):
    assert pause_length(Pause(signal, "busy"), 2.0, 0.1) == 2.0
