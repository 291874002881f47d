"""Other tools' folder formats applied by the runner: only the up part runs, as that tool runs it."""

from __future__ import annotations

import pytest

DBMATE_FILE = """\
-- migrate:up
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);

-- migrate:down
DROP TABLE accounts;
"""


def test_dbmate_down_section_does_not_run_on_migrate(database, run_runner, migrations):
    """The issue's silent data loss: the down section used to run right after the up one."""
    migrations.add({
        "001_accounts.sql": DBMATE_FILE,
        "002_use_accounts.sql": "-- migrate:up\nINSERT INTO accounts VALUES (1, 'a@example.com');\n",
    })  # fmt: skip
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result.stdout
    assert database.query("SELECT id, email FROM accounts") == [(1, "a@example.com")]
    assert database.query("SELECT version FROM schema_migrations ORDER BY version") == [
        ("001_accounts",),
        ("002_use_accounts",),
    ]


def migrate(run_runner, database, migrations, *args):
    return run_runner(*args, env=database.env(MIGRATIONS_DIR=str(migrations.path)))


def applied(result):
    assert result.returncode == 0, result.stdout
    return result.events_named("migrations_complete")[0]["applied"]


# goose's documentation (README "SQL Migrations", "Embedded sql migrations"): Up/Down sections,
# a PL/pgSQL function between StatementBegin and StatementEnd, NO TRANSACTION for CONCURRENTLY.
GOOSE_FOLDER = {
    "20240101000001_create_users.sql": """\
-- +goose Up
CREATE TABLE users (
    id int NOT NULL PRIMARY KEY,
    username text,
    updated_at timestamptz
);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger AS $$
DECLARE
  now_at timestamptz;
BEGIN
  now_at := now();
  NEW.updated_at := now_at;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION touch_updated_at();
DROP TABLE users;
""",
    "20240101000002_users_index.sql": """\
-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY users_username ON users (username);

-- +goose Down
DROP INDEX CONCURRENTLY users_username;
""",
}


def test_goose_folder_runs_its_up_sections_as_goose_does(database, run_runner, migrations):
    migrations.add(GOOSE_FOLDER)
    result = migrate(run_runner, database, migrations)
    assert applied(result) == ["20240101000001_create_users", "20240101000002_users_index"]
    modes = {e["version"]: e["mode"] for e in result.events_named("migration_started")}
    assert modes["20240101000002_users_index"] == "no-transaction"
    assert database.scalar("SELECT to_regclass('users_username')") is not None
    assert database.scalar("SELECT count(*) FROM pg_proc WHERE proname = 'touch_updated_at'") == 1

    back = migrate(run_runner, database, migrations, "rollback", "--to", "0")
    assert back.returncode == 0, back.stdout
    assert database.scalar("SELECT to_regclass('users')") is None
    assert database.query("SELECT count(*) FROM schema_migrations") == [(0,)]


# golang-migrate's docs (MIGRATIONS.md): {version}_{title}.up.sql / {version}_{title}.down.sql.
def test_golang_migrate_folder_and_its_down_files(database, run_runner, migrations):
    migrations.add({
        "1_create_users_table.up.sql": "CREATE TABLE users (id serial PRIMARY KEY);",
        "1_create_users_table.down.sql": "DROP TABLE IF EXISTS users;",
        "2_add_email.up.sql": "ALTER TABLE users ADD COLUMN email text;",
        "2_add_email.down.sql": "ALTER TABLE users DROP COLUMN email;",
        "10_add_name.up.sql": "ALTER TABLE users ADD COLUMN name text;",
    })  # fmt: skip
    assert applied(migrate(run_runner, database, migrations)) == [
        "1_create_users_table",
        "2_add_email",
        "10_add_name",
    ]
    refused = migrate(run_runner, database, migrations, "rollback", "--to", "1")
    assert refused.returncode == 65
    assert "10_add_name.up.sql has no down part" in refused.termination_message


# Flyway's docs (Concepts > Migrations): V<version>__<description>.sql, U for undo, R__ for
# repeatable; versions compare part by part (1.10 after 1.9), repeatables run after the others.
def test_flyway_folder_order_undo_and_repeatable(database, run_runner, migrations):
    migrations.add({
        "V1__create_users.sql": "CREATE TABLE users (id int PRIMARY KEY, name text);",
        "V1.9__add_email.sql": "ALTER TABLE users ADD COLUMN email text;",
        "V1.10__add_age.sql": "ALTER TABLE users ADD COLUMN age int;",
        "U1.10__add_age.sql": "ALTER TABLE users DROP COLUMN age;",
        "R__users_view.sql": "CREATE OR REPLACE VIEW users_view AS SELECT id FROM users;",
    })  # fmt: skip
    assert applied(migrate(run_runner, database, migrations)) == [
        "V1__create_users",
        "V1.9__add_email",
        "V1.10__add_age",
        "R__users_view",
    ]
    assert applied(migrate(run_runner, database, migrations)) == []
    migrations.write(
        "R__users_view.sql", "CREATE OR REPLACE VIEW users_view AS SELECT id, name FROM users;"
    )
    assert applied(migrate(run_runner, database, migrations)) == ["R__users_view"]
    assert database.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'users_view' "
        "ORDER BY ordinal_position"
    ) == [("id",), ("name",)]
    back = migrate(run_runner, database, migrations, "rollback", "--steps", "1")
    assert back.returncode == 0, back.stdout
    assert (
        database.scalar("SELECT count(*) FROM information_schema.columns WHERE column_name = 'age'")
        == 0
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"001_a.sql": "SELECT 1;", "00002_b.sql": "-- +goose Up\nSELECT 1;"}, "different formats"),
        ({"V1__a.sql": "SELECT 1;", "2_b.up.sql": "SELECT 1;"}, "different formats"),
        ({"001_a.sql": "-- migrate:up transaction:maybe\nSELECT 1;"}, "unknown option"),
        ({"001_a.sql": "-- migrate:up\nSELECT 1;\n-- migrate:sideways\n"}, "unknown marker"),
        ({"00001_a.sql": "-- +goose Up\n-- +goose ENVSUB ON\nSELECT 1;"}, "not understood"),
        ({"00001_a.sql": "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n"}, "StatementEnd"),
        ({"V1__a.sql": "CREATE TABLE ${table} (id int);"}, "placeholder"),
        ({"001_a.sql": "SELECT 1;\n-- migrate:down\nSELECT 2;", "001_a.down.sql": ""}, "keep one"),
    ],
)
def test_markers_not_understood_and_mixed_folders_are_refused(
    database, run_runner, migrations, files, expected
):
    migrations.add(files)
    result = migrate(run_runner, database, migrations)
    assert result.returncode == 65, result.stdout
    assert expected in result.termination_message
    assert database.scalar("SELECT to_regclass('schema_migrations')") is None


