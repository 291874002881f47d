"""Fixtures of the attack suite: a bootstrapped database, its three roles, and the runs to compare.

A ``Site`` is bootstrapped once per test module with the real ``000_init_database.sql``; each
test plants its attack, runs the runner, checks the outcome, undoes the attack and checks that
the next start succeeds. Every run goes through ``tests.conftest.launch`` (JSON lines, no known
password anywhere).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import (
    REPO,
    Database,
    PgServer,
    RunResult,
    create_database,
    drop_database,
    launch,
    remember_secret,
)

OWNER = "sec_owner"
APP = "sec_app"
NOBODY = "sec_nobody"  # LOGIN and CONNECT on the database, nothing else
OWNER_PASSWORD = remember_secret("sec-owner-Pa55word-0123456789")
APP_PASSWORD = remember_secret("sec-app-Pa55word-0123456789")
NOBODY_PASSWORD = remember_secret("sec-nobody-Pa55word-0123456789")
PASSWORDS = {OWNER: OWNER_PASSWORD, APP: APP_PASSWORD, NOBODY: NOBODY_PASSWORD}
BOOTSTRAP_SCRIPT = REPO / "migrations" / "000_init_database.sql"
FIRST_MIGRATION = "CREATE TABLE things (id int PRIMARY KEY, name citext);\n"
PERMISSION_DENIED = 77

# Run as the owner: becomes superuser if it ever runs in a superuser's session, even one that
# SET ROLE to the owner (it resets the role first), and leaves a trace of who ran it.
ESCALATE = f"""
CREATE TABLE IF NOT EXISTS public.attack_trace (current_role_name name, session_role_name name);
CREATE OR REPLACE FUNCTION public.escalate() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE 'RESET ROLE';
    EXCEPTION WHEN others THEN NULL;
    END;
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE {OWNER} SUPERUSER';
    END IF;
    INSERT INTO public.attack_trace VALUES (current_user, session_user);
END $$;
"""
UNDO_ESCALATE = "DROP FUNCTION IF EXISTS public.escalate(); DROP TABLE IF EXISTS attack_trace;"

ROLE_STATE = """
SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication, rolpassword
FROM pg_authid WHERE rolname LIKE 'sec\\_%' ORDER BY rolname
"""
MEMBERSHIPS = """
SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members
WHERE member::regrole::text LIKE 'sec\\_%' OR roleid::regrole::text LIKE 'sec\\_%' ORDER BY 1, 2
"""


@dataclass(frozen=True)
class State:
    """What a refused run must leave exactly as it was: the database as pg_dump prints it
    (schema and rows), the roles (attributes and password verifiers, which a new SCRAM salt
    changes on every successful bootstrap) and their memberships."""

    dump: str
    roles: list[tuple[Any, ...]]
    memberships: list[tuple[Any, ...]]


@dataclass
class Site:
    """A database bootstrapped by the real 000 with the owner ``sec_owner`` and the runtime
    role ``sec_app``, and ``sec_nobody``, a role with only CONNECT."""

    db: Database
    migrations: Path
    workdir: Path

    @property
    def server(self) -> PgServer:
        return self.db.server

    def env(self, **extra: str) -> dict[str, str]:
        variables = {
            "DB_USER": OWNER,
            "DB_PASSWORD": OWNER_PASSWORD,
            "DB_ADMIN_USER": "postgres",
            "DB_ADMIN_PASSWORD": self.server.password,
            "APP_DB_USER": APP,
            "APP_DB_PASSWORD": APP_PASSWORD,
            "MIGRATIONS_DIR": str(self.migrations),
            "MIGRATION_LOCK_TIMEOUT": "10",
        }
        return self.db.env(**{**variables, **extra})

    def run(self, *args: str, timeout: float = 120, **extra: str) -> RunResult:
        return launch(*args, env=self.env(**extra), workdir=self.workdir).wait(timeout)

    def admin(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        """A superuser connection (to this database unless ``dbname`` says otherwise)."""
        return psycopg.connect(**self.server.conninfo(dbname or self.db.name), autocommit=True)

    def login(self, role: str, dbname: str | None = None) -> psycopg.Connection[Any]:
        """A connection as ``role`` with its password: the attacker's own session."""
        info = {**self.server.conninfo(dbname or self.db.name), "user": role}
        return psycopg.connect(**{**info, "password": PASSWORDS[role]}, autocommit=True)

    def as_admin(self, statements: str) -> None:
        with self.admin() as conn:
            conn.execute(statements)

    def as_role(self, role: str, statements: str) -> None:
        with self.login(role) as conn:
            conn.execute(statements)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """As the superuser, whatever role the owner's ALTER DATABASE ... SET role names."""
        with self.admin() as conn:
            conn.execute("SET ROLE NONE")
            return conn.execute(sql).fetchall()

    def superusers(self) -> list[str]:
        return [row[0] for row in self.query("SELECT rolname FROM pg_roles WHERE rolsuper")]

    def state(self) -> State:
        dump = self.db.pg_dump("--role=postgres")
        return State(dump, self.query(ROLE_STATE), self.query(MEMBERSHIPS))

    def start_succeeds(self) -> RunResult:
        result = self.run()
        assert result.returncode == 0, result
        assert self.superusers() == ["postgres"]
        return result


