"""The statistics the throttle reads, without pg_read_all_stats for the owner.

The shipped 000 creates ``<owner>_stats`` (NOLOGIN, a member of pg_read_all_stats and nothing
else) and, in schema ``migrator_stats`` (the superuser's), two SECURITY DEFINER functions it
owns that return numbers only; the owner alone may execute them. A function the owner could
redefine would run its code as a member of pg_read_all_stats (every session's statements and
the secrets in them): these tests attack that from the owner's, the runtime role's and a
CONNECT-only role's sessions, and check that bootstrap refuses a stats role or schema that
was changed to allow it.
"""

from __future__ import annotations

import psycopg
import pytest

from migrator.apply.throttle import Throttle, ThrottleSettings
from tests.security.conftest import APP, NOBODY, OWNER, Site, refused_and_unchanged

STATS = f"{OWNER}_stats"
FUNCTIONS = ("migrator_stats.replica_lag_bytes()", "migrator_stats.autovacuum_on(regclass)")
CALLS = ("migrator_stats.replica_lag_bytes()", "migrator_stats.autovacuum_on('things')")
MIGRATION_FAILED = 65


def test_the_stats_role_and_functions_are_as_narrow_as_bootstrap_made_them(site: Site) -> None:
    assert site.query(
        f"SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication "
        f"FROM pg_roles WHERE rolname = '{STATS}'"
    ) == [(False,) * 6]
    memberships = f"""SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members
        WHERE '{STATS}' IN (roleid::regrole::text, member::regrole::text)"""
    assert site.query(memberships) == [("pg_read_all_stats", STATS)]
    assert site.query(
        "SELECT nspowner::regrole::text, nspacl::text[] FROM pg_namespace "
        "WHERE nspname = 'migrator_stats'"
    ) == [("postgres", ["postgres=UC/postgres", f"{OWNER}=U/postgres"])]
    rows = site.query(
        "SELECT oid::regprocedure::text, proowner::regrole::text, prosecdef, proconfig, "
        "proacl::text[] FROM pg_proc WHERE pronamespace = 'migrator_stats'::regnamespace "
        "ORDER BY 1"
    )
    pinned = ["search_path=pg_catalog, pg_temp"]
    acl = [f"{STATS}=X/{STATS}", f"{OWNER}=X/{STATS}"]
    assert rows == [(f, STATS, True, pinned, acl) for f in sorted(FUNCTIONS)]


