"""MIGRATIONS_TABLE elsewhere gets the trust of the default history table.

The table the setting names, and its lock's view, are the owner's alone, whichever command
created them; code the owner attaches to it is refused before bootstrap runs anything; and a
schema another role owns (it could drop or replace the history) is refused before anything is
created in it.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.security.conftest import (
    APP,
    ESCALATE,
    NOBODY,
    OWNER,
    OWNER_ONLY,
    UNDO_ESCALATE,
    Site,
    refused_and_unchanged,
)
from tests.security.test_history_privileges import assert_only_the_owner_writes

SCHEMA = "sec_history"
TABLE = f"{SCHEMA}.history"
LOCK = f"{TABLE}_lock"
CONFIGURED = {"MIGRATIONS_TABLE": TABLE}
CONFIG_ERROR = 78


@pytest.fixture
def configured(site: Site) -> Iterator[Site]:
    """Schema sec_history, made as 000 makes public: the owner's, the runtime role may use it,
    and the owner's default privileges there give the runtime role reads and writes on new
    tables (which the runner must take back from its history). baseline records 001 there
    (001 is applied: the site's own history says so)."""
    site.as_admin(
        f"CREATE SCHEMA {SCHEMA} AUTHORIZATION {OWNER}; GRANT USAGE ON SCHEMA {SCHEMA} TO {APP};"
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA {SCHEMA} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO {APP}"
    )
    try:
        result = site.run("baseline", "--version", "001_things", **OWNER_ONLY, **CONFIGURED)
        assert result.returncode == 0, result
        yield site
    finally:
        site.as_admin(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA {SCHEMA} "
            f"REVOKE ALL ON TABLES FROM {APP}; DROP SCHEMA {SCHEMA} CASCADE"
        )


def test_created_by_baseline_then_bootstrap_and_migrate_only_the_owner_writes(
    configured: Site,
) -> None:
    assert_only_the_owner_writes(configured, TABLE)
    result = configured.run(**CONFIGURED)  # bootstrap records 000 there, migrate finds 001
    assert result.returncode == 0, result
    versions = configured.query(f"SELECT version FROM {TABLE} ORDER BY 1")
    assert versions == [("000_init_database",), ("001_things",)]
    assert_only_the_owner_writes(configured, TABLE)
    # Its lock: the owner's view, which neither other role can take.
    assert configured.query(f"SELECT relowner::regrole::text FROM pg_class "
                            f"WHERE oid = '{LOCK}'::regclass") == [(OWNER,)]  # fmt: skip
    for role in (APP, NOBODY):
        with configured.login(role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"BEGIN; LOCK TABLE {LOCK} IN SHARE UPDATE EXCLUSIVE MODE")


TRIGGER = f"""
CREATE FUNCTION public.escalate_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); RETURN NEW; END $$;
CREATE TRIGGER sneaky BEFORE INSERT OR UPDATE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION public.escalate_trigger();
"""
UNDO_TRIGGER = f"DROP TRIGGER sneaky ON {TABLE}; DROP FUNCTION public.escalate_trigger();"


def test_a_trigger_on_the_configured_history_is_refused_and_nothing_changes(
    configured: Site,
) -> None:
    configured.as_role(OWNER, ESCALATE + TRIGGER)
    try:
        message = refused_and_unchanged(
            configured, f"trigger sneaky on {TABLE}", OWNER, **CONFIGURED
        )
        assert "could run as the superuser" in message
        assert configured.query("SELECT * FROM attack_trace") == [], "the planted code ran"
    finally:
        configured.as_role(OWNER, UNDO_TRIGGER + UNDO_ESCALATE)
    assert configured.run(**CONFIGURED).returncode == 0


def test_a_schema_another_role_owns_is_refused_before_anything_is_created(site: Site) -> None:
    """The runtime role owning the history's schema could drop the history or its lock."""
    site.as_admin(f"CREATE SCHEMA app_owned AUTHORIZATION {APP}; "
                  f"GRANT USAGE, CREATE ON SCHEMA app_owned TO {OWNER}")  # fmt: skip
    try:
        for command, extra in ((("baseline", "--version", "001_things"), OWNER_ONLY), ((), {})):
            result = site.run(*command, **extra, MIGRATIONS_TABLE="app_owned.history")
            assert result.returncode == CONFIG_ERROR, result
            message = result.termination_message
            assert message.startswith(f"MIGRATIONS_TABLE names schema app_owned, owned by {APP}")
            assert "\n" not in message.strip()
            assert site.query("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace "
                              "WHERE n.nspname = 'app_owned'") == [(0,)]  # fmt: skip
    finally:
        site.as_admin("DROP SCHEMA app_owned CASCADE")
    site.start_succeeds()
