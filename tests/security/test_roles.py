"""A runtime role or owner that holds more than its place is refused (77) before bootstrap
changes anything, whether a superuser granted it or a bootstrap script did; the roles cannot
grant it to themselves."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import Database, launch
from tests.security.conftest import (
    APP,
    BOOTSTRAP_SCRIPT,
    FIRST_MIGRATION,
    NOBODY,
    OWNER,
    Site,
    refused,
    refused_and_unchanged,
)

ATTRIBUTES = ["SUPERUSER", "BYPASSRLS", "CREATEROLE", "CREATEDB", "REPLICATION"]
KINDS = {OWNER: "owner role", APP: "runtime role"}
INTERMEDIATE = "sec_middle"


@pytest.mark.parametrize("attribute", ATTRIBUTES)
@pytest.mark.parametrize("role", [APP, OWNER])
def test_a_role_with_a_forbidden_attribute_is_refused(
    site: Site, role: str, attribute: str
) -> None:
    site.as_admin(f"ALTER ROLE {role} {attribute}")
    try:
        message = refused_and_unchanged(site, f"{KINDS[role]} {role} has {attribute}")
        assert f"ALTER ROLE {role} NO{attribute}" in message
    finally:
        site.as_admin(f"ALTER ROLE {role} NO{attribute}")
    site.start_succeeds()


CLEANUP = f"{OWNER}_cleanup"  # created by the shipped 000, named after the owner


@pytest.mark.parametrize("attribute", ["SUPERUSER", "BYPASSRLS", "CREATEROLE"])
def test_the_cleanup_role_with_a_forbidden_attribute_is_refused(site: Site, attribute: str) -> None:
    site.as_admin(f"ALTER ROLE {CLEANUP} {attribute}")
    try:
        message = refused_and_unchanged(site, f"cleanup role {CLEANUP} has {attribute}")
        assert f"ALTER ROLE {CLEANUP} NO{attribute}" in message
    finally:
        site.as_admin(f"ALTER ROLE {CLEANUP} NO{attribute}")
    site.start_succeeds()


def test_the_cleanup_role_as_a_member_of_the_owner_is_refused(site: Site) -> None:
    site.as_admin(f"GRANT {OWNER} TO {CLEANUP}")
    try:
        refused_and_unchanged(site, CLEANUP, OWNER)
    finally:
        site.as_admin(f"REVOKE {OWNER} FROM {CLEANUP}")
    site.start_succeeds()


MEMBERSHIPS = [
    pytest.param(APP, "postgres", False, id="runtime-member-of-the-superuser"),
    pytest.param(APP, OWNER, False, id="runtime-member-of-the-owner"),
    pytest.param(APP, "pg_read_all_data", False, id="runtime-pg_read_all_data"),
    pytest.param(APP, "pg_write_all_data", False, id="runtime-pg_write_all_data"),
    pytest.param(APP, "pg_execute_server_program", False, id="runtime-pg_execute_server_program"),
    pytest.param(APP, "pg_signal_backend", False, id="runtime-pg_signal_backend"),
    pytest.param(OWNER, "postgres", False, id="owner-member-of-the-superuser"),
    pytest.param(OWNER, "pg_read_all_data", False, id="owner-pg_read_all_data"),
    pytest.param(OWNER, "pg_write_server_files", False, id="owner-pg_write_server_files"),
    pytest.param(APP, "pg_read_all_data", True, id="runtime-pg_read_all_data-through-a-role"),
    pytest.param(APP, OWNER, True, id="runtime-member-of-the-owner-through-a-role"),
    pytest.param(OWNER, "postgres", True, id="owner-member-of-the-superuser-through-a-role"),
]


@pytest.mark.parametrize(("role", "group", "through"), MEMBERSHIPS)
def test_a_role_member_of_a_stronger_role_is_refused(
    site: Site, role: str, group: str, through: bool
) -> None:
    grants = (
        [f"CREATE ROLE {INTERMEDIATE}", f"GRANT {group} TO {INTERMEDIATE}",
         f"GRANT {INTERMEDIATE} TO {role}"]
        if through
        else [f"GRANT {group} TO {role}"]
    )  # fmt: skip
    for grant in grants:
        site.as_admin(grant)
    try:
        message = refused_and_unchanged(site, f"{KINDS[role]} {role} is a member of {group}")
        assert f"REVOKE {group} FROM {role}" in message
    finally:
        site.as_admin(f"REVOKE {group} FROM {role}; DROP ROLE IF EXISTS {INTERMEDIATE}")
    site.start_succeeds()


# Predefined roles that newer servers added, with the first version that has each: refused
# where the server has them; an older server does not know the name (the check skips it).
NEWER_PREDEFINED_ROLES = [
    pytest.param("pg_create_subscription", 160000, id="pg_create_subscription-pg16+"),
    pytest.param("pg_maintain", 170000, id="pg_maintain-pg17+"),
]


@pytest.mark.parametrize(("group", "since"), NEWER_PREDEFINED_ROLES)
def test_a_role_member_of_a_newer_predefined_role_is_refused_where_it_exists(
    site: Site, group: str, since: int
) -> None:
    (version,) = site.query("SELECT current_setting('server_version_num')::int")[0]
    if version < since:
        with pytest.raises(psycopg.errors.UndefinedObject):
            site.as_admin(f"GRANT {group} TO {APP}")
        site.start_succeeds()
        return
    site.as_admin(f"GRANT {group} TO {APP}")
    try:
        message = refused_and_unchanged(site, f"runtime role {APP} is a member of {group}")
        assert f"REVOKE {group} FROM {APP}" in message
    finally:
        site.as_admin(f"REVOKE {group} FROM {APP}")
    site.start_succeeds()


def test_a_role_member_of_a_role_with_createrole_is_refused(site: Site) -> None:
    """SET ROLE to that role gives CREATEROLE, and with it any role."""
    site.as_admin(f"CREATE ROLE {INTERMEDIATE} CREATEROLE; GRANT {INTERMEDIATE} TO {APP}")
    try:
        refused_and_unchanged(site, f"runtime role {APP} is a member of {INTERMEDIATE}",
                              f"{INTERMEDIATE} has CREATEROLE")  # fmt: skip
    finally:
        site.as_admin(f"DROP ROLE {INTERMEDIATE}")
    site.start_succeeds()


@pytest.mark.parametrize("attacker", [APP, OWNER, NOBODY])
def test_no_role_can_grant_itself_more(site: Site, attacker: str) -> None:
    attempts = [
        *(f"ALTER ROLE {attacker} {attribute}" for attribute in ATTRIBUTES),
        f"GRANT postgres TO {attacker}",
        f"GRANT pg_read_all_data TO {attacker}",
        f"GRANT {OWNER} TO {attacker}" if attacker != OWNER else f"GRANT {APP} TO {NOBODY}",
        "CREATE EVENT TRIGGER sneaky ON ddl_command_end EXECUTE FUNCTION pg_catalog.now()",
        # Default privileges only for roles one belongs to; preload libraries are superuser's.
        f"ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON TABLES TO {attacker}",
        f"ALTER DATABASE \"{site.db.name}\" SET session_preload_libraries = 'auto_explain'",
        f"ALTER ROLE {attacker} SET session_preload_libraries = 'auto_explain'",
        # A cast between built-in types (the superuser's statements could use it implicitly).
        "CREATE CAST (bigint AS name) WITH INOUT AS IMPLICIT",
    ]
    with site.login(attacker) as conn:
        for statement in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    site.start_succeeds()


def test_a_bootstrap_script_that_grants_too_much_is_rolled_back(site: Site, tmp_path: Path) -> None:
    """Checked again after 000 ran, in its transaction: the grant and the passwords roll back."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    generous = BOOTSTRAP_SCRIPT.read_text() + f"\nGRANT pg_read_all_data TO {APP};\n"
    (migrations / BOOTSTRAP_SCRIPT.name).write_text(generous)
    (migrations / "001_things.sql").write_text(FIRST_MIGRATION)
    before = site.state()
    env = site.env(MIGRATIONS_DIR=str(migrations))
    result = launch(env=env, workdir=tmp_path).wait()
    refused(result, f"runtime role {APP} is a member of pg_read_all_data")
    assert site.state() == before, "the script's grant or a password survived"
    site.start_succeeds()


def test_an_owner_that_is_the_admin_itself_is_allowed_with_a_warning(
    site: Site, unborn_database: Database, tmp_path: Path
) -> None:
    """DB_USER=DB_ADMIN_USER (a development set-up): no lower role to keep in its place."""
    env = unborn_database.env(DB_ADMIN_USER="postgres", DB_ADMIN_PASSWORD=site.server.password,
                              APP_DB_USER=APP, MIGRATIONS_DIR=str(site.migrations))  # fmt: skip
    result = launch(env=env, workdir=tmp_path).wait()
    assert result.returncode == 0, result
    assert result.events_named("owner_is_admin")[0]["role"] == "postgres"