ATTACKS = [
    "CREATE OR REPLACE FUNCTION migrator_stats.replica_lag_bytes() RETURNS bigint "
    "LANGUAGE sql AS 'SELECT 0::bigint'",
    "CREATE OR REPLACE FUNCTION migrator_stats.autovacuum_on(regclass) "
    "RETURNS TABLE (relation oid, phase text, wraparound bool) LANGUAGE sql AS "
    "'SELECT NULL::oid, NULL::text, NULL::bool'",
    "DROP FUNCTION migrator_stats.replica_lag_bytes()",
    f"ALTER FUNCTION migrator_stats.replica_lag_bytes() OWNER TO {OWNER}",
    "ALTER FUNCTION migrator_stats.replica_lag_bytes() SET search_path = public",
    "CREATE FUNCTION migrator_stats.replica_lag_bytes(int) RETURNS bigint "
    "LANGUAGE sql AS 'SELECT 0::bigint'",
    "ALTER SCHEMA migrator_stats RENAME TO old_stats",
    "DROP SCHEMA migrator_stats CASCADE",
    f"GRANT {STATS} TO {OWNER}",
    f"SET ROLE {STATS}",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_owner_cannot_redefine_the_functions_or_take_the_role(site: Site, attack: str) -> None:
    with site.login(OWNER) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(attack)
        assert conn.execute(f"SELECT * FROM {CALLS[0]}").fetchall() == [(None,)]  # no standby
        assert conn.execute(f"SELECT * FROM {CALLS[1]}").fetchall() == []
        sees = "SELECT pg_has_role('pg_read_all_stats', 'USAGE'), pg_has_role(%s, 'MEMBER')"
        assert conn.execute(sees, (STATS,)).fetchall() == [(False, False)]


@pytest.mark.parametrize("role", [APP, NOBODY])
@pytest.mark.parametrize("call", CALLS)
def test_the_runtime_and_other_roles_cannot_execute_them(site: Site, role: str, call: str) -> None:
    with site.login(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT * FROM {call}")


def test_the_owner_cannot_pass_them_on(site: Site) -> None:
    # No grant option: PostgreSQL warns "no privileges were granted" and grants nothing.
    site.as_role(
        OWNER,
        f"GRANT EXECUTE ON FUNCTION {', '.join(FUNCTIONS)} TO {APP}; "
        f"GRANT USAGE ON SCHEMA migrator_stats TO {APP}",
    )
    with site.login(APP) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT * FROM {CALLS[0]}")


def test_the_owner_as_a_member_of_the_stats_role_is_refused(site: Site) -> None:
    # Through the stats role the owner would be a member of pg_read_all_stats.
    site.as_admin(f"GRANT {STATS} TO {OWNER}")
    try:
        refused_and_unchanged(site, f"owner role {OWNER}", "pg_read_all_stats")
    finally:
        site.as_admin(f"REVOKE {STATS} FROM {OWNER}")
    site.start_succeeds()


@pytest.mark.parametrize(
    ("change", "undo", "words"),
    [
        (
            f"ALTER ROLE {STATS} LOGIN",
            f"ALTER ROLE {STATS} NOLOGIN",
            ("can log in", f"ALTER ROLE {STATS} NOLOGIN"),
        ),
        (
            f"ALTER ROLE {STATS} CREATEDB",
            f"ALTER ROLE {STATS} NOCREATEDB",
            ("has CREATEDB", f"ALTER ROLE {STATS} NOCREATEDB"),
        ),
        (
            f"GRANT {STATS} TO {NOBODY}",
            f"REVOKE {STATS} FROM {NOBODY}",
            (f"has member {NOBODY}", f"REVOKE {STATS} FROM {NOBODY}"),
        ),
        (
            f"GRANT pg_signal_backend TO {STATS}",
            f"REVOKE pg_signal_backend FROM {STATS}",
            ("is a member of pg_signal_backend", f"REVOKE pg_signal_backend FROM {STATS}"),
        ),
        (
            f"GRANT {APP} TO {STATS}",
            f"REVOKE {APP} FROM {STATS}",
            (f"is a member of {APP}",),
        ),
    ],
)
def test_a_stats_role_that_holds_more_is_refused_before_bootstrap(
    site: Site, change: str, undo: str, words: tuple[str, ...]
) -> None:
    # Checked with the other roles before bootstrap changes anything (77, one line); 000's
    # own check (65) stays behind it for a 000 run by other means.
    site.as_admin(change)
    try:
        refused_and_unchanged(site, f"stats role {STATS} ", *words)
    finally:
        site.as_admin(undo)
    site.start_succeeds()


def test_a_migrator_stats_schema_the_owner_planted_is_refused_and_not_called(
    site: Site,
) -> None:
    # The owner owns the database, so it may create a schema of that name where none is.
    site.as_admin("DROP SCHEMA migrator_stats CASCADE")
    site.as_role(
        OWNER,
        "CREATE SCHEMA migrator_stats; CREATE FUNCTION migrator_stats.replica_lag_bytes() "
        "RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER "
        "AS $$ BEGIN RAISE EXCEPTION 'planted function called'; END $$",
    )
    try:
        # The runner's throttle calls functions only in a schema a superuser owns.
        with site.login(OWNER) as conn:
            settings = ThrottleSettings(max_replica_lag=1, pause_on_autovacuum=False)
            assert Throttle(settings, "public.things").reason(conn) is None
        result = site.run()
        assert result.returncode == MIGRATION_FAILED, result
        [failed] = result.events_named("migration_failed")
        assert failed["sqlstate"] == "42501", failed
        assert f"schema migrator_stats belongs to {OWNER}" in failed["error"], failed
    finally:
        site.as_role(OWNER, "DROP SCHEMA migrator_stats CASCADE")
    site.start_succeeds()
    assert site.query(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'migrator_stats'"
    ) == [("postgres",)]
