"""Benchmark of a batched backfill (`-- migrate:batch`) against one UPDATE and fixed batches.

    .venv/bin/python bench/backfill_bench.py --markdown bench/results-backfill-pg15.md \\
        --plot bench/results-backfill-pg15.png             # 2M rows, 4-6 min
    .venv/bin/python bench/backfill_bench.py --rows 20000 --baseline-seconds 2   # smoke run
    PG_BIN=/usr/lib/postgresql/15/bin .venv/bin/python bench/backfill_bench.py

Starts its own throwaway primary (scripts/pgserver.py, production-like durability) and a
streaming replica of it (pg_basebackup, as the standby tests do), fills a template table of
``--rows`` rows with generate_series, and measures each method on a fresh copy of it
(``CREATE DATABASE ... TEMPLATE``) while ``--clients`` processes run a steady load of point
reads and updates on the same table (``--rate`` queries a second each, 127.0.0.1):

  baseline   the load alone: the latency every other method is compared with
  plain      one ``UPDATE`` of every row, from psycopg
  fixed      batches of 1,000 rows walked by key, each committed, ``--fixed-delay`` apart
             (pgroll's ``--backfill-batch-size`` / ``--backfill-batch-delay``)
  runner     ``entrypoint.py migrate --phase post`` on a ``-- migrate:batch`` file, its
             defaults (adaptive size, throttle)
  pause      the runner again; once a fifth of the rows is done the replica's replay is
             paused (``pg_wal_replay_pause()``) and resumed ``--hold`` seconds after the
             runner said ``batch_paused``

Every method runs the same statement (``backfills = backfills + 1``, so that a row done twice
shows). Measured per method, over the migration's own time: the application's p50/p99/max
latency and the ratios to the baseline's; the longest lock wait an application query saw (the
server's ``log_lock_waits`` lines, ``deadlock_timeout`` 20 ms: the exact time each wait
lasted); the replica's replay lag (``pg_stat_replication``, bytes and ``replay_lag``, sampled
every ``--sample-interval``); the total time; that every row was updated exactly once.

It prints JSON lines (``machine``, one ``result`` per method, ``pause``, ``target`` lines,
``summary``); ``--markdown`` writes the results page and ``--plot`` the PNG (matplotlib, the
optional ``bench`` extra). Exit 1 when a row was not updated exactly once, never because of a
figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
TABLE = "bench_tokens"
TEMPLATE = "backfill_template"
APP_NAME = "bench-app"
STANDBY_NAME = "standby"  # PgServer.standby_of's application_name
CHECKPOINT_TABLE = "public.schema_migrations_batch"
ALL_METHODS = ("baseline", "plain", "fixed", "runner", "pause")
FIXED_SIZE = 1000
DEADLOCK_TIMEOUT_MS = 20

# Production-like durability (every commit flushed, full-page writes: the WAL a replica gets),
# and every lock wait over deadlock_timeout logged with its duration and application_name.
SERVER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "log_statement": "none",
    "log_lock_waits": "on",
    "deadlock_timeout": f"'{DEADLOCK_TIMEOUT_MS}ms'",
    "log_line_prefix": "'%m [%p] %a@%d '",
    "max_wal_size": "'2GB'",
}

SCHEMA = f"""
CREATE TABLE {TABLE} (
    id bigint NOT NULL,
    user_id bigint NOT NULL,
    scope text NOT NULL,
    scope_v2 text,
    backfills integer NOT NULL DEFAULT 0,
    hits bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
FILL = f"""
INSERT INTO {TABLE} (id, user_id, scope)
SELECT g, g %% 100000, CASE WHEN g %% 3 = 0 THEN 'read' ELSE 'read write' END
FROM generate_series(1, %s) g
"""
# The backfill: scope_v2 from scope, and a count that shows a row done twice (or never).
BATCH_STATEMENT = (
    f"UPDATE {TABLE} SET scope_v2 = scope, backfills = backfills + 1 WHERE id BETWEEN $1 AND $2"
)
PLAIN_STATEMENT = f"UPDATE {TABLE} SET scope_v2 = scope, backfills = backfills + 1"
FIXED_BOUNDS = f"SELECT max(id) FROM (SELECT id FROM {TABLE} WHERE id > %s ORDER BY id LIMIT %s) s"
FIXED_STATEMENT = BATCH_STATEMENT.replace("$1", "%s").replace("$2", "%s")
APP_READ = f"SELECT scope, scope_v2, hits FROM {TABLE} WHERE id = %s"
APP_WRITE = f"UPDATE {TABLE} SET hits = hits + 1, updated_at = now() WHERE id = %s"

LAG_SQL = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
       extract(epoch FROM replay_lag)::float8
FROM pg_stat_replication WHERE application_name = %s
"""
LOCK_WAIT_LINE = re.compile(
    r"\[\d+\] (?P<app>[^@]*)@(?P<db>\S+) LOG:\s+process \d+ acquired \S+ on .* after "
    r"(?P<ms>[\d.]+) ms"
)


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"type": event, **fields}), flush=True)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the application's load ------------------------------------------------------------------


def app_client(
    conninfo: dict[str, Any],
    rows: int,
    rate: float,
    write_share: float,
    seed: int,
    stop: Event,
    results: Any,
) -> None:
    """One application client: point reads and updates of random keys, ``rate`` a second.

    Paced by a schedule (never bursting to catch up), so that the load stays the same
    whatever a migration does; each query's latency is from its send to its result.
    """
    rng = random.Random(seed)
    samples: list[tuple[float, float, bool]] = []
    period = 1.0 / rate
    with psycopg.connect(**conninfo, autocommit=True, application_name=APP_NAME) as conn:
        due = time.monotonic()
        while not stop.is_set():
            key = rng.randint(1, rows)
            write = rng.random() < write_share
            start = time.monotonic()
            if write:
                conn.execute(APP_WRITE, (key,))
            else:
                conn.execute(APP_READ, (key,)).fetchone()
            samples.append((start, time.monotonic() - start, write))
            due += period
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                due = now
    results.put(samples)


@dataclass
class Load:
    """``clients`` application processes on one database, started and stopped together."""

    conninfo: dict[str, Any]
    rows: int
    clients: int
    rate: float
    write_share: float
    context: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    processes: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop_event = self.context.Event()
        self.results = self.context.Queue()

    def start(self) -> None:
        for number in range(self.clients):
            process = self.context.Process(
                target=app_client,
                args=(
                    self.conninfo,
                    self.rows,
                    self.rate,
                    self.write_share,
                    1000 + number,
                    self.stop_event,
                    self.results,
                ),
            )
            process.start()
            self.processes.append(process)

    def stop(self) -> list[tuple[float, float, bool]]:
        self.stop_event.set()
        samples: list[tuple[float, float, bool]] = []
        for _ in self.processes:
            samples.extend(self.results.get(timeout=600))
        for process in self.processes:
            process.join(timeout=30)
        return sorted(samples)


# --- sampling the replica's lag and the backfill's progress ------------------------------


@dataclass
class Sampler:
    """A thread that samples the replica's lag (and ``rows_done``) every ``interval`` s."""

    primary: dict[str, Any]
    interval: float
    rows_done: Any = None  # a callable (connection) -> int | None, sampled beside the lag
    lag: list[tuple[float, int, float | None]] = field(default_factory=list)
    done: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(**self.primary, autocommit=True) as conn:
            while not self._stop.is_set():
                now = time.monotonic()
                row = conn.execute(LAG_SQL, (STANDBY_NAME,)).fetchone()
                if row is not None and row[0] is not None:
                    self.lag.append((now, int(row[0]), row[1]))
                if self.rows_done is not None:
                    rows = self.rows_done(conn)
                    if rows is not None:
                        self.done.append((now, rows))
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - now)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def latest_done(self) -> int:
        return self.done[-1][1] if self.done else 0


