"""Roles below the owner cannot hold the migration lock and so cannot delay a release.

The lock was an advisory lock on a key any session can compute (and lock_acquired logged it):
the runtime role, or a role with only CONNECT naming itself after the runner, held it and every
later migrate, adopt, baseline and rollback waited MIGRATION_LOCK_TIMEOUT and exited 75. The
lock is now LOCK TABLE on a view only the owner holds privileges on; the locks a role without
privileges can take by naming the view (a SELECT or INSERT being parsed, kept open by PREPARE
in an open transaction) are weaker modes that do not conflict with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import pytest

from migrator.database.lock import lock_key
from tests.security.conftest import APP, NOBODY, PERMISSION_DENIED, Site

LOCK_VIEW = "public.schema_migrations_lock"
# Every privilege on the lock's view held by a role other than its owner.
OTHERS_HOLD = f"""
SELECT coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') || ' ' || a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = '{LOCK_VIEW}'::regclass AND a.grantee <> c.relowner
"""
NEXT_FILE = "002_squatted.sql"


@contextmanager
def squatting(site: Site, role: str) -> Iterator[list[str]]:
    """``role`` holds whatever it can of the lock, in sessions kept open; yields what it got."""
    held: list[str] = []
    with ExitStack() as stack:

        def session() -> psycopg.Connection[Any]:
            conn = site.login(role)
            conn.execute("SET application_name = 'auth-service-migrator'")
            return stack.enter_context(conn)

        # The key the advisory lock used (an older runner's lock): any role can take it.
        advisory = session()
        advisory.execute(
            "SELECT pg_advisory_lock(%s)", (lock_key(site.db.name, "public.schema_migrations"),)
        )
        held.append("advisory key")
        for mode in ("SHARE UPDATE EXCLUSIVE", "ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE"):
            conn = session()
            conn.execute("BEGIN")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"LOCK TABLE {LOCK_VIEW} IN {mode} MODE")
            conn.execute("ROLLBACK")
        # A statement being parsed locks what it names before its privileges are checked:
        # PREPARE keeps those locks for the open transaction (where the parse succeeds).
        for statement in (
            f"SELECT * FROM {LOCK_VIEW}",
            f"INSERT INTO {LOCK_VIEW} VALUES (1)",
            f"SELECT * FROM {LOCK_VIEW} FOR UPDATE",
        ):
            conn = session()
            conn.execute("BEGIN")
            try:
                conn.execute(f"PREPARE squat AS {statement}")
                held.append(statement)
            except psycopg.Error:
                conn.execute("ROLLBACK")
        yield held


def add_next_file(site: Site) -> None:
    site.migrations.joinpath(NEXT_FILE).write_text(
        "CREATE TABLE squatted (id int);\n-- migrate:down\nDROP TABLE squatted;\n"
    )


def remove_next_file(site: Site) -> None:
    site.migrations.joinpath(NEXT_FILE).unlink(missing_ok=True)
    site.as_admin("DROP TABLE IF EXISTS squatted; "
                  f"DELETE FROM schema_migrations WHERE version = '{NEXT_FILE[:-4]}'")  # fmt: skip


@pytest.mark.parametrize("role", [APP, NOBODY])
def test_a_squatter_cannot_delay_a_release(site: Site, role: str) -> None:
    add_next_file(site)
    try:
        with squatting(site, role) as held:
            assert held[0] == "advisory key", held
            if role == APP:  # it may use schema public: a parsed SELECT locks the view
                assert f"SELECT * FROM {LOCK_VIEW}" in held, held
            result = site.run(MIGRATION_LOCK_TIMEOUT="5")
            assert result.returncode == 0, result
            assert not result.events_named("lock_waiting"), result
            assert result.events_named("migrations_complete")[0]["applied"] == ["002_squatted"]
            # And the commands a person runs, under the same lock.
            rolled_back = site.run("rollback", "--to", "001_things", MIGRATION_LOCK_TIMEOUT="5")
            assert rolled_back.returncode == 0, rolled_back
    finally:
        remove_next_file(site)
    site.start_succeeds()


def test_only_the_owner_holds_privileges_on_the_lock(site: Site) -> None:
    assert site.query(OTHERS_HOLD) == []
    owner = site.query(
        f"SELECT relowner::regrole::text FROM pg_class WHERE oid = '{LOCK_VIEW}'::regclass"
    )
    assert owner == [("sec_owner",)]


def test_a_lock_view_another_role_owns_is_refused(site: Site) -> None:
    """Planted or handed over: its owner could hold the lock, or grant it to anyone."""
    site.as_admin(f"ALTER VIEW {LOCK_VIEW} OWNER TO {APP}")
    add_next_file(site)
    try:
        result = site.run()
        assert result.returncode == PERMISSION_DENIED, result
        error = result.events_named("permission_denied")[0]["error"]
        assert f"owned by {APP}" in error and "schema_migrations_lock" in error, error
        assert site.query("SELECT to_regclass('squatted')") == [(None,)]
    finally:
        site.as_admin(f"ALTER VIEW {LOCK_VIEW} OWNER TO sec_owner")
        remove_next_file(site)
    site.start_succeeds()
