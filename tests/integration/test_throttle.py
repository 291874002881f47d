"""The throttle of batched data migrations against real servers: a streaming standby whose
replay is paused, a session waiting on a row the batch's transaction holds, an autovacuum
worker on the table, and roles that may not see those.

The servers are this module's own: a primary with a 1 s autovacuum naptime (so a worker comes
within seconds) whose standby reports its replay position every second.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog

from migrator.apply.health import size_text
from migrator.apply.throttle import WAITERS_SQL, Throttle, ThrottleSettings
from migrator.cli.signals import install_signal_handlers
from migrator.errors import Interrupted
from migrator.logs import configure_logging
from tests.conftest import (
    REPO,
    Database,
    MigrationsFolder,
    PgServer,
    RunResult,
    create_database,
    drop_database,
    launch,
    remember_secret,
)
from tests.faults.conftest import Watched

FAST = 0.1  # the check interval of these tests, seconds
SERVER_SETTINGS = {
    "autovacuum_naptime": "1s",
    "wal_receiver_status_interval": "1s",  # the standby's replay position reaches the primary
    "log_autovacuum_min_duration": "0",
}
UNPRIVILEGED = "throttle_owner"
# The server's autovacuum comes within a second to a table just filled (inserts count since
# PostgreSQL 13): tests of the other signals leave that one out.
NO_AUTOVACUUM: dict[str, Any] = {"pause_on_autovacuum": False}
UNPRIVILEGED_PASSWORD = "owner-Throttle-8c1d-b27e"


@pytest.fixture(scope="module")
def primary() -> Iterator[PgServer]:
    server = PgServer.create(settings=SERVER_SETTINGS)
    remember_secret(server.password)
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def standby(primary: PgServer) -> Iterator[PgServer]:
    server = PgServer.standby_of(primary)
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def database(primary: PgServer) -> Iterator[Database]:
    created = create_database(primary)
    yield created
    drop_database(created)


@pytest.fixture
def events() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The runner's JSON log, as parsed events (configure_logging is process-wide)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == name]


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            assert found, f"not within {timeout}s"
            return found
        time.sleep(0.05)


class StillPaused(Exception):
    pass


def sleeps(count: int) -> Callable[[float], None]:
    """A sleep that gives up (StillPaused) after ``count`` real ones: the throttle kept waiting."""
    slept = []

    def sleep(seconds: float) -> None:
        if len(slept) == count:
            raise StillPaused
        slept.append(seconds)
        time.sleep(seconds)

    return sleep


def later(delay: float, action: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run(database: Database, sql: str) -> None:
    """A statement that returns no rows (Database.query fetches them)."""
    with database.connect() as conn:
        conn.execute(sql)


def replay_lag(database: Database) -> int:
    lag = database.scalar(
        "SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::bigint "
        "FROM pg_stat_replication"
    )
    return int(lag or 0)


# --- replica replay lag -------------------------------------------------------------------------


def test_paused_replay_pauses_until_resumed(
    primary: PgServer, standby: PgServer, database: Database, events: Any
) -> None:
    settings = ThrottleSettings(check_interval=FAST, max_replica_lag=2**20, **NO_AUTOVACUUM)
    throttle = Throttle(settings, "public.t")
    eventually(lambda: replay_lag(database) < 2**20)  # the standby has caught up
    with database.connect() as conn:
        assert throttle.reason(conn) is None
        with psycopg.connect(**standby.conninfo(), autocommit=True) as on_standby:
            on_standby.execute("SELECT pg_wal_replay_pause()")
            try:
                conn.execute("CREATE TABLE t AS SELECT generate_series(1, 100000) AS id")
                eventually(lambda: replay_lag(database) > 2**20)
                reason = throttle.reason(conn)
                assert reason is not None
                assert reason.startswith("replica 'standby' has ")
                assert reason.endswith(" MB of WAL not replayed (at most 1.0 MB)")
                later(1.0, lambda: on_standby.execute("SELECT pg_wal_replay_resume()"))
                paused = throttle.wait_until_healthy(conn, "005_backfill")
            finally:
                on_standby.execute("SELECT pg_wal_replay_resume()")
        assert throttle.reason(conn) is None
    assert paused >= 1.0
    [pause] = named(events(), "batch_paused")
    assert (pause["version"], pause["table"], pause["signal"]) == (
        "005_backfill",
        "public.t",
        "replica_lag",
    )
    assert pause["replica_lag_bytes"] > 2**20
    assert (pause["max_replica_lag"], pause["standby"]) == (2**20, "standby")
    assert pause["reason"].startswith("replica 'standby' has ")
    [resume] = named(events(), "batch_resumed")
    assert resume["paused_seconds"] == pytest.approx(paused, abs=0.01)
    assert named(events(), "replica_lag_unknown") == []


def test_replica_lag_off_and_under_the_limit_do_not_pause(
    standby: PgServer, database: Database
) -> None:
    with (
        database.connect() as conn,
        psycopg.connect(**standby.conninfo(), autocommit=True) as on_standby,
    ):
        on_standby.execute("SELECT pg_wal_replay_pause()")
        try:
            conn.execute("CREATE TABLE t AS SELECT generate_series(1, 100000) AS id")
            eventually(lambda: replay_lag(database) > 2**20)
            off = Throttle(ThrottleSettings(max_replica_lag=0, **NO_AUTOVACUUM), "public.t")
            assert off.reason(conn) is None
            roomy = Throttle(ThrottleSettings(max_replica_lag=2**30, **NO_AUTOVACUUM), "public.t")
            assert roomy.reason(conn) is None
            tight = Throttle(ThrottleSettings(max_replica_lag=2**20, **NO_AUTOVACUUM), "public.t")
            assert tight.reason(conn) is not None
        finally:
            on_standby.execute("SELECT pg_wal_replay_resume()")


def test_a_role_that_cannot_see_the_positions_is_told_once_and_not_paused(
    standby: PgServer, database: Database, events: Any
) -> None:
    # Without pg_read_all_stats every column but the pid reads NULL: the lag is unknown, not 0.
    run(database, f"CREATE ROLE {UNPRIVILEGED} LOGIN PASSWORD '{UNPRIVILEGED_PASSWORD}'")
    try:
        with database.connect(user=UNPRIVILEGED, password=UNPRIVILEGED_PASSWORD) as conn:
            throttle = Throttle(ThrottleSettings(max_replica_lag=1), "public.t")
            assert throttle.reason(conn) is None
            assert throttle.reason(conn) is None
        [unknown] = named(events(), "replica_lag_unknown")
        assert unknown["level"] == "warning"
        assert unknown["reason"] == (
            "1 walsender(s) in pg_stat_replication show no position to this role "
            "(not a member of pg_read_all_stats)"
        )
        assert unknown["hint"].startswith("the run goes on without pausing for it; a member of ")
        # With pg_monitor it sees them (and the standby is within 1 byte only when idle).
        run(database, f"GRANT pg_monitor TO {UNPRIVILEGED}")
        with database.connect(user=UNPRIVILEGED, password=UNPRIVILEGED_PASSWORD) as conn:
            Throttle(ThrottleSettings(max_replica_lag=1), "public.t").reason(conn)
        assert len(named(events(), "replica_lag_unknown")) == 1
    finally:
        run(database, f"DROP ROLE {UNPRIVILEGED}")


def test_a_server_that_refuses_the_view_is_told_once_and_not_paused(
    database: Database, events: Any
) -> None:
    # As on a managed service or a pooler's target that keeps pg_stat_replication to itself.
    run(database, f"CREATE ROLE {UNPRIVILEGED} LOGIN PASSWORD '{UNPRIVILEGED_PASSWORD}'")
    run(database, "REVOKE SELECT ON pg_catalog.pg_stat_replication FROM PUBLIC")
    try:
        with database.connect(user=UNPRIVILEGED, password=UNPRIVILEGED_PASSWORD) as conn:
            throttle = Throttle(ThrottleSettings(max_replica_lag=1), "public.t")
            assert throttle.reason(conn) is None
            assert throttle.reason(conn) is None
            conn.execute("SELECT 1")  # the session is fine
    finally:
        run(database, "GRANT SELECT ON pg_catalog.pg_stat_replication TO PUBLIC")
        run(database, f"DROP ROLE {UNPRIVILEGED}")
    [unknown] = named(events(), "replica_lag_unknown")
    assert unknown["reason"] == "42501 permission denied for view pg_stat_replication"


# --- lock waiters -------------------------------------------------------------------------------


def waiting_sessions(database: Database) -> int:
    return int(database.scalar("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"))


def test_waiters_sql_counts_the_sessions_waiting_on_the_batch(database: Database) -> None:
    run(database, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    run(database, "INSERT INTO t SELECT i, 0 FROM generate_series(1, 10) i")
    with database.connect() as batch, database.connect() as other:
        batch.execute("BEGIN")
        batch.execute("UPDATE t SET v = 1 WHERE id BETWEEN 1 AND 5")
        assert batch.execute(WAITERS_SQL).fetchone() == (0,)
        # Another transaction's lock that a third session waits on is not the batch's.
        other.execute("BEGIN")
        other.execute("UPDATE t SET v = 2 WHERE id = 9")
        blocked = [
            threading.Thread(target=run, args=(database, sql), daemon=True)
            for sql in (
                "UPDATE t SET v = 3 WHERE id = 2",
                "UPDATE t SET v = 4 WHERE id = 3",
                "UPDATE t SET v = 5 WHERE id = 9",
            )
        ]
        for thread in blocked:
            thread.start()
        eventually(lambda: waiting_sessions(database) == 3)
        assert batch.execute(WAITERS_SQL).fetchone() == (2,)
        batch.execute("COMMIT")
        other.execute("COMMIT")
        for thread in blocked:
            thread.join(10)


def test_lock_waiters_pause_one_interval(database: Database, events: Any) -> None:
    settings = ThrottleSettings(check_interval=FAST, max_lock_waiters=1)
    throttle = Throttle(settings, "public.t")
    with database.connect() as conn:
        throttle.after_batch(1)
        assert throttle.reason(conn) is None
        throttle.after_batch(2)
        assert throttle.reason(conn) == "2 session(s) waited on the last batch's locks (at most 1)"
        started = time.monotonic()
        paused = throttle.wait_until_healthy(conn, "005_backfill")
        assert FAST <= paused <= time.monotonic() - started
        assert throttle.reason(conn) is None  # until the next batch counts again
    [pause] = named(events(), "batch_paused")
    assert (pause["signal"], pause["lock_waiters"], pause["max_lock_waiters"]) == (
        "lock_waiters",
        2,
        1,
    )
    assert named(events(), "batch_resumed")[0]["paused_seconds"] >= FAST


def test_after_a_short_batch_the_pause_is_as_short(database: Database, events: Any) -> None:
    # The waiters went on when the batch committed: a pause as long as the batch took leaves
    # the application the table half the time, without the whole check interval.
    throttle = Throttle(ThrottleSettings(check_interval=30), "public.t")
    with database.connect() as conn:
        assert throttle.wait_until_healthy(conn, "005_backfill") == 0.0
        time.sleep(0.3)  # the batch
        throttle.after_batch(1)
        started = time.monotonic()
        paused = throttle.wait_until_healthy(conn, "005_backfill")
        assert 0.3 <= paused <= time.monotonic() - started < 3
    [resumed] = named(events(), "batch_resumed")
    assert resumed["paused_seconds"] == pytest.approx(paused, abs=0.01)


def test_sigterm_during_a_pause_stops_it(database: Database, events: Any) -> None:
    # The entrypoint's handler raises Interrupted in the main thread, inside the sleep.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    install_signal_handlers()
    try:
        throttle = Throttle(ThrottleSettings(check_interval=30), "public.t")
        throttle.after_batch(1)
        with database.connect() as conn:
            later(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
            started = time.monotonic()
            with pytest.raises(Interrupted) as caught:
                throttle.wait_until_healthy(conn, "005_backfill")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert caught.value.exit_code == 143
    assert time.monotonic() - started < 5
    assert len(named(events(), "batch_paused")) == 1
    assert named(events(), "batch_resumed") == []


# --- autovacuum ---------------------------------------------------------------------------------

# Every page the worker reads costs more than its limit: it sleeps 0.1 s or more per page, and
# the table has a few hundred pages, so it works for a minute unless cancelled.
SLOW_AUTOVACUUM = (
    "autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0, "
    "autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1"
)
AUTOVACUUM_ON = (
    "SELECT v.relid::regclass::text FROM pg_stat_progress_vacuum v "
    "JOIN pg_stat_activity a USING (pid) WHERE a.backend_type = 'autovacuum worker'"
)


def busy_autovacuum(database: Database, table: str, rows: int = 60000) -> None:
    """Make autovacuum work on ``table`` slowly; returns once a worker is on it."""
    run(database, f"CREATE TABLE {table} (id int PRIMARY KEY, v int) WITH ({SLOW_AUTOVACUUM})")
    run(database, f"INSERT INTO {table} SELECT i, 0 FROM generate_series(1, {rows}) i")
    run(database, f"DELETE FROM {table} WHERE id % 2 = 0")
    eventually(lambda: (table,) in database.query(AUTOVACUUM_ON), timeout=60)


def stop_autovacuum(database: Database, table: str) -> None:
    # The worker gives way to a conflicting lock request (not an anti-wraparound one).
    run(database, f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


def test_autovacuum_on_the_table_pauses_until_it_ends(database: Database, events: Any) -> None:
    run(database, "CREATE TABLE other (id int)")
    busy_autovacuum(database, "t")
    with database.connect() as conn:
        reason = Throttle(ThrottleSettings(), "public.t").reason(conn)
        assert reason is not None
        assert reason.startswith("autovacuum is working on t (")
        assert Throttle(ThrottleSettings(pause_on_autovacuum=False), "t").reason(conn) is None
        assert Throttle(ThrottleSettings(), "public.other").reason(conn) is None
        throttle = Throttle(ThrottleSettings(check_interval=FAST), "public.t")
        later(1.0, lambda: stop_autovacuum(database, "t"))
        paused = throttle.wait_until_healthy(conn, "005_backfill")
    assert paused >= 1.0
    [pause] = named(events(), "batch_paused")
    assert (pause["signal"], pause["relation"], pause["wraparound"]) == ("autovacuum", "t", False)
    assert pause["phase"]
    assert named(events(), "batch_resumed")[0]["paused_seconds"] >= 1.0


def test_an_anti_wraparound_autovacuum_pauses_too(database: Database, events: Any) -> None:
    # Autovacuum is off for the table, but its oldest XID is older than its freeze_max_age (the
    # lowest allowed): the worker comes anyway, to prevent wraparound, and cannot be cancelled
    # by a lock request. 100,000 XIDs: one per subtransaction that writes.
    run(database, f"CREATE TABLE t (id int PRIMARY KEY, v int) WITH ({SLOW_AUTOVACUUM}, "
        "autovacuum_enabled = false, autovacuum_freeze_max_age = 100000)")  # fmt: skip
    run(database, "INSERT INTO t SELECT i, 0 FROM generate_series(1, 60000) i")
    run(database, "CREATE TABLE xids (id int)")
    run(database, "DO $$ BEGIN FOR i IN 1..100001 LOOP BEGIN INSERT INTO xids VALUES (i); "
        "EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$")  # fmt: skip
    eventually(lambda: ("t",) in database.query(AUTOVACUUM_ON), timeout=60)
    throttle = Throttle(ThrottleSettings(check_interval=FAST), "public.t", sleep=sleeps(5))
    with database.connect() as conn:
        reason = throttle.reason(conn)
        assert reason is not None
        assert reason.startswith("an anti-wraparound autovacuum is working on t (")
        with pytest.raises(StillPaused):
            throttle.wait_until_healthy(conn, "005_backfill")
    [pause] = named(events(), "batch_paused")
    assert (pause["signal"], pause["wraparound"]) == ("autovacuum", True)


def test_autovacuum_unseen_by_a_role_without_pg_read_all_stats(
    database: Database, events: Any
) -> None:
    run(database, f"CREATE ROLE {UNPRIVILEGED} LOGIN PASSWORD '{UNPRIVILEGED_PASSWORD}'")
    try:
        busy_autovacuum(database, "t")
        with database.connect(user=UNPRIVILEGED, password=UNPRIVILEGED_PASSWORD) as conn:
            throttle = Throttle(ThrottleSettings(max_replica_lag=0), "public.t")
            assert throttle.reason(conn) is None
            assert throttle.reason(conn) is None
        [unknown] = named(events(), "autovacuum_unknown")
        assert unknown["reason"] == (
            "1 vacuum(s) in pg_stat_progress_vacuum show no table to this role "
            "(not a member of pg_read_all_stats)"
        )
    finally:
        stop_autovacuum(database, "t")
        run(database, f"DROP OWNED BY {UNPRIVILEGED}; DROP ROLE {UNPRIVILEGED}")


# --- through the entrypoint: a backfill that pauses ---------------------------------------------

ROWS = 3000
# A row of about 1 kB: the table's creation writes a few MB of WAL.
ITEMS = (
    "CREATE TABLE items (id bigint PRIMARY KEY, done int NOT NULL DEFAULT 0, note text, "
    "pad text NOT NULL DEFAULT repeat('x', 1000));\n"
    f"INSERT INTO items (id) SELECT g FROM generate_series(1, {ROWS}) g;\n"
)
BACKFILL = (
    "-- Description: count each item once\n-- migrate:phase post\n"
    "-- migrate:batch table=public.items key=id size=500\n"
    "UPDATE items SET done = done + 1 WHERE id BETWEEN $1 AND $2;\n"
)
# The first batch (item 1's, and more rows than the application's one) holds its rows for
# 0.5 s after changing them: long enough for the application's update of item 1 to queue
# behind it.
SLOW_FIRST_BATCH = (
    "CREATE FUNCTION linger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF (SELECT count(*) > 1 AND bool_or(id = 1) FROM changed) THEN PERFORM pg_sleep(0.5); "
    "END IF; RETURN NULL; END $$;\n"
    "CREATE TRIGGER linger AFTER UPDATE ON items REFERENCING NEW TABLE AS changed "
    "FOR EACH STATEMENT EXECUTE FUNCTION linger();\n"
)


def counts(database: Database) -> dict[int, int]:
    """How many items were done how many times."""
    return dict(database.query("SELECT done, count(*) FROM items GROUP BY done ORDER BY done"))


def backfill_env(database: Database, migrations: MigrationsFolder, **extra: str) -> dict[str, str]:
    """The backfill's settings: a short check interval, autovacuum (which comes to the table
    just filled, at any moment) not a reason to pause."""
    return database.env(
        MIGRATIONS_DIR=str(migrations.path),
        BATCH_CHECK_INTERVAL="0.2s",
        BATCH_PAUSE_ON_AUTOVACUUM="false",
        **extra,
    )


def backfill_while_replay_paused(
    standby: PgServer, database: Database, env: dict[str, str], workdir: Path, hold: float = 0.0
) -> tuple[dict[str, Any], RunResult, float]:
    """Run the backfill with the standby's replay paused until the run pauses, and ``hold``
    seconds more; returns that pause, the finished run and when replay resumed."""
    eventually(lambda: replay_lag(database) < 2**20)
    with psycopg.connect(**standby.conninfo(), autocommit=True) as on_standby:
        on_standby.execute("SELECT pg_wal_replay_pause()")
        try:
            watched = Watched(launch(env=env, workdir=workdir))
            pause = watched.wait_for(lambda event: event["event"] == "batch_paused")
            assert pause is not None, watched.finish()
            # Paused before its first batch: the table's creation is not replayed yet.
            assert database.scalar("SELECT count(*) FROM items WHERE done > 0") == 0
            time.sleep(hold)
            assert database.scalar("SELECT count(*) FROM items WHERE done > 0") == 0
            resumed_at = time.monotonic()
            on_standby.execute("SELECT pg_wal_replay_resume()")
            return pause, watched.finish(), resumed_at
        finally:
            on_standby.execute("SELECT pg_wal_replay_resume()")


def test_a_backfill_waits_for_a_paused_standby_then_finishes(
    standby: PgServer, database: Database, migrations: MigrationsFolder, tmp_path: Path
) -> None:
    migrations.add({"001_items.sql": ITEMS, "002_backfill.sql": BACKFILL})
    env = backfill_env(database, migrations, BATCH_MAX_REPLICA_LAG="1MB", PROGRESS_INTERVAL="0.3s")
    pause, result, resumed_at = backfill_while_replay_paused(
        standby, database, env, tmp_path, hold=1.0
    )
    assert result.returncode == 0, result
    assert counts(database) == {1: ROWS}
    assert (pause["signal"], pause["version"], pause["standby"]) == (
        "replica_lag",
        "002_backfill",
        "standby",
    )
    assert pause["replica_lag_bytes"] > 2**20
    # The backfill's own WAL may put the standby over 1MB again while it catches up: each
    # pause is then a replica_lag one, resumed.
    pauses, resumes = result.events_named("batch_paused"), result.events_named("batch_resumed")
    assert {event["signal"] for event in pauses} == {"replica_lag"}
    assert len(pauses) == len(resumes)
    assert resumes[0]["paused_seconds"] >= 1.0
    names = [event["event"] for event in result.events]
    assert names.index("batch_paused") < names.index("batch_resumed")
    assert names.index("batch_resumed") < names.index("batch_committed")
    assert time.monotonic() - resumed_at < 30
    # While paused, a batch_progress every PROGRESS_INTERVAL says the run is alive, and why.
    first_pause = result.events[names.index("batch_paused") : names.index("batch_resumed")]
    beats = named(first_pause, "batch_progress")
    assert len(beats) >= 2, names
    # The reason as batch_paused gives it, with the lag of the moment.
    lag, limit = "replica 'standby' has ", " of WAL not replayed (at most 1.0 MB)"
    assert pause["reason"] == lag + size_text(pause["replica_lag_bytes"]) + limit, pause
    assert all(b["paused"] and b["reason"].startswith(lag) for b in beats), beats
    assert all(b["reason"].endswith(limit) for b in beats), beats
    assert all(b["signal"] == "replica_lag" and b["rows_done"] == 0 for b in beats), beats
    seconds = [b["paused_seconds"] for b in beats]
    assert seconds == sorted(seconds) and 0.3 <= seconds[0] < seconds[-1], seconds
    assert seconds[-1] <= resumes[0]["paused_seconds"], (seconds, resumes[0])
    going = [e for e in result.events_named("batch_progress") if not e["paused"]]
    assert all("reason" not in e for e in going), going
    [finished] = result.events_named("batch_finished")
    paused = sum(event["paused_seconds"] for event in resumes)
    assert finished["paused_seconds"] == pytest.approx(paused, abs=0.01)
    assert [e["version"] for e in result.events_named("migration_applied")] == [
        "001_items",
        "002_backfill",
    ]


def test_a_backfill_pauses_after_a_batch_the_application_waited_on(
    database: Database, migrations: MigrationsFolder, run_runner: Any
) -> None:
    migrations.add({"001_items.sql": ITEMS + SLOW_FIRST_BATCH, "002_backfill.sql": BACKFILL})
    stop = threading.Event()

    def application() -> None:
        with database.connect() as conn:
            while not stop.is_set():
                with contextlib.suppress(psycopg.errors.UndefinedTable):
                    conn.execute("UPDATE items SET note = 'seen' WHERE id = 1")
                time.sleep(0.02)

    app = threading.Thread(target=application, daemon=True)
    app.start()
    try:
        result = run_runner(env=backfill_env(database, migrations))
    finally:
        stop.set()
        app.join(10)
    assert result.returncode == 0, result
    assert counts(database) == {1: ROWS}
    [pause] = result.events_named("batch_paused")
    assert (pause["signal"], pause["lock_waiters"], pause["max_lock_waiters"]) == (
        "lock_waiters",
        1,
        0,
    )
    assert pause["reason"] == "1 session(s) waited on the last batch's locks (at most 0)"
    [resumed] = result.events_named("batch_resumed")
    assert 0.2 <= resumed["paused_seconds"] < 2
    # After the first batch, which the application's update of item 1 waited on.
    names = [event["event"] for event in result.events]
    assert names.index("batch_committed") < names.index("batch_paused")
    assert result.events_named("batch_committed")[0]["lower"] == "1"


def test_sigterm_while_paused_exits_143_and_the_next_run_finishes(
    standby: PgServer, database: Database, migrations: MigrationsFolder, tmp_path: Path
) -> None:
    migrations.add({"001_items.sql": ITEMS, "002_backfill.sql": BACKFILL})
    env = backfill_env(database, migrations, BATCH_MAX_REPLICA_LAG="1MB")
    eventually(lambda: replay_lag(database) < 2**20)
    with psycopg.connect(**standby.conninfo(), autocommit=True) as on_standby:
        on_standby.execute("SELECT pg_wal_replay_pause()")
        try:
            watched = Watched(launch(env=env, workdir=tmp_path))
            assert watched.wait_for(lambda event: event["event"] == "batch_paused"), (
                watched.finish()
            )
            watched.signal(signal.SIGTERM)
            stopped = watched.finish()
        finally:
            on_standby.execute("SELECT pg_wal_replay_resume()")
    assert stopped.returncode == 143, stopped
    assert stopped.events_named("batch_resumed") == []
    assert counts(database) == {0: ROWS}
    assert database.query("SELECT version FROM schema_migrations ORDER BY 1") == [("001_items",)]
    finished = Watched(launch(env=env, workdir=tmp_path)).finish()
    assert finished.returncode == 0, finished
    assert counts(database) == {1: ROWS}
    assert [e["version"] for e in finished.events_named("migration_applied")] == ["002_backfill"]


# --- a bootstrapped site: the owner reads both signals through 000's functions ------------------

SHIPPED_000 = REPO / "migrations" / "000_init_database.sql"
SITE_OWNER, SITE_APP = "throttle_site_owner", "throttle_site_app"
SITE_OWNER_PASSWORD = remember_secret("throttle-site-Owner-4f2a-91c0")
SITE_APP_PASSWORD = remember_secret("throttle-site-App-7d3e-02b5")
SITE_ROLES = (SITE_OWNER, SITE_APP, f"{SITE_OWNER}_cleanup", f"{SITE_OWNER}_stats")


@pytest.fixture
def site_roles(database: Database) -> Iterator[None]:
    """The roles the shipped 000 creates for the site owner, dropped with the database."""
    yield
    drop_database(database)
    with psycopg.connect(**database.server.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {', '.join(SITE_ROLES)}")


def bootstrap_by_hand(database: Database) -> None:
    """The shipped 000 as the superuser, as the runner runs it (one transaction, role names set),
    and passwords for the owner and the runtime role."""
    with database.connect() as conn, conn.transaction():
        conn.execute(f"SET LOCAL migrator.owner_role = '{SITE_OWNER}'")
        conn.execute(f"SET LOCAL migrator.app_role = '{SITE_APP}'")
        conn.execute(SHIPPED_000.read_text())
        conn.execute(f"ALTER ROLE {SITE_OWNER} PASSWORD '{SITE_OWNER_PASSWORD}'")
        conn.execute(f"ALTER ROLE {SITE_APP} PASSWORD '{SITE_APP_PASSWORD}'")


def test_a_bootstrapped_owners_backfill_waits_for_a_paused_standby(
    standby: PgServer,
    database: Database,
    site_roles: None,
    migrations: MigrationsFolder,
    tmp_path: Path,
) -> None:
    # The shipped setup: bootstrap by the superuser, the backfill run as the owner, who is
    # not a member of pg_read_all_stats. It used to run on with "replica_lag_unknown".
    migrations.add(
        {SHIPPED_000.name: SHIPPED_000.read_text(), "001_items.sql": ITEMS}
        | {"002_backfill.sql": BACKFILL}
    )
    env = backfill_env(
        database,
        migrations,
        BATCH_MAX_REPLICA_LAG="1MB",
        DB_USER=SITE_OWNER,
        DB_PASSWORD=SITE_OWNER_PASSWORD,
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=database.server.password,
        APP_DB_USER=SITE_APP,
        APP_DB_PASSWORD=SITE_APP_PASSWORD,
    )
    pause, result, _ = backfill_while_replay_paused(standby, database, env, tmp_path)
    assert result.returncode == 0, result
    assert counts(database) == {1: ROWS}
    assert (pause["signal"], pause["version"], pause["standby"]) == (
        "replica_lag",
        "002_backfill",
        None,
    )
    assert pause["reason"].startswith("a replica has ")
    assert pause["replica_lag_bytes"] > 2**20
    assert result.events_named("replica_lag_unknown") == []
    assert (
        database.scalar(f"SELECT pg_has_role('{SITE_OWNER}', 'pg_read_all_stats', 'USAGE')")
        is False
    )


def test_a_bootstrapped_owner_sees_autovacuum_and_the_runtime_role_does_not(
    database: Database, site_roles: None, events: Any
) -> None:
    bootstrap_by_hand(database)
    try:
        busy_autovacuum(database, "t")
        with database.connect(user=SITE_OWNER, password=SITE_OWNER_PASSWORD) as conn:
            throttle = Throttle(ThrottleSettings(max_replica_lag=0), "public.t")
            reason = throttle.reason(conn)
        assert reason is not None and reason.startswith("autovacuum is working on t ("), reason
        assert named(events(), "autovacuum_unknown") == []
        with database.connect(user=SITE_APP, password=SITE_APP_PASSWORD) as conn:
            assert Throttle(ThrottleSettings(max_replica_lag=0), "public.t").reason(conn) is None
            for call in ("replica_lag_bytes()", "autovacuum_on('public.t')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"SELECT * FROM migrator_stats.{call}")
        [unknown] = named(events(), "autovacuum_unknown")
        assert "show no table to this role" in unknown["reason"]
    finally:
        stop_autovacuum(database, "t")