# --- an error inside a goose block: named at its own line, column and statement ---------------

NO_POSITION = "ALTER TABLE nope ADD COLUMN x int"  # the server gives no position: column 1
WITH_POSITION = "INSERT INTO a SELECT * FROM nope"  # the server points at "nope": column 29


def goose_block(failing_line: int, failing: str, no_transaction: bool) -> str:
    """A statement on line 2, a block of three on lines 4-6, one of them ``failing``."""
    block = ["CREATE TABLE a (id int);", "CREATE TABLE b (id int);", "CREATE TABLE c (id int);"]
    block[failing_line - 4] = failing + ";"
    head = "-- +goose NO TRANSACTION\n" if no_transaction else ""
    return (
        head + "-- +goose Up\nCREATE TABLE before_block (id int);\n-- +goose StatementBegin\n"
        + "\n".join(block) + "\n-- +goose StatementEnd\n"
    )  # fmt: skip


def tables(database, *names):
    return [name for name in names if database.scalar("SELECT to_regclass(%s)", name)]


@pytest.mark.parametrize("analyze", ["true", "false"])
@pytest.mark.parametrize("no_transaction", [False, True], ids=["transaction", "no-transaction"])
@pytest.mark.parametrize(
    ("line", "failing", "column"),
    [(4, NO_POSITION, 1), (5, WITH_POSITION, 29), (6, NO_POSITION, 1)],
    ids=["start", "middle", "end"],
)
def test_an_error_inside_a_goose_block_names_its_line_and_statement(
    database, run_runner, migrations, line, failing, column, no_transaction, analyze
):
    """It was blamed on the runner's own SQL ("... failed after the file ran"), or put on a line
    past the end of the file, with the whole block as the statement."""
    path = migrations.write("00001_a.sql", goose_block(line, failing, no_transaction))
    shift = 1 if no_transaction else 0  # the NO TRANSACTION line comes first
    env = database.env(MIGRATIONS_DIR=str(migrations.path), ANALYZE_AFTER_MIGRATE=analyze)
    result = run_runner(env=env)

    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    expected = f'{path}:{line + shift}:{column}: 42P01 relation "nope" does not exist'
    assert failure["error"].startswith(expected), failure["error"]
    assert (failure["line"], failure["column"]) == (line + shift, column)
    assert failure["statement"] == failing
    assert "after the file ran" not in failure["error"]
    # The block is one transaction either way: nothing of it is left. Outside a transaction the
    # statement before it stayed, and the error says so.
    stayed = ["before_block"] if no_transaction else []
    assert tables(database, "before_block", "a", "b", "c") == stayed
    assert database.query("SELECT version FROM schema_migrations") == []
    assert ("its first 1 statement(s) (up to line 3)" in failure["error"]) is no_transaction


def test_errors_in_the_second_of_two_blocks_and_in_a_file_read_part_by_part(
    database, run_runner, migrations
):
    """Two blocks (the issue's "9:57" in an 8-line file); a file that mentions COPY is sent in
    parts (its statements as psql reads them): the error is still where it is in the file."""
    two_blocks = (
        "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE a (id int);\n"
        "-- +goose StatementEnd\n-- +goose StatementBegin\nCREATE TABLE b (id int);\n"
        "SELECT 1; SELECT * FROM nope;\n-- +goose StatementEnd\n"
    )
    first = migrations.write("00001_a.sql", two_blocks)
    result = migrate(run_runner, database, migrations)
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert failure["error"] == f'{first}:7:25: 42P01 relation "nope" does not exist'
    assert failure["statement"] == "SELECT * FROM nope"
    assert tables(database, "a", "b") == []

    first.write_text(two_blocks.replace("SELECT * FROM nope", "SELECT 2"))
    migrations.write(
        "00002_b.sql",
        "-- +goose Up\nCREATE TABLE copy_log (id int);\n-- +goose StatementBegin\n"
        "INSERT INTO copy_log VALUES (1);\nALTER TABLE nope ADD COLUMN x int;\n"
        "-- +goose StatementEnd\n",
    )
    result = migrate(run_runner, database, migrations)
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert failure["error"] == (
        f'{migrations.path / "00002_b.sql"}:5:1: 42P01 relation "nope" does not exist'
    )
    assert failure["statement"] == "ALTER TABLE nope ADD COLUMN x int"
    assert tables(database, "a", "b", "copy_log") == ["a", "b"]
