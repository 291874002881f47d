"""Stand-in for the auth service: starts after the migration runner succeeded.

It connects as the runtime role (APP_DB_USER, password from APP_DB_PASSWORD_FILE),
checks that the tables it needs exist (APP_REQUIRED_TABLES, comma separated), logs
one JSON line per event on stdout, then serves (sleeps) until SIGTERM/SIGINT.
``--check`` checks once and exits 0/1 (the compose healthcheck).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg


def log(level: str, event: str, **fields: Any) -> None:
    record = {"timestamp": datetime.now(UTC).isoformat(), "level": level, "event": event,
              "logger": "app", **fields}  # fmt: skip
    print(json.dumps(record), flush=True)


def read_password() -> str:
    path = os.environ.get("APP_DB_PASSWORD_FILE")
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    return os.environ.get("APP_DB_PASSWORD", "")


def missing_tables() -> list[str]:
    required = [t.strip() for t in os.environ.get("APP_REQUIRED_TABLES", "users").split(",")]
    with psycopg.connect(
        host=os.environ.get("DB_HOST", "localhost"),
        port=int(os.environ.get("DB_PORT", "5432")),
        dbname=os.environ.get("DB_NAME", "auth_service"),
        user=os.environ.get("APP_DB_USER", "auth_service_app"),
        password=read_password(),
        connect_timeout=5,
        application_name="auth-service-app",
    ) as conn:
        return [
            table
            for table in required
            if table and conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
        ]


def main(argv: list[str]) -> int:
    try:
        missing = missing_tables()
    except psycopg.Error as error:
        log("error", "database_unavailable", error=str(error).strip().splitlines()[0])
        return 1
    if missing:
        log("error", "schema_missing", missing_tables=missing)
        return 1
    if "--check" in argv:
        return 0
    log("info", "schema_ok", user=os.environ.get("APP_DB_USER", "auth_service_app"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log("info", "app_started")
    stop.wait()
    log("info", "app_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
