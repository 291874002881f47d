"""Only the owner writes schema_migrations, whichever command created it.

The owner's default privileges (000 grants the runtime role INSERT, UPDATE, DELETE on new
tables) reached the history table when ``baseline`` or ``adopt`` created it, and no later
file revoked them: the runtime role could then record a pending file as applied (the release
silently skipped it while status and the health check said up to date) or delete a row and
block the next deploy. Each path that creates the table is checked here as the runtime role.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import create_database, drop_database
from tests.security.conftest import (
    APP,
    NOBODY,
    OWNER,
    Site,
    adopt_creates_the_history,
    baseline_creates_the_history,
)

HISTORY = "public.schema_migrations"
WRITES = (
    "INSERT INTO {table} (version, checksum) VALUES ('999_forged', 'x')",
    "UPDATE {table} SET checksum = 'x'",
    "DELETE FROM {table}",
    "TRUNCATE {table}",
)
# Every privilege on the history table held by a role other than its owner, except SELECT.
OTHERS_WRITE = """
SELECT coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') || ' ' || a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = '{table}'::regclass
  AND a.grantee <> c.relowner AND a.privilege_type <> 'SELECT'
ORDER BY 1
"""


def assert_only_the_owner_writes(site: Site, table: str = HISTORY) -> None:
    """``table`` (the history, MIGRATIONS_TABLE) is written by its owner alone."""
    for role in (APP, NOBODY):
        for statement in WRITES:
            with site.login(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.format(table=table))
    with site.login(APP) as conn:  # the application may read it (status pages, support)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert site.query(OTHERS_WRITE.format(table=table)) == []
    assert site.query("SELECT relowner::regrole::text FROM pg_class "
                      f"WHERE oid = '{table}'::regclass") == [(OWNER,)]  # fmt: skip


def test_created_by_bootstrap_and_migrate(site):
    assert_only_the_owner_writes(site)


def test_created_by_baseline(without_history):
    baseline_creates_the_history(without_history)
    assert_only_the_owner_writes(without_history)


def test_created_by_adopt(without_history):
    result = adopt_creates_the_history(without_history)
    assert result.events_named("adopted")[0]["versions"] == ["001_things"]
    assert_only_the_owner_writes(without_history)


def test_mended_when_an_older_release_left_it_writable(site):
    """A table an older baseline created keeps its grants until a run that writes mends it."""
    site.as_admin(f"GRANT INSERT, UPDATE, DELETE, TRUNCATE ON public.schema_migrations TO {APP}")
    site.migrations.joinpath("002_more.sql").write_text("CREATE TABLE more_things (id int);\n")
    try:
        result = site.run()
        assert result.returncode == 0, result
        assert_only_the_owner_writes(site)
    finally:
        site.migrations.joinpath("002_more.sql").unlink()
        site.as_admin("DROP TABLE IF EXISTS more_things; "
                      "DELETE FROM public.schema_migrations WHERE version = '002_more'")  # fmt: skip


def test_created_in_the_lints_scratch_database(site):
    """The lint builds the history in its scratch database as migrate does on the target."""
    shadow = create_database(site.server)
    try:
        url = (
            f"postgresql://postgres:{site.server.password}@127.0.0.1:{site.server.port}/"
            f"{shadow.name}"
        )
        site.migrations.joinpath("002_more.sql").write_text("CREATE TABLE more_things (id int);\n")
        result = site.run("lint", DB_ADMIN_USER="", DB_ADMIN_PASSWORD="", LINT_SHADOW_URL=url)
        assert result.returncode == 0, result
        with site.admin(shadow.name) as conn:
            assert conn.execute(OTHERS_WRITE.format(table=HISTORY)).fetchall() == []
            owner = conn.execute("SELECT relowner::regrole::text FROM pg_class "
                                 "WHERE oid = 'public.schema_migrations'::regclass").fetchone()  # fmt: skip
        assert owner == (OWNER,)
    finally:
        site.migrations.joinpath("002_more.sql").unlink()
        drop_database(shadow)
