"""Benchmark of `entrypoint.py cleanup` against one plain DELETE of the same expired rows.

    .venv/bin/python bench/cleanup_bench.py                    # 1M expired tokens, 3 runs
    .venv/bin/python bench/cleanup_bench.py --expired 10000000 --runs 1
    PG_BIN=/usr/lib/postgresql/15/bin .venv/bin/python bench/cleanup_bench.py

Starts its own throwaway PostgreSQL (scripts/pgserver.py), migrates a database with
entrypoint.py as users do (bootstrap included, so the cleanup role exists with its password),
seeds ``--expired`` expired access tokens among a tenth as many live ones, interleaved (every
eleventh row is live, as tokens issued and expiring every minute leave them), and keeps it as a
template. Each run copies the template twice (``CREATE DATABASE ... TEMPLATE``) and measures,
in an order that alternates between runs:

  raw       one ``DELETE FROM tokens WHERE expires_at < now()`` as the owner, from psycopg
  command   ``python entrypoint.py cleanup`` as the cleanup role, from process start to exit
            (connection, the lock, every covered table, the ANALYZE after), wall clock
  again     the same command at once on the same copy: what the next run costs before
            autovacuum has visited the table (its scan prunes the dead rows' pages)
  vacuumed  the same command once more after a VACUUM of the copy, as autovacuum leaves the
            table (tokens: at 2% dead rows): the next run's cost in steady state

It prints JSON lines: ``seed``, one ``run`` per run, and a ``summary`` with the medians and the
ratios command / raw and again / raw, measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
OWNER_ROLE = "auth_service"
CLEANUP_ROLE = "auth_service_cleanup"
TEMPLATE = "cleanup_bench_template"

# Interleaved as the service writes them; one client and one user carry every token.
SEED = """
INSERT INTO oauth_clients (client_id, client_name, client_secret_hash, redirect_uris)
VALUES ('bench-client-1', 'bench', sha256('bench'), '{{https://app.example.com/callback}}');
INSERT INTO users (email, display_name) VALUES ('bench@example.com', 'bench');
INSERT INTO tokens (token_hash, client_id, user_id, created_at, expires_at)
SELECT sha256(('t' || g)::bytea), 'bench-client-1', (SELECT id FROM users LIMIT 1),
       CASE WHEN g % 11 = 0 THEN now() - interval '10 minutes' ELSE now() - interval '2 hours' END,
       CASE WHEN g % 11 = 0 THEN now() + interval '1 day' ELSE now() - interval '1 hour' END