def checkpoint_rows(conn: psycopg.Connection[Any]) -> int | None:
    """rows_done of the runner's checkpoint (BATCH.md), once its table exists."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CHECKPOINT_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(f"SELECT sum(rows_done)::bigint FROM {CHECKPOINT_TABLE}").fetchone()
    return int(row[0]) if row and row[0] is not None else None


# --- the methods ------------------------------------------------------------------------------


@dataclass
class Bench:
    primary: Any
    standby: Any
    args: argparse.Namespace
    fixed_done: int = 0

    def conninfo(self, dbname: str) -> dict[str, Any]:
        return dict(self.primary.conninfo(dbname))

    def plain(self, dbname: str) -> dict[str, Any]:
        with psycopg.connect(**self.conninfo(dbname), autocommit=True) as conn:
            updated = conn.execute(PLAIN_STATEMENT).rowcount
        return {"statements": 1, "rows_reported": updated}

    def fixed(self, dbname: str) -> dict[str, Any]:
        last, batches = 0, 0
        with psycopg.connect(**self.conninfo(dbname), autocommit=True) as conn:
            while True:
                row = conn.execute(FIXED_BOUNDS, (last, FIXED_SIZE)).fetchone()
                if row is None or row[0] is None:
                    break
                upper = int(row[0])
                self.fixed_done += conn.execute(FIXED_STATEMENT, (last + 1, upper)).rowcount
                last, batches = upper, batches + 1
                time.sleep(self.args.fixed_delay)
        return {"batches": batches, "rows_reported": self.fixed_done}

    def runner(self, dbname: str, pause: bool, sampler: Sampler) -> dict[str, Any]:
        folder = Path(tempfile.mkdtemp(prefix="backfill-bench-"))
        (folder / "001_backfill_scope_v2.sql").write_text(
            "-- Description: backfill scope_v2 from scope\n"
            "-- migrate:phase post\n"
            f"-- migrate:batch table=public.{TABLE} key=id\n"
            f"{BATCH_STATEMENT};\n"
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG", "BATCH_"))},
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(self.primary.port),
            "DB_NAME": dbname,
            "DB_USER": "postgres",
            "DB_PASSWORD": self.primary.password,
            "DB_SSLMODE": "disable",
            "LOG_FORMAT": "json",
            "TERMINATION_LOG": os.devnull,
            "MIGRATIONS_DIR": str(folder),
        }
        env["BATCH_CHECK_INTERVAL"] = str(self.args.check_interval)
        env.update(setting.split("=", 1) for setting in self.args.runner_setting)
        if pause:
            env["BATCH_MAX_REPLICA_LAG"] = str(self.args.pause_lag)
        events: list[tuple[float, dict[str, Any]]] = []
        start = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, str(REPO / "entrypoint.py"), "migrate", "--phase", "post"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stderr: list[str] = []
        readers = [
            threading.Thread(target=read_events, args=(process.stdout, events), daemon=True),
            threading.Thread(target=stderr.extend, args=(process.stderr,), daemon=True),
        ]
        for reader in readers:
            reader.start()
        replay: dict[str, float] = {}
        if pause:
            self.pause_replay(process, events, sampler, replay)
        code = process.wait()
        end = time.monotonic()
        for reader in readers:
            reader.join(timeout=30)
        if "resumed" not in replay and "paused" in replay:
            self.standby_call("pg_wal_replay_resume")
        if code != 0:
            tail = "".join(stderr)[-2000:] + "\n".join(json.dumps(e) for _, e in events[-5:])
            raise SystemExit(f"the runner exited {code}:\n{tail}")
        names = [event.get("event") for _, event in events]
        return {
            "exit_code": code,
            "runner_seconds": round(end - start, 3),
            "batches": last_field(events, "batch_finished", "batches"),
            "rows_reported": last_field(events, "batch_finished", "rows_done"),
            "progress_events": names.count("batch_progress"),
            "paused_events": names.count("batch_paused"),
            "paused_seconds": last_field(events, "batch_finished", "paused_seconds"),
            "pauses_by_signal": {
                signal: sum(1 for _, e in events if e.get("signal") == signal)
                for signal in sorted(
                    {str(e.get("signal")) for _, e in events if e.get("event") == "batch_paused"}
                )
            },
            "resumed_events": names.count("batch_resumed"),
            "events": events,
            "replay": replay,
        }

    def pause_replay(
        self,
        process: subprocess.Popen[str],
        events: list[tuple[float, dict[str, Any]]],
        sampler: Sampler,
        replay: dict[str, float],
    ) -> None:
        """Pause replay once a fifth of the rows is done; resume it ``hold`` s after the lag
        went over the runner's BATCH_MAX_REPLICA_LAG (whatever the runner logged)."""
        del events  # the runner's events are judged afterwards, not steered by
        while process.poll() is None and sampler.latest_done() < self.args.rows // 5:
            time.sleep(0.05)
        if process.poll() is not None:
            return
        self.standby_call("pg_wal_replay_pause")
        replay["paused"] = time.monotonic()
        deadline = replay["paused"] + self.args.pause_timeout
        while process.poll() is None and time.monotonic() < deadline:
            over = [
                t
                for t, lag, _ in list(sampler.lag)
                if t >= replay["paused"] and lag > self.args.pause_lag
            ]
            if over and time.monotonic() >= over[0] + self.args.hold:
                break
            time.sleep(0.05)
        self.standby_call("pg_wal_replay_resume")
        replay["resumed"] = time.monotonic()

    def standby_call(self, function: str) -> None:
        with psycopg.connect(**self.standby.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f"SELECT pg_catalog.{function}()")


