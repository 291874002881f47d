"""Fixtures and helpers for the production-schema tests (test_schema_*.py).

A database is prepared the way users prepare it: ``entrypoint.py`` in bootstrap
mode (superuser credentials given) creates it, runs 000_init_database.sql and
applies 001_initial_production_schema.sql as the owner role. Tests then connect as
the owner (``auth_service``) or as the runtime role (``auth_service_app``) with
their passwords; row level security is checked as the runtime role.

Roles are cluster-global and the session shares one server, so every fixture runs
the runner again (idempotent) and the passwords are the same for the whole session.

Test modules bind the fixtures they use as module attributes
(``schema_db = schema_fixtures.schema_db``).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import conftest
from tests.conftest import Database, RunResult, launch

OWNER_ROLE = "auth_service"
APP_ROLE = "auth_service_app"
OWNER_PASSWORD = conftest.remember_secret("owner-" + secrets.token_urlsafe(18))
APP_PASSWORD = conftest.remember_secret("app-" + secrets.token_urlsafe(18))
CLEANUP_ROLE = "auth_service_cleanup"  # named after the owner by 000
CLEANUP_PASSWORD = conftest.remember_secret("cleanup-" + secrets.token_urlsafe(18))

# Tables holding per-user data: row level security must bind the runtime role.
PER_USER_TABLES = (
    "users",
    "password_history",
    "group_members",
    "auth_codes",
    "tokens",
    "refresh_tokens",
    "api_keys",
    "user_sessions",
    "security_events",
)
ALL_TABLES = (
    *PER_USER_TABLES,
    "groups",
    "oauth_clients",
    "rate_limits",
    "security_settings",
)

# Password hashes in each accepted encoding (valid shapes; not real passwords).
ARGON2ID_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43
BCRYPT_HASH = "$2b$12$" + "R9h/cIPz0gi.URNNX3kh2O" + "PST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
SCRYPT_HASH = "$scrypt$ln=17,r=8,p=1$c29tZXNhbHRzb21l$" + "B" * 43


def bcrypt_hash(n: int) -> str:
    """A distinct well-formed bcrypt string per n."""
    body = hashlib.sha256(str(n).encode()).hexdigest()[:53]
    return "$2b$12$" + body


def sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def runner_env(db: Database) -> dict[str, str]:
    """The environment of the bootstrap run: superuser for 000, the owner for 001."""
    return db.env(
        DB_USER=OWNER_ROLE,
        DB_PASSWORD=OWNER_PASSWORD,
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=db.server.password,
        APP_DB_PASSWORD=APP_PASSWORD,
        CLEANUP_DB_PASSWORD=CLEANUP_PASSWORD,
    )


def run_entrypoint(env: dict[str, str], workdir: Path, timeout: float = 180) -> RunResult:
    """Run entrypoint.py once, with the central output checks of conftest.

    For fixtures wider than one test, where conftest's function-scoped
    ``run_runner`` cannot be used.
    """
    return launch(env=env, workdir=workdir).wait(timeout)


@dataclass
class SchemaDatabase:
    """A database migrated to the production schema."""

    db: Database

    @property
    def name(self) -> str:
        return self.db.name

    def superuser(self) -> psycopg.Connection[Any]:
        return self.db.connect()

    def owner(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return self.db.connect(user=OWNER_ROLE, password=OWNER_PASSWORD, **kwargs)

    def cleanup(self) -> psycopg.Connection[Any]:
        """The cleanup role: it may execute 004's cleanup functions and nothing else."""
        return self.db.connect(user=CLEANUP_ROLE, password=CLEANUP_PASSWORD)

    def app(
        self, user_id: uuid.UUID | str | None = None, client_id: str | None = None
    ) -> psycopg.Connection[Any]:
        """The runtime role, with the request context set for the session when given."""
        conn = self.db.connect(user=APP_ROLE, password=APP_PASSWORD)
        if user_id is not None:
            set_context(conn, user_id)
        if client_id is not None:
            conn.execute("SELECT set_config('app.current_client_id', %s, false)", (client_id,))
        return conn

    # Seeding, as the owner (row level security does not bind the owner).

    def create_user(self, email: str | None = None, password_hash: str | None = None) -> uuid.UUID:
        email = email or f"u{uuid.uuid4().hex[:10]}@example.com"
        with self.owner() as conn:
            row = conn.execute(
                "INSERT INTO users (email, display_name, password_hash) "
                "VALUES (%s, %s, %s) RETURNING id",
                (email, email.split("@")[0], password_hash or BCRYPT_HASH),
            ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    def create_client(self, **overrides: Any) -> str:
        values: dict[str, Any] = {
            "client_id": f"client-{uuid.uuid4().hex[:12]}",
            "client_name": "Test client",
            "client_secret_hash": sha256("client-secret-" + uuid.uuid4().hex),
            "redirect_uris": ["https://app.example.com/callback"],
            "scopes": ["openid", "profile", "email"],
        }
        values.update(overrides)
        columns = ", ".join(values)
        placeholders = ", ".join(["%s"] * len(values))
        with self.owner() as conn:
            conn.execute(
                f"INSERT INTO oauth_clients ({columns}) VALUES ({placeholders})",
                tuple(values.values()),
            )
        return str(values["client_id"])


def set_context(conn: psycopg.Connection[Any], user_id: uuid.UUID | str | None) -> None:
    conn.execute(
        "SELECT set_config('app.current_user_id', %s, false)",
        ("" if user_id is None else str(user_id),),
    )


def migrate_fresh_database(server: Any, workdir: Path) -> SchemaDatabase:
    db = Database(server, f"t_schema_{uuid.uuid4().hex[:10]}")
    result = run_entrypoint(runner_env(db), workdir)
    assert result.returncode == 0, str(result)
    return SchemaDatabase(db)


def drop_database(db: SchemaDatabase) -> None:
    with psycopg.connect(**db.db.server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def schema_db(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaDatabase]:
    """One migrated database shared by the tests of a module (they use fresh ids)."""
    db = migrate_fresh_database(pg_server, tmp_path_factory.mktemp("schema"))
    yield db
    drop_database(db)


@pytest.fixture
def fresh_schema_db(
    pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SchemaDatabase]:
    """A migrated database of its own, for tests that count rows database-wide."""
    db = migrate_fresh_database(pg_server, tmp_path_factory.mktemp("schema"))
    yield db
    drop_database(db)