FROM generate_series(1, {rows}) g;
"""


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def migrate(port: int, admin_password: str, passwords: dict[str, str]) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG"))},
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(port),
        "DB_NAME": TEMPLATE,
        "DB_USER": OWNER_ROLE,
        "DB_PASSWORD": passwords[OWNER_ROLE],
        "DB_ADMIN_USER": "postgres",
        "DB_ADMIN_PASSWORD": admin_password,
        "APP_DB_PASSWORD": passwords["app"],
        "CLEANUP_DB_PASSWORD": passwords[CLEANUP_ROLE],
        "MIGRATIONS_DIR": str(REPO / "migrations"),
    }
    subprocess.run(
        [sys.executable, str(REPO / "entrypoint.py")],
        env=env, check=True, stdout=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip


def seed(admin: dict[str, Any], expired: int) -> dict[str, Any]:
    rows = expired + expired // 10
    start = time.perf_counter()
    with psycopg.connect(**admin, autocommit=True) as conn:
        # Faster at 10M: the indexes built once after the rows (not row by row), and no
        # foreign-key or guard trigger per row (the superuser's replica mode). The table ends
        # the same: its rows in the same order, every index and constraint as 001 made them.
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '256MB'")
        indexes = [row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename = 'tokens' AND indexname <> 'tokens_pkey'")]  # fmt: skip
        for definition in indexes:
            conn.execute(
                "DROP INDEX public." + definition.split()[definition.split().index("ON") - 1]
            )
        conn.execute("ALTER TABLE tokens DROP CONSTRAINT tokens_pkey")
        for statement in SEED.format(rows=int(rows)).split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("ALTER TABLE tokens ADD CONSTRAINT tokens_pkey PRIMARY KEY (id)")
        for definition in indexes:
            conn.execute(definition)
        conn.execute("RESET session_replication_role")
        conn.execute("VACUUM (ANALYZE, FREEZE) tokens")
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE expires_at < now()), count(*), "
            "pg_relation_size('tokens') / 8192 FROM tokens"
        ).fetchone()
    assert row is not None
    return {"expired": row[0], "rows": row[1], "pages": row[2],
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def copy(admin: dict[str, Any], name: str) -> None:
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')


def drop(admin: dict[str, Any], name: str) -> None:
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_delete(server: Any, dbname: str, password: str) -> tuple[float, int]:
    info = {**server.conninfo(dbname), "user": OWNER_ROLE, "password": password}
    with psycopg.connect(**info, autocommit=True) as conn:
        start = time.perf_counter()
        deleted = conn.execute("DELETE FROM tokens WHERE expires_at < now()").rowcount
        return time.perf_counter() - start, deleted


def command(server: Any, dbname: str, password: str) -> tuple[float, dict[str, Any]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG"))},
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(server.port),
        "DB_NAME": dbname,
        "DB_USER": CLEANUP_ROLE,
        "DB_PASSWORD": password,
        "DB_SSLMODE": "disable",
        "LOG_FORMAT": "json",
        "TERMINATION_LOG": os.devnull,
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "entrypoint.py"), "cleanup"],
        env=env, capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"cleanup exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    summary = next(e for e in events if e["event"] == "cleanup_complete")
    tokens = next(
        e for e in events if e["event"] == "cleanup_table_done" and e["table"] == "tokens"
    )
    analyzed = [e["duration_ms"] for e in events if e["event"] == "statistics_refreshed"]
    return seconds, {
        "removed": summary["total"],
        "delete_ms": tokens["duration_ms"],
        "batches": tokens["batches"],
        "longest_batch_ms": tokens["longest_batch_ms"],
        "analyze_ms": sum(analyzed),
    }


def run(expired: int, runs: int) -> int:
    # A SIGTERM (timeout(1), kill) still removes the server: the finally below runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.path.insert(0, str(REPO / "scripts"))
    from pgserver import PgServer

    passwords = {name: secrets.token_urlsafe(18) for name in (OWNER_ROLE, "app", CLEANUP_ROLE)}
    server = PgServer.create(Path(tempfile.mkdtemp(prefix="cleanup-bench-")))
    server.start()
    failures = 0
    try:
        admin = server.conninfo("postgres")
        progress("migrating and seeding the template")
        migrate(server.port, server.password, passwords)
        with psycopg.connect(**server.conninfo(TEMPLATE), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        seeded = seed(server.conninfo(TEMPLATE), expired)
        log("seed", server_version=version[0] if version else None, cores=os.cpu_count(),
            load=os.getloadavg()[0], **seeded)  # fmt: skip
        results: dict[str, list[float]] = {"raw": [], "command": [], "again": [], "vacuumed": []}
        for i in range(runs):
            copy(admin, "bench_raw")
            copy(admin, "bench_command")
            order = ("raw", "command") if i % 2 == 0 else ("command", "raw")
            measured: dict[str, Any] = {}
            for which in order:
                progress(f"run {i + 1}/{runs}: {which}")
                if which == "raw":
                    seconds, deleted = raw_delete(server, "bench_raw", passwords[OWNER_ROLE])
                    measured |= {"raw_s": round(seconds, 3), "raw_deleted": deleted}
                    results["raw"].append(seconds)
                else:
                    seconds, detail = command(server, "bench_command", passwords[CLEANUP_ROLE])
                    measured |= {"command_s": round(seconds, 3), **detail}
                    results["command"].append(seconds)
                    again, detail = command(server, "bench_command", passwords[CLEANUP_ROLE])
                    measured |= {"again_s": round(again, 3), "again_removed": detail["removed"]}
                    results["again"].append(again)
                    with psycopg.connect(**server.conninfo("bench_command"), autocommit=True) as c:
                        c.execute("VACUUM tokens")
                    vacuumed, detail = command(server, "bench_command", passwords[CLEANUP_ROLE])
                    measured |= {"vacuumed_s": round(vacuumed, 3)}
                    results["vacuumed"].append(vacuumed)
            if measured["removed"] != measured["raw_deleted"]:
                failures += 1
            log("run", run=i + 1, order=list(order), **measured)
            drop(admin, "bench_raw")
            drop(admin, "bench_command")
        medians = {name: statistics.median(values) for name, values in results.items()}
        log("summary", expired=seeded["expired"], runs=runs,
            **{f"{name}_median_s": round(value, 3) for name, value in medians.items()},
            command_over_raw=round(medians["command"] / medians["raw"], 2),
            again_over_raw=round(medians["again"] / medians["raw"], 2),
            vacuumed_over_raw=round(medians["vacuumed"] / medians["raw"], 2),
            target="command_over_raw <= 3", correctness_failures=failures)  # fmt: skip
    finally:
        server.destroy()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expired", type=int, default=1_000_000, help="expired tokens")
    parser.add_argument("--runs", type=int, default=3, help="measured runs (median)")
    args = parser.parse_args(argv)
    return run(args.expired, args.runs)


if __name__ == "__main__":
    sys.exit(main())