def read_events(stream: Any, events: list[tuple[float, dict[str, Any]]]) -> None:
    for line in stream:
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                events.append((time.monotonic(), parsed))


def last_field(events: list[tuple[float, dict[str, Any]]], name: str, key: str) -> Any:
    found = [event.get(key) for _, event in events if event.get("event") == name]
    return found[-1] if found else None


# --- measuring one method ---------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def corrected(
    samples: list[tuple[float, float, bool]], period: float
) -> list[tuple[float, float, bool]]:
    """The samples plus the queries a blocked client did not send (coordinated omission).

    A client paced at one query per ``period`` that waited L seconds skipped the queries due
    meanwhile; each would have waited until the same moment: L - period, L - 2 period, ...
    (HdrHistogram's expected-interval correction). Without them, a method that blocks every
    client for 30 s shows as a handful of slow queries among normal ones.
    """
    found = list(samples)
    for start, latency, write in samples:
        missed = 1
        while latency - missed * period > 0:
            found.append((start + missed * period, latency - missed * period, write))
            missed += 1
    return sorted(found)


def lock_waits(log_text: str, dbname: str) -> list[float]:
    """The application's lock waits in ``dbname`` (ms) that outlasted deadlock_timeout."""
    return [
        float(match["ms"])
        for match in map(LOCK_WAIT_LINE.search, log_text.splitlines())
        if match and match["db"] == dbname and match["app"] == APP_NAME
    ]