def refused(result: RunResult, *words: str) -> str:
    """The run exited 77 with one error line naming every one of ``words``; returns it."""
    assert result.returncode == PERMISSION_DENIED, result
    errors = [event for event in result.events if event["level"] == "error"]
    assert len(errors) == 1, result
    message = str(errors[0]["error"])
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def refused_and_unchanged(site: Site, *words: str, **extra: str) -> str:
    """Run bootstrap against a planted attack: refused (77, naming ``words``), nothing changed,
    and no role became superuser (the planting tests start with ``postgres`` alone)."""
    before, superusers = site.state(), site.superusers()
    result = site.run(**extra)
    message = refused(result, *words)
    assert site.superusers() == superusers, "a role became superuser"
    assert site.state() == before, "a refused run changed something"
    return message


def build_site(server: PgServer, workdir: Path) -> Iterator[Site]:
    migrations = workdir / "migrations"
    migrations.mkdir(parents=True)
    shutil.copy(BOOTSTRAP_SCRIPT, migrations / BOOTSTRAP_SCRIPT.name)
    (migrations / "001_things.sql").write_text(FIRST_MIGRATION)
    db = create_database(server)
    site = Site(db, migrations, workdir)
    try:
        site.start_succeeds()
        site.as_admin(f"CREATE ROLE {NOBODY} LOGIN PASSWORD '{NOBODY_PASSWORD}'")
        site.as_admin(f'GRANT CONNECT ON DATABASE "{db.name}" TO {NOBODY}')
        yield site
    finally:
        drop_database(db)
        with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {NOBODY}, {APP}, {OWNER}")


@pytest.fixture(scope="module")
def site(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from build_site(pg_server, tmp_path_factory.mktemp("security"))


# golang-migrate's table (database/postgres/postgres.go), version 1 applied: adopt's input.
GOLANG_MIGRATE_HISTORY = (
    "CREATE TABLE public.schema_migrations (version bigint NOT NULL PRIMARY KEY, "
    "dirty boolean NOT NULL); INSERT INTO public.schema_migrations VALUES (1, false)"
)
# The owner alone, as a person runs baseline or adopt by hand: no admin, no runtime role.
OWNER_ONLY = {
    "DB_ADMIN_USER": "",
    "DB_ADMIN_PASSWORD": "",
    "APP_DB_USER": "",
    "APP_DB_PASSWORD": "",
}


@pytest.fixture
def without_history(site: Site) -> Iterator[Site]:
    """The site with its history table gone: the next command that writes creates it."""
    site.as_admin("ALTER TABLE public.schema_migrations RENAME TO schema_migrations_saved")
    yield site
    site.as_admin(
        "DROP TABLE IF EXISTS public.schema_migrations, public.schema_migrations_golang_migrate;"
        "ALTER TABLE public.schema_migrations_saved RENAME TO schema_migrations"
    )


def baseline_creates_the_history(site: Site) -> None:
    result = site.run("baseline", "--version", "001_things", **OWNER_ONLY)
    assert result.returncode == 0, result
    assert site.query("SELECT version FROM public.schema_migrations") == [("001_things",)]


def adopt_creates_the_history(site: Site) -> RunResult:
    site.as_role(OWNER, GOLANG_MIGRATE_HISTORY)
    result = site.run("adopt", **OWNER_ONLY)
    assert result.returncode == 0, result
    return result
