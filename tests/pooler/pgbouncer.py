"""A real PgBouncer in front of the session's PostgreSQL, started as an unprivileged user on 127.0.0.1.

Authentication is SCRAM-SHA-256 end to end: the userlist it writes holds each role's SCRAM
secret as the server stores it (pg_authid), so PgBouncer checks clients and logs in to the
server with the client's own keys. The configuration is stock otherwise: no
``ignore_startup_parameters``, no ``track_extra_parameters`` (1.20+ only).

    >>> bouncer = PgBouncer.start(pg_server, pool_mode="transaction", pool_size=3)
    >>> bouncer.port
    6432
    >>> bouncer.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from pgserver import UNPRIVILEGED_GID, UNPRIVILEGED_UID, PgServer, free_port

PGBOUNCER = Path(os.environ.get("PGBOUNCER", "/usr/sbin/pgbouncer"))
START_TIMEOUT = 10.0
RELOAD_PAUSE = 0.3
# Short enough that a test of an exhausted pool finishes quickly; the stock default is 120 s.
QUERY_WAIT_TIMEOUT = 20
CONFIG = """\
[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {root}/userlist.txt
pool_mode = {pool_mode}
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
max_db_connections = {max_db_connections}
query_wait_timeout = {query_wait_timeout}
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
admin_users = postgres
"""


@dataclass
class PgBouncer:
    """One PgBouncer process; ``port`` is where clients connect instead of the server's."""

    root: Path
    port: int
    pool_mode: str
    pool_size: int
    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        server: PgServer,
        pool_mode: str,
        pool_size: int,
        roles: Sequence[str] = ("postgres",),
        plaintext: Mapping[str, str] | None = None,
        max_db_connections: int = 0,
        query_wait_timeout: int = QUERY_WAIT_TIMEOUT,
    ) -> PgBouncer:
        root = Path(tempfile.mkdtemp(prefix=f"pgbouncer-{pool_mode}-"))
        port = free_port()
        (root / "pgbouncer.ini").write_text(
            CONFIG.format(
                server_port=server.port, port=port, root=root, pool_mode=pool_mode,
                pool_size=pool_size, max_db_connections=max_db_connections,
                query_wait_timeout=query_wait_timeout,
            )
        )  # fmt: skip
        write_userlist(server, root / "userlist.txt", roles, plaintext)
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            os.chown(root, UNPRIVILEGED_UID, UNPRIVILEGED_GID)
            for path in root.iterdir():
                os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_GID)
        process = subprocess.Popen(
            [str(PGBOUNCER), str(root / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_unprivileged(),  # type: ignore[arg-type]
        )
        bouncer = cls(root, port, pool_mode, pool_size, process)
        bouncer._wait_ready(server)
        return bouncer

    def _wait_ready(self, server: PgServer) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(**self.conninfo(server), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PgBouncer did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def conninfo(self, server: PgServer, dbname: str = "postgres") -> dict[str, Any]:
        """psycopg.connect keywords for the superuser through this PgBouncer."""
        return {**server.conninfo(dbname), "port": self.port, "prepare_threshold": None}

    def refresh(self, server: PgServer, roles: Sequence[str] = ("postgres",)) -> None:
        """Copy the roles' current SCRAM secrets again (a bootstrap elsewhere re-salted them)."""
        userlist = self.root / "userlist.txt"
        before = userlist.read_text()
        write_userlist(server, userlist, roles)
        if userlist.read_text() == before:
            return
        if os.geteuid() == 0:
            os.chown(userlist, UNPRIVILEGED_UID, UNPRIVILEGED_GID)
        self.process.send_signal(signal.SIGHUP)  # PgBouncer re-reads its files
        time.sleep(RELOAD_PAUSE)

    def log(self) -> str:
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # immediate shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def write_userlist(
    server: PgServer, path: Path, roles: Sequence[str], plaintext: Mapping[str, str] | None = None
) -> None:
    """``"role" "SCRAM-SHA-256$..."`` lines, the secrets read from the server's catalog.

    ``plaintext`` roles get their password instead: a runner's bootstrap sets DB_USER's
    password again on every start, with a new SCRAM salt, which a copied secret does not follow.
    """
    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (list(roles),)
        ).fetchall()
    secrets = {name: secret for name, secret in rows if secret} | dict(plaintext or {})
    path.write_text("".join(f'"{name}" "{secret}"\n' for name, secret in secrets.items()))


def _unprivileged() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_GID, "extra_groups": []}