def wait_replica(primary: dict[str, Any], timeout: float = 900) -> None:
    """Until the replica has replayed all the WAL there is (a method starts on a quiet one)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(**primary, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(LAG_SQL, (STANDBY_NAME,)).fetchone()
            if row is not None and row[0] is not None and row[0] <= 0:
                return
            time.sleep(0.2)
    raise SystemExit("the replica did not catch up")


def copy_table(bench: Bench, dbname: str) -> None:
    admin = bench.conninfo("postgres")
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        version = conn.execute("SHOW server_version_num").fetchone()
        # FILE_COPY: the copy costs the replica a directory copy, not the table's WAL.
        strategy = " STRATEGY FILE_COPY" if version and int(version[0]) >= 150000 else ""
        conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE "{TEMPLATE}"{strategy}')
        conn.execute("CHECKPOINT")
    wait_replica(admin)


def run_method(
    bench: Bench, method: str, dbname: str, sampler: Sampler
) -> tuple[float, float, dict[str, Any]]:
    """The method itself, after the warm-up: its start, its end and what it reports."""
    args = bench.args
    time.sleep(args.warmup)
    begin = time.monotonic()
    detail: dict[str, Any] = {}
    if method == "baseline":
        time.sleep(args.baseline_seconds)
    elif method == "plain":
        detail = bench.plain(dbname)
    elif method == "fixed":
        detail = bench.fixed(dbname)
    else:
        detail = bench.runner(dbname, method == "pause", sampler)
    end = time.monotonic()
    if method == "plain":
        # One transaction: no row is done (visible) before its commit.
        sampler.done += [(begin, 0), (end - 1e-3, 0), (end, args.rows)]
    if method in ("runner", "pause") and detail.get("rows_reported") is not None:
        # The checkpoint row goes with the last batch's commit: its figure ends the curve.
        sampler.done.append((end, int(detail["rows_reported"])))
    return begin, end, detail


def measure(bench: Bench, method: str) -> dict[str, Any]:
    args = bench.args
    dbname = f"bench_{method}"
    copy_table(bench, dbname)
    primary = bench.conninfo(dbname)
    sampler = Sampler(
        primary, args.sample_interval, checkpoint_rows if method in ("runner", "pause") else None
    )
    if method == "fixed":
        bench.fixed_done = 0
        sampler.rows_done = lambda conn: bench.fixed_done
    load = Load(primary, args.rows, args.clients, args.rate, args.write_share)
    progress(f"{method}: load starting")
    load.start()
    sampler.start()
    try:
        begin, end, detail = run_method(bench, method, dbname, sampler)
        progress(f"{method}: migration took {end - begin:.1f} s; tail")
        time.sleep(args.tail)
    finally:  # a failed method still ends its clients before the servers go
        samples = load.stop()
        sampler.stop()
    waits = lock_waits(bench.primary.server_log(), dbname)
    with psycopg.connect(**primary, autocommit=True) as conn:
        counts = conn.execute(
            f"SELECT count(*) FILTER (WHERE backfills = 1), count(*) FILTER (WHERE backfills <> 1 "
            f"OR scope_v2 IS DISTINCT FROM scope), count(*) FROM {TABLE}"
        ).fetchone()
    assert counts is not None
    with psycopg.connect(**bench.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    during = [s for s in samples if begin <= s[0] <= end]
    period = 1.0 / args.rate
    latencies = [s[1] * 1000 for s in corrected(during, period)]
    writes = [s[1] * 1000 for s in corrected([s for s in during if s[2]], period)]
    measured = [s[1] * 1000 for s in during]
    lags = [s for s in sampler.lag if begin <= s[0] <= end + args.tail]
    events = detail.pop("events", [])
    replay = detail.pop("replay", {})
    result = {
        "method": method,
        "total_s": round(end - begin, 3),
        "queries": len(during),
        "queries_per_s": round(len(during) / max(end - begin, 1e-9), 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies, default=0.0), 3),
        "write_p99_ms": round(percentile(writes, 0.99), 3),
        "measured_p99_ms": round(percentile(measured, 0.99), 3),
        "longest_lock_wait_ms": round(max(waits, default=0.0), 1),
        "lock_waits_over_deadlock_timeout": len(waits),
        "max_lag_bytes": max((s[1] for s in lags), default=0),
        "max_replay_lag_s": round(max((s[2] or 0.0 for s in lags), default=0.0), 3),
        "rows": counts[2],
        "rows_done_once": counts[0] if method != "baseline" else None,
        "rows_not_once": counts[1] if method != "baseline" else None,
        **detail,
    }
    series = {
        "method": method,
        "begin": begin,
        "end": end,
        "samples": [(s[0] - begin, s[1] * 1000, s[2]) for s in samples],
        "corrected": [(s[0] - begin, s[1] * 1000, s[2]) for s in corrected(samples, period)],
        "lag": [(s[0] - begin, s[1], s[2]) for s in sampler.lag],
        "done": [(t - begin, rows) for t, rows in sampler.done],
        "events": [(t - begin, e.get("event"), e.get("signal")) for t, e in events],
        "replay": {k: v - begin for k, v in replay.items()},
    }
    if method == "pause":
        result["pause"] = pause_figures(series, args)
    return {"result": result, "series": series}


def pause_figures(series: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """When the lag crossed the threshold, when the runner paused and resumed, rows meanwhile.

    The pause that counts is the one in force when the lag went over the threshold, or the
    first after it: the runner logs ``batch_paused`` once per pause, with the signal that
    started it (a pause for lock waiters that goes on because of the lag keeps its signal).
    """
    replay, events, lag = series["replay"], series["events"], series["lag"]
    figures: dict[str, Any] = {
        "check_interval_s": args.check_interval,
        "max_replica_lag_bytes": args.pause_lag,
        "replay_paused_at_s": round(replay["paused"], 3) if "paused" in replay else None,
        "replay_resumed_at_s": round(replay["resumed"], 3) if "resumed" in replay else None,
    }
    crossed = [
        t for t, b, _ in lag if t >= replay.get("paused", float("inf")) and b > args.pause_lag
    ]
    if not crossed:
        return figures
    figures["lag_over_threshold_at_s"] = round(crossed[0], 3)
    pauses: list[tuple[float, float, str | None]] = []  # (paused, resumed, signal)
    for t, name, why in events:
        if name == "batch_paused":
            pauses.append((t, float("inf"), why))
        elif name == "batch_resumed" and pauses and pauses[-1][1] == float("inf"):
            pauses[-1] = (pauses[-1][0], t, pauses[-1][2])
    found = next(((p, r, w) for p, r, w in pauses if r > crossed[0]), None)
    if found is None:
        figures["pause_within_check_interval"] = False
        return figures
    paused, resumed, signal = found
    figures |= {
        "batch_paused_at_s": round(paused, 3),
        "pause_signal": signal,
        "batch_resumed_at_s": round(resumed, 3) if resumed != float("inf") else None,
        # 0 when a pause (for another signal) was already in force at the crossing.
        "pause_after_threshold_s": round(max(0.0, paused - crossed[0]), 3),
        "pause_within_check_interval": paused - crossed[0]
        <= args.check_interval + args.sample_interval,
    }
    # The samples taken while the runner was paused (the first one a sampling interval after
    # its event, so that it cannot predate the batch before the pause).
    during = [rows for t, rows in series["done"] if paused + args.sample_interval < t < resumed]
    if during:
        figures["rows_done_at_pause"] = min(during)
        figures["rows_done_while_paused"] = max(during) - min(during)
    back = [
        t for t, b, _ in lag if t >= replay.get("resumed", float("inf")) and b <= args.pause_lag
    ]
    if back and resumed != float("inf"):
        figures["lag_under_threshold_at_s"] = round(back[0], 3)
        figures["resume_after_lag_under_s"] = round(resumed - back[0], 3)
    return figures


# --- set-up -----------------------------------------------------------------------------------


def fill_template(admin: dict[str, Any], rows: int) -> dict[str, Any]:
    start = time.monotonic()
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    with psycopg.connect(**{**admin, "dbname": TEMPLATE}, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(SCHEMA)
        conn.execute(FILL, (rows,))
        # Built once after the rows: faster than row by row, the same indexes in the end.
        conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
        conn.execute(f"CREATE INDEX {TABLE}_user_id ON {TABLE} (user_id)")
        conn.execute(f"VACUUM (ANALYZE, FREEZE) {TABLE}")
        size = conn.execute(f"SELECT pg_total_relation_size('{TABLE}')").fetchone()
    return {
        "rows": rows,
        "table_bytes": size[0] if size else None,
        "seconds": round(time.monotonic() - start, 1),
    }


def machine(admin: dict[str, Any]) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    with psycopg.connect(**admin, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**20, 1),
        "kernel": platform.release(),
        "load_average": round(os.getloadavg()[0], 2),
        "postgresql": version[0] if version else None,
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "revision": revision,
        "settings": {k: v.strip("'") for k, v in SERVER_SETTINGS.items()},
    }


# --- targets, report, plot --------------------------------------------------------------------


def target(name: str, value: Any, limit: str, met: bool) -> dict[str, Any]:
    return {"name": name, "value": value, "target": limit, "met": met}


def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, for the runner, from figures of the same run."""
    found: list[dict[str, Any]] = []
    base = results.get("baseline")
    runner = results.get("runner")
    plain = results.get("plain")
    if base and runner and base["p99_ms"]:
        ratio = runner["p99_ms"] / base["p99_ms"]
        found.append(target("runner p99 / baseline p99", round(ratio, 2), "<= 1.2", ratio <= 1.2))
    if runner:
        wait = runner["longest_lock_wait_ms"]
        name = "runner: longest application lock wait (ms)"
        found.append(target(name, wait, "<= 1000", wait <= 1000))
    if runner and plain and plain["total_s"]:
        ratio = runner["total_s"] / plain["total_s"]
        name = "runner total / plain UPDATE total"
        found.append(target(name, round(ratio, 2), "<= 2", ratio <= 2))
    pause = results.get("pause", {}).get("pause")
    if pause is not None:
        within = bool(pause.get("pause_within_check_interval"))
        resumed = pause.get("batch_resumed_at_s") is not None
        name = "pause: batch_paused after the lag crossed the threshold (s)"
        limit = f"<= check interval ({pause['check_interval_s']} s)"
        found.append(target(name, pause.get("pause_after_threshold_s"), limit, within))
        still = pause.get("rows_done_while_paused") == 0
        name, limit = "pause: resumed after replay resumed", "batch_resumed, no rows while paused"
        found.append(target(name, resumed, limit, resumed and still))
    return found


