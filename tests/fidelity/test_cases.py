"""The numbered cases of SQL fidelity: each applied with ``psql -v ON_ERROR_STOP=1 -f`` on one
fresh database and with the runner on another; both must leave the same pg_dump (schema and
data), or the runner must refuse the file before running anything (exit 65, naming the line).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import create_database, drop_database
from tests.fidelity.conftest import target


def modes(result: Any) -> dict[str, str]:
    return {e["version"]: e["mode"] for e in result.events_named("migration_started")}


def mode_changes(result: Any) -> dict[str, str]:
    return {e["version"]: e["sqlstate"] for e in result.events_named("mode_changed")}


# --- 1. COPY ... FROM stdin with inline data, COPY TO stdout, COPY with a server file ----------

COPY_FILE = (
    "CREATE TABLE notes (id int, note text);\n"
    "COPY notes (id, note) FROM stdin;\n"
    "1\tit's here; really\n"
    "2\t\\N\n"
    "3\ttab\\there 'quoted\n"
    "\\.\n"
    "INSERT INTO notes VALUES (4, 'after the data');\n"
    "COPY notes FROM stdin WITH (FORMAT csv, HEADER true);\n"
    "id,note\n"
    '5,"comma, and ""quotes"""\n'
    "\\.\n"
)


@pytest.mark.parametrize("header", ["", "-- migrate:no-transaction\n"], ids=["tx", "no-tx"])
def test_1_copy_from_stdin_with_inline_data(apply_both, other_database, header) -> None:
    result = apply_both({"001_copy.sql": header + COPY_FILE})
    assert modes(result)["001_copy"] == ("no-transaction" if header else "transaction")
    assert other_database.scalar("SELECT count(*) FROM notes") == 5
    assert other_database.scalar("SELECT note FROM notes WHERE id = 1") == "it's here; really"


def test_1_copy_to_stdout_runs_and_copy_with_a_server_file_follows_psql(
    apply_both, pg_server
) -> None:
    name = pg_server.data_dir / f"fidelity_{uuid.uuid4().hex[:8]}.csv"  # the server writes it
    apply_both(
        {
            "001_out.sql": (
                "CREATE TABLE src (a int, b text);\n"
                "INSERT INTO src VALUES (1, 'x'), (2, 'y''s');\n"
                "COPY src TO stdout;\n"
                "COPY (SELECT a FROM src) TO STDOUT WITH (FORMAT csv);\n"
                f"COPY src TO '{name}' WITH (FORMAT csv);\n"
                "CREATE TABLE dst (LIKE src);\n"
                f"COPY dst FROM '{name}' WITH (FORMAT csv);\n"
            )
        }
    )


