"""The shipped files apply with psql alone, in order, as another tool or a person restoring by
hand would run them; and 001, fixed for that after it shipped, is not drift where its earlier
text was applied.

001's history-table check cast 'public.schema_migrations'::regclass, which PL/pgSQL plans
even when the to_regclass() beside it is NULL: without the runner's table, 001 failed under
psql with "relation public.schema_migrations does not exist". The fix changed 001's bytes, so
001 names its earlier checksum (-- migrate:replaces-checksum) and a database that recorded it
stays up to date.
"""

from __future__ import annotations

import hashlib
import subprocess

from tests.conftest import REPO
from tests.integration.test_corpus import TOOL_TIMEOUT, tool_env

SHIPPED = sorted((REPO / "migrations").glob("*.sql"))
OWNER = "auth_service"  # 000's default owner role, when no runner sets migrator.owner_role
# 001 as it shipped before the fix (the checksum its rows carry in deployed databases).
EARLIER_001 = "bcfa8f0f6e7aefc46117119e40cf0c9c077a672aae971f7f97190542a5758a18"


def psql(database, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(database.server.bin_dir / "psql"), "-v", "ON_ERROR_STOP=1", "-X", "-q",
            "-d", database.name, *args]  # fmt: skip
    return subprocess.run(argv, env=tool_env(database.server), capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT)  # fmt: skip


def test_the_shipped_files_apply_with_psql_in_order(database):
    assert [p.name[:3] for p in SHIPPED] == ["000", "001", "002", "003", "004", "005"]
    bootstrap = psql(database, "-f", str(SHIPPED[0]))  # as the superuser
    assert bootstrap.returncode == 0, bootstrap.stderr
    for path in SHIPPED[1:]:  # as the owner, each file in its own transaction
        result = psql(database, "-1", "-c", f"SET ROLE {OWNER}", "-f", str(path))
        assert result.returncode == 0, f"{path.name}:\n{result.stderr}"
    tables = database.scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = %s", OWNER
    )
    assert tables >= 11  # users ... rate_limits, the schema's tables
    assert database.scalar("SELECT to_regclass('public.schema_migrations')") is None


def test_001_with_its_earlier_checksum_recorded_is_up_to_date(
    database, run_runner, run_status_json, run_healthcheck, migrations
):
    migrations.add({p.name: p.read_text() for p in SHIPPED if not p.name.startswith("000")})
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    with database.connect() as conn:  # the owner the files expect, as 000 would make it
        conn.execute(f"DO $$ BEGIN CREATE ROLE {OWNER}; EXCEPTION WHEN duplicate_object THEN "
                     "NULL; END $$; CREATE EXTENSION IF NOT EXISTS citext; "
                     "CREATE EXTENSION IF NOT EXISTS pg_trgm")  # fmt: skip
    assert run_runner(env=env).returncode == 0
    current = hashlib.sha256(SHIPPED[1].read_bytes()).hexdigest()
    assert current != EARLIER_001
    # A database migrated before the fix: its row carries the earlier text's checksum.
    with database.connect() as conn:
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                     (EARLIER_001, SHIPPED[1].stem))  # fmt: skip
    again = run_runner(env=env)
    assert again.returncode == 0, again
    status, document = run_status_json(env=env)
    assert status.returncode == 0 and document["up_to_date"] is True, document
    assert run_healthcheck(env=env).returncode == 0
    # Any other checksum is still drift, named with both checksums.
    with database.connect() as conn:
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                     ("0" * 64, SHIPPED[1].stem))  # fmt: skip
    drift = run_runner(env=env)
    assert drift.returncode == 65, drift
    assert "0" * 64 in drift.termination_message and current in drift.termination_message
