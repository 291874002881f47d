"""More bad input, one case each: the documented exit code, one line naming the cause, nothing applied.

The first cases (file names, duplicates, non-UTF-8, unreadable files, ports, durations, password
files, the command line) are in tests/integration/test_bad_input.py, whose ``one_error`` check
this module reuses; a deleted applied file and drift are in tests/integration/test_drift.py.

Not errors, and tested as such below: a gap in the numbering (001, 003, 010 is normal), a file
with its own BEGIN/COMMIT (run statement by statement, as psql -f would), other files in the
folder (a README). The 50 MB data migration is tests/faults/test_big_file.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from migrator.errors import EX_CONFIG, EX_DATAERR, EX_OK
from tests.conftest import Database, MigrationsFolder, remember_secret
from tests.integration.test_bad_input import one_error

FILES = "invalid_migration_files"
FAILED = "migration_failed"
HISTORY = "history_mismatch"
CONFIG = "invalid_configuration"
GOOD = {"001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);"}
URL_SECRET = "url-secret-Vb7qk2"
LONG_FILE_LINES = 150
SYNTAX_ERROR_LINE = 120


def _long_file_with_a_typo() -> str:
    lines = [f"INSERT INTO accounts VALUES ({n});" for n in range(1, LONG_FILE_LINES + 1)]
    lines[SYNTAX_ERROR_LINE - 1] = "INSRT INTO accounts VALUES (0);"
    return "\n".join(lines) + "\n"


# (name, files to add, exit code, error event, words the one-line message must contain)
FILE_CASES = [
    ("syntax error at line 120 of a long file",
     {"002_many_rows.sql": _long_file_with_a_typo()},
     EX_DATAERR, FAILED, ["002_many_rows.sql:120:1", "42601"]),
    ("own BEGIN/COMMIT with a failing statement inside",
     {"002_own_tx.sql": "BEGIN;\nCREATE TABLE own_tx (id int);\nSELECT 1/0;\nCOMMIT;\n"},
     EX_DATAERR, FAILED, ["002_own_tx.sql:3", "22012"]),
    ("BEGIN without COMMIT",
     {"002_open_tx.sql": "BEGIN;\nCREATE TABLE open_tx (id int);\n"},
     EX_DATAERR, FILES, ["002_open_tx.sql", "line 1", "COMMIT"]),
    ("unknown -- migrate: directive",
     {"002_typo.sql": "-- migrate:no-transactoin\nCREATE TABLE typo (id int);\n"},
     EX_DATAERR, FILES, ["002_typo.sql", "line 1", "no-transactoin"]),
    ("invalid UTF-8 inside a block comment",
     {"002_comment.sql": b"CREATE TABLE c (id int);\n/* r\xc3sum\xe9 */\nSELECT 1;\n"},
     EX_DATAERR, FILES, ["002_comment.sql", "line 2", "UTF-8"]),
    ("truncated UTF-8 sequence at the end",
     {"002_truncated.sql": b"CREATE TABLE t (id int); -- \xe2\x82"},
     EX_DATAERR, FILES, ["002_truncated.sql", "line 1", "UTF-8"]),
    ("NUL byte (libpq would cut the file there)",
     {"002_nul.sql": "CREATE TABLE a (id int);\n\x00CREATE TABLE b (id int);\n"},
     EX_DATAERR, FILES, ["002_nul.sql", "line 2", "NUL"]),
]  # fmt: skip


def migrate(run_runner, database: Database, folder: MigrationsFolder, **env: str):
    return run_runner(env=database.env(MIGRATIONS_DIR=str(folder.path), **env))


def user_tables(database: Database) -> list[str]:
    rows = database.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    return [name for (name,) in rows]


@pytest.mark.parametrize(
    ("files", "code", "event", "mentions"),
    [case[1:] for case in FILE_CASES],
    ids=[case[0] for case in FILE_CASES],
)
def test_a_bad_file_after_a_good_run_changes_nothing(
    database, run_runner, migrations, files, code, event, mentions
):
    migrations.add(GOOD)
    assert migrate(run_runner, database, migrations).returncode == EX_OK
    before = (user_tables(database), database.query("SELECT * FROM schema_migrations"))
    for name, content in files.items():
        migrations.write(name, content)
    result = migrate(run_runner, database, migrations)
    one_error(result, event, code, *mentions)
    assert (user_tables(database), database.query("SELECT * FROM schema_migrations")) == before


def test_a_symlink_pointing_outside_the_folder(database, run_runner, migrations, tmp_path):
    outside = tmp_path / "elsewhere.sql"
    outside.write_text("CREATE TABLE elsewhere (id int);")
    migrations.add(GOOD)
    (migrations.path / "002_elsewhere.sql").symlink_to(outside)
    result = migrate(run_runner, database, migrations)
    one_error(result, FILES, EX_DATAERR, "002_elsewhere.sql", "outside", str(migrations.path))
    assert user_tables(database) == []


def test_a_symlink_inside_the_folder_is_fine(database, run_runner, migrations):
    """Kubernetes mounts a ConfigMap as symlinks into a ..data folder beside the files."""
    data = migrations.path / "..data"
    data.mkdir()
    (data / "001_accounts.sql").write_text(GOOD["001_accounts.sql"])
    (migrations.path / "001_accounts.sql").symlink_to(data / "001_accounts.sql")
    assert migrate(run_runner, database, migrations).returncode == EX_OK
    assert user_tables(database) == ["accounts", "schema_migrations"]


@pytest.mark.parametrize(
    "alteration",
    [
        "ALTER TABLE schema_migrations DROP COLUMN checksum",
        "ALTER TABLE schema_migrations RENAME COLUMN version TO name",
    ],
    ids=["column dropped", "column renamed"],
)
def test_a_history_table_altered_by_hand(database, run_runner, migrations, alteration):
    migrations.add(GOOD)
    assert migrate(run_runner, database, migrations).returncode == EX_OK
    with database.connect() as conn:
        conn.execute(alteration)
    migrations.write("002_more.sql", "CREATE TABLE more (id int);")
    result = migrate(run_runner, database, migrations)
    one_error(result, HISTORY, EX_DATAERR, "schema_migrations", "by hand")
    assert "more" not in user_tables(database)


def _password_file_is_a_directory(tmp_path, env: dict[str, str]) -> None:
    folder = tmp_path / "secret-dir"
    folder.mkdir()
    env["DB_PASSWORD_FILE"] = str(folder)
    del env["DB_PASSWORD"]


def _empty_password_file(tmp_path, env: dict[str, str]) -> None:
    empty = tmp_path / "empty-secret"
    empty.write_text("\n")
    env["DB_PASSWORD_FILE"] = str(empty)
    del env["DB_PASSWORD"]


def _setting(name: str, value: str) -> Callable[..., None]:
    def change(tmp_path, env: dict[str, str]) -> None:
        env[name] = value

    return change


def _without(name: str) -> Callable[..., None]:
    def change(tmp_path, env: dict[str, str]) -> None:
        env.pop(name, None)

    return change


# (name, how the environment is spoiled, words the one-line message must contain)
CONFIG_CASES = [
    ("wrong DB_SSLMODE", _setting("DB_SSLMODE", "maybe"), ["DB_SSLMODE", "'maybe'"]),
    ("DATABASE_URL with a bad scheme",
     _setting("DATABASE_URL", f"mysql://app:{URL_SECRET}@127.0.0.1/app"), ["DATABASE_URL", "mysql"]),
    ("DATABASE_URL with a bad port",
     _setting("DATABASE_URL", f"postgresql://app:{URL_SECRET}@127.0.0.1:http/app"), ["DATABASE_URL"]),
    ("password file that is a directory", _password_file_is_a_directory, ["DB_PASSWORD_FILE"]),
    ("empty password file", _empty_password_file, ["DB_PASSWORD"]),
    ("negative STATEMENT_TIMEOUT", _setting("STATEMENT_TIMEOUT", "-1"), ["STATEMENT_TIMEOUT"]),
    ("DDL_LOCK_RETRIES not a number", _setting("DDL_LOCK_RETRIES", "many"), ["DDL_LOCK_RETRIES"]),
    ("ALLOW_OUT_OF_ORDER not a boolean", _setting("ALLOW_OUT_OF_ORDER", "maybe"),
     ["ALLOW_OUT_OF_ORDER"]),
    ("unknown LOG_LEVEL", _setting("LOG_LEVEL", "verbose"), ["LOG_LEVEL", "'verbose'"]),
    ("PROGRESS_INTERVAL not a duration", _setting("PROGRESS_INTERVAL", "often"),
     ["PROGRESS_INTERVAL"]),
    ("DB_ADMIN_USER without its password", _setting("DB_ADMIN_USER", "postgres"),
     ["DB_ADMIN_PASSWORD"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "spoil", [case[1] for case in CONFIG_CASES], ids=[case[0] for case in CONFIG_CASES]
)
def test_bad_configuration_exits_78_before_touching_the_database(
    database, run_runner, migrations, tmp_path, spoil
):
    remember_secret(URL_SECRET)
    migrations.add(GOOD)
    env = database.env(MIGRATIONS_DIR=str(migrations.path))
    spoil(tmp_path, env)
    result = run_runner(env=env)
    mentions = next(case[2] for case in CONFIG_CASES if case[1] is spoil)
    one_error(result, CONFIG, EX_CONFIG, *mentions)
    assert user_tables(database) == []


def test_init_only_without_the_superuser(database, run_runner, migrations):
    migrations.add(GOOD)
    result = run_runner("--init-only", env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    one_error(result, CONFIG, EX_CONFIG, "--init-only", "DB_ADMIN_USER")
    assert user_tables(database) == []


# --- not errors ------------------------------------------------------------------------------


def test_a_gap_in_the_numbering_is_normal(database, run_runner, migrations):
    migrations.add({**GOOD, "003_b.sql": "CREATE TABLE b (id int);",
                    "010_c.sql": "CREATE TABLE c (id int);", "README.md": "not SQL"})  # fmt: skip
    result = migrate(run_runner, database, migrations)
    assert result.returncode == EX_OK, result
    assert result.events_named("migrations_complete")[0]["applied"] == [
        "001_accounts", "003_b", "010_c"
    ]  # fmt: skip


def test_a_file_with_its_own_transaction_applies(database, run_runner, migrations):
    migrations.add({**GOOD, "002_own.sql": "BEGIN;\nCREATE TABLE own (id int);\nCOMMIT;\n"})
    result = migrate(run_runner, database, migrations)
    assert result.returncode == EX_OK, result
    assert user_tables(database) == ["accounts", "own", "schema_migrations"]
    assert database.scalar("SELECT count(*) FROM schema_migrations") == 2