def ratio_text(value: float, base: float | None) -> str:
    return f"{value:.2f} ({value / base:.2f}x)" if base else f"{value:.2f}"


def markdown(
    info: dict[str, Any],
    seeded: dict[str, Any],
    results: dict[str, dict[str, Any]],
    found: list[dict[str, Any]],
    args: argparse.Namespace,
    plot: Path | None,
) -> str:
    base = results.get("baseline", {})
    lines = [
        "# Backfill benchmark: PostgreSQL " + str(info["postgresql"]),
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`bench/backfill_bench.py` (revision {info['revision']}), see bench/README.md.",
        "",
        "```",
        "bench/backfill_bench.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, Linux "
        f"{info['kernel']}, load average {info['load_average']} at start (a machine shared "
        f"with other work), PostgreSQL {info['postgresql']}, Python {info['python']}, psycopg "
        f"{info['psycopg']}. Server: "
        + ", ".join(f"`{k}={v}`" for k, v in info["settings"].items() if k != "log_line_prefix")
        + "; one streaming replica (pg_basebackup) on the same machine.",
        "",
        f"Table: {seeded['rows']:,} rows, {seeded['table_bytes'] / 2**20:.0f} MiB with its two "
        f"indexes (filled in {seeded['seconds']} s). Load: {args.clients} client processes, "
        f"{args.rate:g} queries/s each, {args.write_share:.0%} point updates, the rest point "
        f"reads, random keys. Fixed batches: {FIXED_SIZE:,} rows, {args.fixed_delay * 1000:g} ms "
        "apart. Latency figures cover the migration's own time (the baseline: "
        f"{args.baseline_seconds:g} s of load alone), each query from its send to its result, "
        "plus the queries a blocked client could not send (corrected for coordinated omission: "
        "`p99 sent` is the queries actually sent alone); lock waits come from the server's "
        f"`log_lock_waits` (each wait over `deadlock_timeout` = {DEADLOCK_TIMEOUT_MS} ms, "
        "its exact length); replica lag is sampled every "
        f"{args.sample_interval:g} s from `pg_stat_replication`.",
        "",
        "| method | total s | app queries/s | p50 ms (x baseline) | p99 ms (x baseline) "
        "| p99 sent ms | max ms "
        "| longest app lock wait ms | app waits > 20 ms | max replica lag MiB | max replay_lag s "
        "| rows done once / not once |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, r in results.items():
        once = (
            "-"
            if r["rows_done_once"] is None
            else f"{r['rows_done_once']:,} / {r['rows_not_once']}"
        )
        lines.append(
            f"| {method} | {r['total_s']:.1f} | {r['queries_per_s']:.0f} "
            f"| {ratio_text(r['p50_ms'], base.get('p50_ms') if method != 'baseline' else None)} "
            f"| {ratio_text(r['p99_ms'], base.get('p99_ms') if method != 'baseline' else None)} "
            f"| {r['measured_p99_ms']:.2f} | {r['max_ms']:.0f} | {r['longest_lock_wait_ms']:.0f} "
            f"| {r['lock_waits_over_deadlock_timeout']} | {r['max_lag_bytes'] / 2**20:.1f} "
            f"| {r['max_replay_lag_s']:.2f} | {once} |"
        )
    lines += ["", "| target (the runner) | value | target | met |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {t['name']} | {t['value']} | {t['target']} | {'met' if t['met'] else 'MISSED'} |"
        for t in found
    ]
    for method in ("runner", "pause"):
        if method in results:
            r = results[method]
            signals = ", ".join(f"{n} {name}" for name, n in r["pauses_by_signal"].items())
            lines += [
                "",
                f"{method}: {r['batches']} batches, {r['paused_events']} pauses "
                f"({signals or 'none'}), {r['paused_seconds']} s paused in all, process wall "
                f"time {r['runner_seconds']} s (start-up included in `total s`).",
            ]
    pause = results.get("pause", {}).get("pause")
    if pause:
        lines += ["", "Pause run, seconds from the backfill's start:", ""]
        lines += ["| figure | value |", "| --- | --- |"]
        lines += [f"| `{name}` | {value} |" for name, value in pause.items()]
    if plot is not None:
        lines += ["", f"![latency and replica lag over time]({plot.name})"]
    return "\n".join(lines) + "\n"


def draw(series: list[dict[str, Any]], results: dict[str, Any], path: Path) -> str | None:
    """One row per method: latency (left) and replica lag with rows done (right)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        return f"matplotlib not installed ({error}): pip install -e '.[bench]'"
    base_p99 = results.get("baseline", {}).get("p99_ms")
    figure, axes = plt.subplots(len(series), 2, figsize=(14, 3.2 * len(series)), squeeze=False)
    for row, data in enumerate(series):
        left, right = axes[row]
        length = data["end"] - data["begin"]
        samples = [s for s in data["samples"] if s[0] >= -2]
        for write, colour, label in ((False, "tab:blue", "read"), (True, "tab:orange", "update")):
            points = [s for s in samples if s[2] == write]
            left.scatter(
                [s[0] for s in points],
                [s[1] for s in points],
                s=2,
                c=colour,
                alpha=0.4,
                label=label,
            )
        buckets: dict[int, list[float]] = {}
        for t, ms, _ in data["corrected"]:
            if t >= -2:
                buckets.setdefault(int(t // 1), []).append(ms)
        # A second without a finished query (every client blocked) leaves a gap in the line.
        keys = list(range(min(buckets, default=0), max(buckets, default=0) + 1))
        left.plot(
            [k + 0.5 for k in keys],
            [percentile(buckets[k], 0.99) if k in buckets else float("nan") for k in keys],
            c="black",
            lw=1,
            label="p99 per second (corrected)",
        )
        if base_p99:
            left.axhline(base_p99 * 1.2, c="red", ls="--", lw=1, label="1.2x baseline p99")
        left.set_yscale("log")
        left.set_ylabel("app latency, ms")
        r = results[data["method"]]
        left.set_title(
            f"{data['method']}: {length:.1f} s, p99 {r['p99_ms']:.1f} ms, "
            f"longest app lock wait {r['longest_lock_wait_ms']:.0f} ms",
            fontsize=9,
        )
        lag = [s for s in data["lag"] if s[0] >= -2]
        right.plot(
            [s[0] for s in lag],
            [s[1] / 2**20 for s in lag],
            c="tab:red",
            lw=1,
            label="replica lag, MiB",
        )
        right.set_ylabel("replay lag, MiB")
        right.set_title(
            f"{data['method']}: max lag {r['max_lag_bytes'] / 2**20:.1f} MiB", fontsize=9
        )
        if data["done"]:
            twin = right.twinx()
            twin.plot(
                [d[0] for d in data["done"]],
                [d[1] for d in data["done"]],
                c="tab:green",
                lw=1,
                label="rows done",
            )
            twin.set_ylabel("rows done")
            twin.set_ylim(bottom=0)
        for axis in (left, right):
            axis.axvspan(0, length, color="grey", alpha=0.08)
            axis.set_xlabel("s from the migration's start (grey: the migration)")
            replay = data["replay"]
            if "paused" in replay:
                axis.axvspan(
                    replay["paused"],
                    replay.get("resumed", length),
                    color="tab:purple",
                    alpha=0.15,
                    label="replay paused on the replica",
                )
            for t, name, _ in data["events"]:
                if name in ("batch_paused", "batch_resumed"):
                    axis.axvline(t, c="tab:purple", ls=":", lw=1)
        left.legend(loc="upper right", fontsize=7, markerscale=4)
        right.legend(loc="upper left", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return None


# --- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers() -> Iterator[tuple[Any, Any]]:
    sys.path.insert(0, str(REPO / "scripts"))
    from pgserver import PgServer

    primary = PgServer.create(
        Path(tempfile.mkdtemp(prefix="backfill-bench-")), settings=SERVER_SETTINGS
    )
    standby = None
    try:
        primary.start()
        standby = PgServer.standby_of(primary)
        standby.start()
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def run(args: argparse.Namespace) -> int:
    # A SIGTERM (timeout(1), kill) still removes the servers: the finally blocks run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    methods = [m for m in ALL_METHODS if m in args.methods]
    with servers() as (primary, standby):
        bench = Bench(primary, standby, args)
        admin = bench.conninfo("postgres")
        info = machine(admin)
        log("machine", **info)
        progress(f"filling {args.rows:,} rows")
        seeded = fill_template(admin, args.rows)
        log("seed", **seeded)
        results: dict[str, dict[str, Any]] = {}
        series: list[dict[str, Any]] = []
        for method in methods:
            measured = measure(bench, method)
            results[method] = measured["result"]
            series.append(measured["series"])
            log("result", **measured["result"])
        found = targets(results)
        for target in found:
            log("target", **target)
        plot = Path(args.plot) if args.plot else None
        if plot is not None:
            why = draw(series, results, plot)
            if why:
                log("unavailable", what="plot", why=why)
                plot = None
        if args.markdown:
            text = markdown(info, seeded, results, found, args, plot)
            Path(args.markdown).write_text(text)
        wrong = {m: r["rows_not_once"] for m, r in results.items() if r["rows_not_once"]}
        log(
            "summary",
            methods=methods,
            rows_not_once=wrong,
            ok=not wrong,
            load_average_end=round(os.getloadavg()[0], 2),
        )
    return 1 if wrong else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the table")
    parser.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help=f"comma-separated, of {','.join(ALL_METHODS)}",
    )
    parser.add_argument("--clients", type=int, default=4, help="application client processes")
    parser.add_argument("--rate", type=float, default=50, help="queries/s per client")
    parser.add_argument("--write-share", type=float, default=0.3, help="share of updates")
    parser.add_argument("--baseline-seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=3, help="load before each method, s")
    parser.add_argument("--tail", type=float, default=3, help="load after each method, s")
    parser.add_argument("--fixed-delay", type=float, default=0.02, help="s between batches")
    parser.add_argument(
        "--check-interval", type=float, default=1.0, help="the runner's BATCH_CHECK_INTERVAL, s"
    )
    parser.add_argument(
        "--pause-lag",
        type=int,
        default=64 * 2**20,
        help="the pause run's BATCH_MAX_REPLICA_LAG, bytes (the runner's default)",
    )
    parser.add_argument(
        "--hold", type=float, default=5, help="replay stays paused this long after batch_paused, s"
    )
    parser.add_argument(
        "--pause-timeout",
        type=float,
        default=60,
        help="replay is resumed after this long whatever happened, s",
    )
    parser.add_argument(
        "--runner-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the runner (e.g. BATCH_TARGET_DURATION=0.05), repeatable",
    )
    parser.add_argument("--sample-interval", type=float, default=0.2, help="lag sampling, s")
    parser.add_argument("--markdown", help="write the results page here")
    parser.add_argument("--plot", help="write the PNG here (matplotlib: the bench extra)")
    args = parser.parse_args(argv)
    args.methods = {m.strip() for m in args.methods.split(",") if m.strip()}
    for setting in args.runner_setting:
        if "=" not in setting:
            parser.error(f"--runner-setting wants NAME=VALUE, got {setting!r}")
    unknown = args.methods - set(ALL_METHODS)
    if unknown:
        parser.error(f"unknown method(s): {', '.join(sorted(unknown))}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