def test_1_bad_copy_data_names_the_line_of_the_row(database, run_runner, migrations) -> None:
    bad = migrations.write(
        "001_bad_copy.sql",
        "CREATE TABLE n (id int);\nCOPY n FROM stdin;\n1\n2\nnot a number\n\\.\n",
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert (failure["file"], failure["line"], failure["sqlstate"]) == (str(bad), 5, "22P02")
    assert database.scalar("SELECT to_regclass('n')") is None  # rolled back whole


# --- 2. standard_conforming_strings --------------------------------------------------------------


def test_2_standard_conforming_strings_off_is_followed(apply_both, other_database) -> None:
    apply_both(
        {
            "001_strings.sql": (
                "CREATE TABLE s (id int, v text);\n"
                "SET standard_conforming_strings = off;\n"
                "INSERT INTO s VALUES (1, 'it\\'s; here'), (2, 'back\\\\slash');\n"
                "SET standard_conforming_strings = on;\n"
                "INSERT INTO s VALUES (3, 'C:\\path');\n"
                "DO $$ BEGIN PERFORM set_config('standard_conforming_strings', 'off', false);"
                " END $$;\n"
                "INSERT INTO s VALUES (4, 'x\\'y');\n"
            ),
            "002_next_file.sql": "INSERT INTO s VALUES (5, 'a\\b');\n",
        }
    )
    rows = dict(other_database.query("SELECT id, v FROM s"))
    assert rows == {1: "it's; here", 2: "back\\slash", 3: "C:\\path", 4: "x'y", 5: "a\\b"}


def test_2_a_rolled_back_setting_is_followed(apply_both, other_database) -> None:
    apply_both(
        {
            "001_rollback.sql": (
                "CREATE TABLE r (v text);\n"
                "BEGIN;\nSET standard_conforming_strings = off;\nROLLBACK;\n"
                "INSERT INTO r VALUES ('a\\b');\n"
            )
        }
    )
    assert other_database.scalar("SELECT v FROM r") == "a\\b"


def test_2_set_local_standard_conforming_strings_only_warns_as_in_psql(
    apply_both, other_database
) -> None:
    result = apply_both(
        {
            "001_local.sql": (
                "CREATE TABLE l (v text);\n"
                "SET LOCAL standard_conforming_strings = off;\n"
                "INSERT INTO l VALUES ('a\\\\b');\n"
            )
        }
    )
    assert modes(result) == {"001_local": "no-transaction"}
    assert other_database.scalar("SELECT v FROM l") == "a\\\\b"


# --- 3. each file starts from a new connection's session state ---------------------------------


@pytest.fixture
def spare_role(database, other_database) -> Any:
    """A role (cluster-wide) the files switch to; what it owns goes before it does."""
    role = f"fid_{uuid.uuid4().hex[:8]}"
    execute(database, f"CREATE ROLE {role}")
    yield role
    for db in (database, other_database):
        execute(db, f"DROP OWNED BY {role}")
    execute(database, f"DROP ROLE {role}")


def execute(database: Any, sql: str) -> None:
    with database.connect() as conn:
        conn.execute(sql)


def test_3_session_settings_do_not_leak_into_the_next_file(
    apply_both, other_database, spare_role
) -> None:
    grant = f"GRANT CREATE ON SCHEMA public TO {spare_role};\n"
    result = apply_both(
        {
            "001_settings.sql": (
                "CREATE SCHEMA s1;\nSET search_path = s1;\nCREATE TABLE in_s1 (a int);\n"
                "SET TimeZone = 'Asia/Tokyo';\n"
                "CREATE TEMP TABLE scratch (a int);\n"
            ),
            "002_plain.sql": (
                "CREATE TABLE where_am_i (t timestamptz);\n"
                "INSERT INTO where_am_i VALUES ('2024-01-01 00:00');\n"
                "CREATE TEMP TABLE scratch (a int);\n"
            ),
            "003_set_config.sql": "SELECT set_config('search_path', 's1', false);\n" + grant,
            "004_plain.sql": "CREATE TABLE after_set_config (a int);\n",
            "005_role.sql": f"SET ROLE {spare_role};\nCREATE TABLE owned_by_role (a int);\n",
            "006_plain.sql": "CREATE TABLE after_role (a int);\n",
            "007_authorization.sql": f"SET SESSION AUTHORIZATION {spare_role};\n",
            "008_plain.sql": "CREATE TABLE after_authorization (a int);\n",
        }
    )
    assert result.returncode == 0
    owners = dict(other_database.query("SELECT tablename, tableowner FROM pg_tables"))
    assert owners["after_role"] == owners["after_authorization"] == "postgres"
    assert owners["owned_by_role"] == spare_role
    assert other_database.scalar("SELECT to_regclass('public.after_set_config')") is not None


# --- 4, 5, 6. what the server refuses in a transaction runs again in autocommit -----------------


def test_4_an_enum_value_used_after_it_is_added(apply_both) -> None:
    result = apply_both(
        {
            "001_type.sql": "CREATE TYPE mood AS ENUM ('sad');\n",
            "002_add_value.sql": (
                "ALTER TYPE mood ADD VALUE 'happy';\n"
                "CREATE TABLE m (v mood);\nINSERT INTO m VALUES ('happy');\n"
            ),
        }
    )
    assert mode_changes(result) == {"002_add_value": "55P04"}


PARTITIONED = (
    "CREATE TABLE p (a int) PARTITION BY RANGE (a);\n"
    "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);\n"
    "CREATE INDEX p_a ON p (a);\nINSERT INTO p VALUES (1), (2);\n"
)


def test_5_reindex_and_cluster_on_a_partitioned_table(apply_both) -> None:
    result = apply_both(
        {
            "001_partitioned.sql": PARTITIONED,
            "002_reindex.sql": "CREATE TABLE before_reindex (a int);\nREINDEX TABLE p;\n",
            "003_cluster.sql": "CLUSTER p USING p_a;\n",
        }
    )
    assert mode_changes(result) == {"002_reindex": "25001", "003_cluster": "25001"}
    changed = result.events_named("mode_changed")[0]
    assert changed["line"] == 2 and "transaction block" in changed["reason"]


def test_6_a_do_block_and_a_procedure_that_commit(apply_both, other_database) -> None:
    result = apply_both(
        {
            "001_do_commit.sql": (
                "CREATE TABLE d (a int);\n"
                "DO $$ BEGIN INSERT INTO d VALUES (1); COMMIT; INSERT INTO d VALUES (2); END $$;\n"
            ),
            "002_call_commit.sql": (
                "CREATE PROCEDURE add_three() LANGUAGE plpgsql AS $$\n"
                "BEGIN INSERT INTO d VALUES (3); COMMIT; END $$;\n"
                "CALL add_three();\n"
            ),
        }
    )
    assert mode_changes(result) == {"001_do_commit": "2D000", "002_call_commit": "2D000"}
    assert other_database.scalar("SELECT count(*) FROM d") == 3


# --- 7. PREPARE TRANSACTION, 9. meta-commands: refused before anything runs ----------------------


def refused(run_runner, database, migrations, name: str, sql: str) -> dict[str, Any]:
    path = migrations.write(name, sql)
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    (event,) = result.events_named("invalid_migration_files")
    assert event["file"] == str(path)
    assert database.scalar("SELECT to_regclass('public.schema_migrations')") is None
    return event


def test_7_prepare_transaction_is_refused_up_front(database, run_runner, migrations) -> None:
    event = refused(
        run_runner, database, migrations, "001_prepared.sql",
        "BEGIN;\nCREATE TABLE p7 (a int);\nPREPARE TRANSACTION 'p7';\n",
    )  # fmt: skip
    assert event["line"] == 3
    assert "PREPARE TRANSACTION" in event["error"]
    assert database.scalar("SELECT count(*) FROM pg_prepared_xacts") == 0


@pytest.mark.parametrize(
    ("meta", "command"),
    [("\\connect postgres", "\\connect"), ("\\i other.sql", "\\i"), ("\\set x 1", "\\set")],
)
def test_9_meta_commands_are_refused_and_never_sent(
    database, run_runner, migrations, meta, command
) -> None:
    table = f"before_meta_{uuid.uuid4().hex[:8]}"
    event = refused(
        run_runner, database, migrations, "001_meta.sql",
        f"CREATE TABLE {table} (a int);\n{meta}\nCREATE TABLE after_meta (a int);\n",
    )  # fmt: skip
    assert event["line"] == 2
    assert command in event["error"]
    assert table not in database.server.server_log()


# --- 8. pg_dump's own plain output ---------------------------------------------------------------


def test_8_pg_dump_output_applies(apply_both, pg_server, other_database) -> None:
    source = create_database(pg_server)
    try:
        with source.connect() as conn:
            conn.execute(
                "CREATE SCHEMA app;"
                "CREATE TYPE app.state AS ENUM ('new', 'done');"
                "CREATE TABLE app.items (id serial PRIMARY KEY, name text NOT NULL,"
                " state app.state DEFAULT 'new', data jsonb);"
                "INSERT INTO app.items (name, data) VALUES"
                " ('it''s', '{\"a\": 1}'), (E'tab\\there', NULL), ('back\\slash; x', '[]');"
                "CREATE VIEW app.names AS SELECT name FROM app.items;"
                "CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;"
            )
        dump = target(source).dump_file()
    finally:
        drop_database(source)
    apply_both({"001_restore.sql": dump})
    assert other_database.scalar("SELECT count(*) FROM app.items") == 3


# --- the transaction-mode fixes ------------------------------------------------------------------


def test_savepoints_subscriptions_without_slot_and_reindex_not_concurrently_stay_in_a_transaction(
    database, other_database, apply_both, run_runner, migrations
) -> None:
    subscription = (
        "CREATE SUBSCRIPTION fid_sub CONNECTION 'host=127.0.0.1 port=1 dbname=none' "
        "PUBLICATION p WITH (connect = false, slot_name = NONE);\n"
    )
    try:
        result = apply_both(
            {
                "001_sub.sql": subscription,
                "002_reindex.sql": "CREATE TABLE r (a int);\nREINDEX (CONCURRENTLY false) TABLE r;\n",
            }
        )
        assert modes(result) == {"001_sub": "transaction", "002_reindex": "transaction"}
    finally:
        for db in (database, other_database):
            execute(db, "DROP SUBSCRIPTION IF EXISTS fid_sub")
    # psql refuses SAVEPOINT outside a transaction block; the runner's transaction holds it.
    migrations.write(
        "003_savepoint.sql",
        "CREATE TABLE sp (a int);\nSAVEPOINT s;\nINSERT INTO sp VALUES (1);\n"
        "ROLLBACK TO SAVEPOINT s;\nINSERT INTO sp VALUES (2);\n",
    )
    result = run_runner(env=other_database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result
    assert modes(result) == {"003_savepoint": "transaction"}
    assert other_database.query("SELECT a FROM sp") == [(2,)]


def test_an_error_in_a_file_sent_in_parts_names_its_line_and_column(
    database, run_runner, migrations
) -> None:
    bad = migrations.write(
        "001_parts.sql",
        "CREATE TABLE parts (v text);\n"
        "SET standard_conforming_strings = off;\n"
        "INSERT INTO parts VALUES ('a\\'b');\n"
        "COPY parts FROM stdin;\nrow\n\\.\n"
        "INSERT INTO parts VALUES ('c');\n"
        "SELECT * FROM  missing_table;\n",
    )
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 65, result
    failure = result.events_named("migration_failed")[0]
    assert (failure["file"], failure["line"], failure["column"]) == (str(bad), 8, 16)
    assert failure["sqlstate"] == "42P01"
    assert database.scalar("SELECT to_regclass('parts')") is None
