"""Unit tests for migrator.files.formats: one reader per tool, each giving the same Migration objects."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest

from migrator.errors import EX_DATAERR, MigrationFilesError
from migrator.files.folder import find_migrations
from migrator.files.formats import flyway_checksum, flyway_order, read_source
from migrator.files.migration import Migration
from migrator.files.sql import TransactionMode

REPO = Path(__file__).resolve().parents[3]


def folder_of(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name, content in files.items():
        target = folder / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def read(tmp_path: Path, files: dict[str, str | bytes]) -> dict[str, Migration]:
    found = find_migrations(folder_of(tmp_path, files))
    return {m.version: m for m in found.all}


def refused(tmp_path: Path, files: dict[str, str | bytes]) -> str:
    with pytest.raises(MigrationFilesError) as caught:
        find_migrations(folder_of(tmp_path, files))
    assert caught.value.exit_code == EX_DATAERR
    assert "\n" not in caught.value.message
    return caught.value.message


def texts(migration: Migration) -> list[str]:
    return [statement.text for statement in migration.statements]


def test_shipped_folder_keeps_its_checksums_byte_for_byte() -> None:
    found = find_migrations(REPO / "migrations")
    assert [m.version for m in found.all][:2] == [
        "000_init_database",
        "001_initial_production_schema",
    ]
    for migration in found.all:
        content = migration.path.read_bytes()
        assert migration.checksum == hashlib.sha256(content).hexdigest()
        assert migration.sql == content.decode("utf-8-sig")
        assert migration.down is None
    assert found.format == "runner"


# --- the runner's format and dbmate's ---------------------------------------------------------


def test_down_section_is_cut_from_what_runs_and_the_checksum(tmp_path: Path) -> None:
    up = "\ufeffCREATE TABLE a (id int);\n"
    text = up + "-- migrate:down\nDROP TABLE a;\n"
    migration = read(tmp_path, {"001_a.sql": text.encode()})["001_a"]
    assert migration.sql == up.removeprefix("\ufeff")
    assert migration.checksum == hashlib.sha256(up.encode()).hexdigest()
    assert migration.down is not None
    assert texts(migration.down) == ["DROP TABLE a"]
    assert migration.down.statements[0].line == 3  # the file's own line number
    assert migration.down.path.name == "001_a.sql"


def test_down_companion_file(tmp_path: Path) -> None:
    found = read(
        tmp_path, {"001_a.sql": "CREATE TABLE a (id int);", "001_a.down.sql": "DROP TABLE a;"}
    )
    assert list(found) == ["001_a"]
    down = found["001_a"].down
    assert down is not None and down.path.name == "001_a.down.sql"
    assert texts(down) == ["DROP TABLE a"]


def test_dbmate_transaction_false_on_each_marker(tmp_path: Path) -> None:
    migration = read(tmp_path, {
        "20240101_idx.sql": "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (a);\n"
                            "-- migrate:down\nDROP INDEX i;\n",
    })["20240101_idx"]  # fmt: skip
    assert migration.mode_decision.mode is TransactionMode.NO_TRANSACTION
    assert "transaction:false" in migration.mode_decision.reason
    assert migration.down is not None
    assert migration.down.mode_decision.mode is TransactionMode.TRANSACTION
    assert migration.key == "20240101"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CREATE TABLE a (id int);\n-- migrate:up\nSELECT 1;", "statements before -- migrate:up"),
        ("-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;", "line 3: a second -- migrate:up"),
        ("-- migrate:down\nSELECT 1;\n-- migrate:up\nSELECT 2;", "-- migrate:down before"),
        ("-- migrate:up\nA;\n-- migrate:down\nB;\n-- migrate:down\nC;", "a second -- migrate:down"),
        ("-- migrate:up foo:bar\nSELECT 1;", "unknown option 'foo:bar'"),
        ("SELECT 1;\n-- migrate:dwon\nSELECT 2;", "line 2: unknown marker '-- migrate:dwon'"),
    ],
)
def test_dbmate_markers_not_understood(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in refused(tmp_path, {"001_a.sql": text})


# --- golang-migrate ---------------------------------------------------------------------------


def test_golang_migrate_pairs_and_order(tmp_path: Path) -> None:
    found = read(tmp_path, {
        "10_c.up.sql": "SELECT 10;", "2_b.up.sql": "SELECT 2;", "2_b.down.sql": "SELECT -2;",
    })  # fmt: skip
    assert list(found) == ["2_b", "10_c"]
    assert found["2_b"].down is not None and found["10_c"].down is None
    assert found["10_c"].key == "10"
    assert found["10_c"].description == "c"


def test_golang_migrate_down_without_up(tmp_path: Path) -> None:
    message = refused(tmp_path, {"1_a.up.sql": "SELECT 1;", "2_b.down.sql": "SELECT 2;"})
    assert "2_b.down.sql is a down part without its up file" in message


# --- goose ------------------------------------------------------------------------------------


GOOSE = """\
-- +goose Up
-- a comment goose skips
CREATE TABLE post (id int); -- trailing comment
INSERT INTO post VALUES (1),
  (2);
-- +goose StatementBegin
CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;
SELECT f();
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION f();
DROP TABLE post;
"""


def test_goose_statements_as_goose_groups_them(tmp_path: Path) -> None:
    migration = read(tmp_path, {"00001_post.sql": GOOSE})["00001_post"]
    assert texts(migration) == [
        "CREATE TABLE post (id int); -- trailing comment",
        "INSERT INTO post VALUES (1),\n  (2)",
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nSELECT f()",
    ]
    assert [s.line for s in migration.statements] == [3, 4, 7]
    assert "DROP" not in migration.sql
    # Lines keep their numbers: annotations and the down part are left as empty lines.
    assert migration.sql.splitlines()[2] == GOOSE.splitlines()[2]
    assert migration.sql.count("\n") == GOOSE.count("\n")
    assert migration.mode_decision.mode is TransactionMode.TRANSACTION
    assert migration.down is not None
    assert texts(migration.down) == ["DROP FUNCTION f()", "DROP TABLE post"]
    assert [s.line for s in migration.down.statements] == [12, 13]
    assert migration.key == "1"


def test_goose_blank_lines_between_statements_and_sections(tmp_path: Path) -> None:
    text = "-- +goose Up\nSELECT 1;\n   \n\t\n-- +goose Down\n  \nSELECT 2;\n"
    migration = read(tmp_path, {"00001_a.sql": text})["00001_a"]
    assert texts(migration) == ["SELECT 1"]
    assert migration.down is not None
    assert [(s.text, s.line) for s in migration.down.statements] == [("SELECT 2", 7)]


def test_goose_no_transaction(tmp_path: Path) -> None:
    text = "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON t (a);\n"
    migration = read(tmp_path, {"00002_i.sql": text})["00002_i"]
    assert migration.mode_decision.mode is TransactionMode.NO_TRANSACTION
    assert migration.mode_decision.reason == "goose: -- +goose NO TRANSACTION"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-- +goose Up\n-- +goose ENVSUB ON\nSELECT 1;", "line 2: '-- +goose ENVSUB ON' is not"),
        ("-- +goose Up\nSELECT 1;\n-- +goose Up\n", "a second Up"),
        ("-- +goose Up\n -- +goose Down\n", "is not understood"),  # goose: leading whitespace
        ("-- +goose Down\nSELECT 1;", "Down must follow Up"),
        ("-- +goose Up\nSELECT 1\n", "line 2: the statement starting here does not end"),
        ("-- +goose Up\n-- +goose StatementEnd\n", "StatementEnd without StatementBegin"),
        ("-- +goose Up\n-- +goose Sideways\n", "'-- +goose Sideways' is not understood"),
        ("-- +goose Up +goose\nSELECT 1;", "line 1: '-- +goose Up +goose' is not understood"),
    ],
)
def test_goose_annotations_not_understood(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in refused(tmp_path, {"00001_a.sql": text})


def test_goose_file_without_annotation_in_a_goose_folder_is_a_mixed_folder(
    tmp_path: Path,
) -> None:
    message = refused(
        tmp_path, {"00001_a.sql": "-- +goose Up\nSELECT 1;", "00002_b.sql": "SELECT 2;"}
    )
    assert "00001_a.sql (goose" in message and "00002_b.sql (runner" in message


# --- Flyway -----------------------------------------------------------------------------------


def test_flyway_versions_ordered_as_flyway_orders_them() -> None:
    assert flyway_order("1.10") > flyway_order("1.9") > flyway_order("1_2") > flyway_order("1")
    assert flyway_order("1.2.0") == flyway_order("1.2")
    assert flyway_order("2") > flyway_order("1.999")


def test_flyway_folder(tmp_path: Path) -> None:
    found = find_migrations(folder_of(tmp_path, {
        "V1.10__c.sql": "SELECT 3;", "V1.9__b.sql": "SELECT 2;", "V1__a_b.sql": "SELECT 1;",
        "U1.9__b.sql": "SELECT -2;", "R__view.sql": "SELECT 0;",
    }))  # fmt: skip
    assert found.bootstrap is None and found.format == "flyway"
    assert [m.version for m in found.versioned] == ["V1__a_b", "V1.9__b", "V1.10__c"]
    assert [m.version for m in found.repeatable] == ["R__view"]
    assert found.versioned[0].description == "a b"
    assert found.versioned[1].down is not None and found.versioned[1].key == "1.9"
    assert found.repeatable[0].repeatable and found.repeatable[0].key == "view"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"V1__a.sql": "SELECT 1;", "V1.0__b.sql": "SELECT 2;"}, "the same version"),
        ({"V1__a.sql": "SELECT 1;", "U2__b.sql": "SELECT 2;"}, "undoes version 2, which has no V"),
        ({"V1__a.sql": "INSERT INTO t VALUES ('${user}');"}, "placeholder ${user}"),
    ],
)
def test_flyway_files_refused(tmp_path: Path, files: dict[str, str | bytes], expected: str) -> None:
    assert expected in refused(tmp_path, files)


def test_flyway_script_configuration(tmp_path: Path) -> None:
    found = read(tmp_path, {
        "V1__index.sql": "CREATE INDEX CONCURRENTLY i ON t (a);",
        "V1__index.sql.conf": "# Flyway script config\nexecuteInTransaction=false\n",
        "V2__b.sql": "SELECT 1;",
    })  # fmt: skip
    assert found["V1__index"].mode_decision.reason == (
        "Flyway: executeInTransaction=false in V1__index.sql.conf"
    )
    assert found["V2__b"].forced_reason is None


def test_flyway_script_configuration_not_understood(tmp_path: Path) -> None:
    message = refused(tmp_path, {
        "V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "executeInTransaction=false\nencoding=latin1\n",
    })  # fmt: skip
    assert "V1__a.sql.conf: line 2: 'encoding=latin1' is not understood" in message


def test_flyway_checksum_is_crc32_of_lines_without_line_endings(tmp_path: Path) -> None:
    def checksum(content: bytes) -> int:
        path = tmp_path / "V1__a.sql"
        path.write_bytes(content)
        return flyway_checksum(read_source(path))

    lines_only = zlib.crc32(b"CREATE TABLE a (id int);SELECT 1;")
    expected = lines_only - (1 << 32) if lines_only >= 1 << 31 else lines_only
    assert checksum(b"CREATE TABLE a (id int);\nSELECT 1;\n") == expected
    assert checksum(b"CREATE TABLE a (id int);\r\nSELECT 1;") == expected
    assert checksum(b"\xef\xbb\xbfCREATE TABLE a (id int);\rSELECT 1;\r\n") == expected
    assert -(1 << 31) <= checksum(b"x" * 1000) < (1 << 31)
    # Flyway drops one byte order mark: a second one is part of the first line.
    twice = zlib.crc32("\ufeffSELECT 1;".encode()) - (1 << 32)
    assert checksum(b"\xef\xbb\xbf\xef\xbb\xbfSELECT 1;\n") == twice
    # The line below has CRC32 2**31 exactly: the smallest value that reads as negative.
    assert zlib.crc32(b"SELECT 45; -- F/%x") == 1 << 31
    assert checksum(b"SELECT 45; -- F/%x\n") == -(1 << 31)


def test_only_a_down_sql_file_is_taken_for_a_down_part(tmp_path: Path) -> None:
    """1_a.sql beside 1_a.sql.sql is a migration, not a down part: both read, same number."""
    folder = tmp_path / "migrations"
    assert refused(tmp_path, {"1_a.sql": "SELECT 1;", "1_a.sql.sql": "SELECT 2;"}) == (
        f"{folder / '1_a.sql'} and {folder / '1_a.sql.sql'} have the same version number 1"
    )


def test_mixed_folder_names_two_files(tmp_path: Path) -> None:
    message = refused(tmp_path, {"001_a.sql": "SELECT 1;", "V2__b.sql": "SELECT 2;"})
    assert "001_a.sql (runner" in message and "V2__b.sql (flyway" in message


# --- cases mutation testing found unasserted (scripts/mutation.sh) ------------------------------


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def refused_error(tmp_path: Path, files: dict[str, str | bytes]) -> MigrationFilesError:
    with pytest.raises(MigrationFilesError) as caught:
        find_migrations(folder_of(tmp_path, files))
    return caught.value


def test_golang_migrate_migration_and_its_down_part(tmp_path: Path) -> None:
    found = read(tmp_path, {
        "0002_add_users.up.sql": "CREATE TABLE users (id int);",
        "0002_add_users.down.sql": "DROP TABLE users;",
        "3_v1.5.up.sql": "SELECT 3;",
    })  # fmt: skip
    folder = tmp_path / "migrations"
    up = found["0002_add_users"]
    assert (up.path, up.number, up.sql, up.checksum) == (
        folder / "0002_add_users.up.sql",
        2,
        "CREATE TABLE users (id int);",
        sha("CREATE TABLE users (id int);"),
    )
    assert (up.order, up.title, up.key, up.forced_reason) == ((2,), "add users", "2", None)
    assert up.down is not None
    assert (up.down.path, up.down.version, up.down.sql, up.down.checksum) == (
        folder / "0002_add_users.down.sql",
        "0002_add_users.down",
        "DROP TABLE users;",
        sha("DROP TABLE users;"),
    )
    # A title may hold dots: only ".up.sql" is cut off.
    assert (found["3_v1.5"].title, found["3_v1.5"].key) == ("v1.5", "3")


def test_golang_migrate_orphan_down_message_names_the_up_file(tmp_path: Path) -> None:
    error = refused_error(tmp_path, {"1_a.up.sql": "SELECT 1;", "2_b.down.sql": "SELECT 2;"})
    folder = tmp_path / "migrations"
    assert error.message == (
        f"{folder / '2_b.down.sql'} is a down part without its up file {folder / '2_b.up.sql'}"
    )
    assert error.fields == {"file": str(folder / "2_b.down.sql")}


def test_a_runner_down_companion_is_not_a_golang_migrate_file(tmp_path: Path) -> None:
    # 1_a.down.sql beside 1_a.sql is the runner's companion, not golang-migrate's down part.
    found = find_migrations(
        folder_of(tmp_path, {"1_a.sql": "SELECT 1;", "1_a.down.sql": "SELECT -1;"})
    )
    assert found.format == "runner"
    assert [m.version for m in found.all] == ["1_a"]


def test_goose_migration_fields(tmp_path: Path) -> None:
    text = "-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 2;\n"
    migration = read(tmp_path, {"00007_add_users.sql": text})["00007_add_users"]
    sql = "\nSELECT 1;\n\n\n"
    assert (migration.number, migration.order, migration.title, migration.key) == (
        7,
        (7,),
        "add users",
        "7",
    )
    assert (migration.path.name, migration.sql, migration.checksum) == (
        "00007_add_users.sql",
        sql,
        sha(sql),
    )
    assert migration.down is not None
    assert (migration.down.path.name, migration.down.sql) == (
        "00007_add_users.sql",
        "\n\n\nSELECT 2;\n",
    )
    # Offsets are places in the text that runs (what the server's error positions count in).
    assert [(s.text, s.offset, s.line) for s in migration.statements] == [("SELECT 1", 1, 2)]
    assert [(s.text, s.offset, s.line) for s in migration.down.statements] == [("SELECT 2", 3, 4)]


def test_goose_statements_are_where_the_text_that_runs_holds_them(tmp_path: Path) -> None:
    """Blanked annotation lines lose their spaces: offsets taken from the file drifted past
    the end of the text that runs (an error inside a block was put on a line after the file)."""
    text = (
        "-- +goose NO TRANSACTION   \n-- +goose Up   \n-- +goose StatementBegin  \n"
        "  CREATE TABLE a (id int);  \r\nALTER TABLE nope ADD x int;\n-- +goose StatementEnd\n"
        "   SELECT 1;  \n-- +goose Down\nSELECT 2;\n"
    )
    migration = read(tmp_path, {"00001_a.sql": text})["00001_a"]
    for statement in migration.statements:
        assert migration.sql[statement.offset :].startswith(statement.text)
        assert migration.sql.count("\n", 0, statement.offset) + 1 == statement.line
    assert [(s.text, s.line) for s in migration.statements] == [
        ("CREATE TABLE a (id int);\nALTER TABLE nope ADD x int", 4),
        ("SELECT 1", 7),
    ]
    assert migration.sql.splitlines()[3] == "  CREATE TABLE a (id int);"


def test_goose_no_transaction_applies_to_the_down_part_too(tmp_path: Path) -> None:
    text = "-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 2;\n"
    migration = read(tmp_path, {"00001_a.sql": text})["00001_a"]
    assert migration.down is not None
    assert migration.down.mode_decision.reason == "goose: -- +goose NO TRANSACTION"


def test_goose_blank_lines_before_up_and_lower_case_annotations(tmp_path: Path) -> None:
    text = (
        "\n\n-- +goose up\n--+goose statementbegin\nSELECT 1; SELECT 2;\n-- +goose statementend\n"
    )
    migration = read(tmp_path, {"00001_a.sql": text})["00001_a"]
    assert [(s.text, s.line) for s in migration.statements] == [("SELECT 1; SELECT 2", 5)]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("SELECT 1;\n-- +goose Up\n", 1, "no -- +goose Up annotation (goose refuses the file too)"),
        (
            "-- +goose NO TRANSACTION\n-- no Up\n",
            1,
            "no -- +goose Up annotation (goose refuses the file too)",
        ),
        (
            "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n",
            2,
            "-- +goose StatementBegin without StatementEnd (goose refuses it)",
        ),
        (
            "-- +goose Up\nSELECT 1;\n\nSELECT 2\n",
            4,
            "the statement starting here does not end with a semicolon (goose refuses it)",
        ),
        (
            "-- +goose Up\nSELECT 1;\n-- +goose Up\n",
            3,
            "'-- +goose Up' is out of place (a second Up)",
        ),
        (
            "-- +goose Up\n-- +goose StatementBegin\n-- +goose Down\n",
            3,
            "'-- +goose Down' is out of place (Down must follow Up, outside a StatementBegin block)",
        ),
        (
            "-- +goose Up\nSELECT 1\n-- +goose Down\n",
            3,
            "'-- +goose Down' is out of place "
            "(the statement before it does not end with a semicolon)",
        ),
        (
            "-- +goose StatementBegin\n",
            1,
            "'-- +goose StatementBegin' is out of place "
            "(StatementBegin must follow Up or Down, outside another block)",
        ),
        (
            "-- +goose Up\n-- +goose StatementBegin\n-- +goose StatementBegin\n",
            3,
            "'-- +goose StatementBegin' is out of place "
            "(StatementBegin must follow Up or Down, outside another block)",
        ),
        (
            "-- +goose Up\n-- +goose StatementEnd\n",
            2,
            "'-- +goose StatementEnd' is out of place (StatementEnd without StatementBegin)",
        ),
        (
            "-- +goose Up\n\t-- +goose Down\n",
            2,
            "'-- +goose Down' is not understood "
            "(known: Up, Down, StatementBegin, StatementEnd, NO TRANSACTION)",
        ),
    ],
)
def test_goose_refusals_name_the_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    error = refused_error(tmp_path, {"00001_a.sql": text})
    path = tmp_path / "migrations" / "00001_a.sql"
    assert error.message == f"{path}: line {line}: {problem}"
    assert error.fields == {"file": str(path), "line": line}


def test_goose_statement_ends_at_a_semicolon_before_a_comment(tmp_path: Path) -> None:
    text = "-- +goose Up\nSELECT 1; -- one;\nSELECT 2 -- two;\n;\nSELECT 3; -- MAX\n"
    migration = read(tmp_path, {"00001_a.sql": text})["00001_a"]
    assert [s.text for s in migration.statements] == [
        "SELECT 1; -- one",
        "SELECT 2 -- two;",
        "SELECT 3; -- MAX",
    ]


def test_a_down_section_after_a_blank_first_line_keeps_the_file_lines(tmp_path: Path) -> None:
    text = "\nCREATE TABLE a (id int);\n-- migrate:down\nDROP TABLE a;\n"
    migration = read(tmp_path, {"001_a.sql": text})["001_a"]
    assert migration.down is not None
    assert [(s.text, s.line) for s in migration.down.statements] == [("DROP TABLE a", 4)]
    assert migration.down.sql == "\n\n-- migrate:down\nDROP TABLE a;\n"
    assert migration.down.version == "001_a.down"
    assert migration.down.checksum == sha(migration.down.sql)


def test_down_section_and_companion_together_are_refused(tmp_path: Path) -> None:
    error = refused_error(tmp_path, {
        "001_a.sql": "SELECT 1;\n-- migrate:down\nSELECT 2;\n", "001_a.down.sql": "SELECT 3;",
    })  # fmt: skip
    folder = tmp_path / "migrations"
    assert error.message == (
        f"{folder / '001_a.sql'} has a -- migrate:down section and a companion "
        f"{folder / '001_a.down.sql'}: keep one"
    )
    assert error.fields == {"file": str(folder / "001_a.sql")}


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "CREATE TABLE a (id int);\n-- migrate:up\nSELECT 1;",
            1,
            "statements before -- migrate:up (dbmate refuses them too)",
        ),
        (
            "-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;",
            3,
            "a second -- migrate:up marker: one up and one down section per file",
        ),
        (
            "-- migrate:up\nA;\n-- migrate:down\nB;\n-- migrate:down\nC;",
            5,
            "a second -- migrate:down marker: one up and one down section per file",
        ),
        (
            "-- migrate:down\nSELECT 1;\n-- migrate:up\nSELECT 2;",
            1,
            "-- migrate:down before -- migrate:up",
        ),
        (
            "-- migrate:up\nSELECT 1;\n-- migrate:down transaction:maybe",
            3,
            "unknown option 'transaction:maybe' on -- migrate:down "
            "(known: transaction:false, transaction:true)",
        ),
        (
            "SELECT 1;\n  -- migrate:dwon\nSELECT 2;",
            2,
            "unknown marker '-- migrate:dwon' (known: -- migrate:up, -- migrate:down, "
            "-- migrate:no-transaction, -- migrate:allow, -- migrate:replaces-checksum, -- migrate:phase, "
            "-- migrate:batch)",
        ),
    ],
)
def test_dbmate_refusals_name_the_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    error = refused_error(tmp_path, {"001_a.sql": text})
    path = tmp_path / "migrations" / "001_a.sql"
    assert error.message == f"{path}: line {line}: {problem}"
    assert error.fields == {"file": str(path), "line": line}


def test_comments_before_migrate_up_are_allowed(tmp_path: Path) -> None:
    text = "-- a note\n\n-- migrate:up\nSELECT 1;\n"
    assert texts(read(tmp_path, {"001_a.sql": text})["001_a"]) == ["SELECT 1"]


def test_dbmate_transaction_options_on_the_down_marker(tmp_path: Path) -> None:
    found = read(tmp_path, {
        "001_a.sql": "-- migrate:up transaction:true\nSELECT 1;\n-- migrate:down transaction:FALSE",
    })  # fmt: skip
    migration = found["001_a"]
    assert migration.forced_reason is None
    assert migration.down is not None
    assert migration.down.forced_reason == "dbmate: transaction:false on -- migrate:down"


def test_a_folder_with_a_dbmate_file_is_reported_as_dbmate(tmp_path: Path) -> None:
    found = find_migrations(folder_of(tmp_path, {
        "001_a.sql": "SELECT 1;", "002_b.sql": "-- migrate:up\nSELECT 2;\n",
    }))  # fmt: skip
    assert found.format == "dbmate"


def test_mixed_folder_message(tmp_path: Path) -> None:
    error = refused_error(tmp_path, {"001_a.sql": "SELECT 1;", "V2__b.sql": "SELECT 2;"})
    folder = tmp_path / "migrations"
    assert error.message == (
        f"{folder / '001_a.sql'} (runner: <number>_<name>.sql) and {folder / 'V2__b.sql'} "
        "(flyway: V<version>__<description>.sql) are of different formats: a folder holds the "
        "files of one tool"
    )
    assert error.fields == {"file": str(folder / "V2__b.sql")}


def test_a_name_no_format_knows_is_refused(tmp_path: Path) -> None:
    error = refused_error(tmp_path, {"001_a.sql": "SELECT 1;", "notes.sql": "SELECT 2;"})
    path = tmp_path / "migrations" / "notes.sql"
    assert error.message == (
        f"{path}: file name does not match <number>_<name>.sql (e.g. 002_add_feature.sql)"
    )
    assert error.fields == {"file": str(path)}


def test_flyway_migration_fields(tmp_path: Path) -> None:
    found = read(tmp_path, {
        "V2_1__add_users.sql": "SELECT 8;", "U2_1__add_users.sql": "SELECT 1;", "R__all_views.sql": "SELECT 0;",
    })  # fmt: skip
    folder = tmp_path / "migrations"
    versioned, repeatable = found["V2_1__add_users"], found["R__all_views"]
    assert (versioned.path, versioned.number, versioned.order, versioned.title) == (
        folder / "V2_1__add_users.sql",
        2,
        (2, 1),
        "add users",
    )
    assert (versioned.key, versioned.sql, versioned.checksum, versioned.repeatable) == (
        "2.1",
        "SELECT 8;",
        sha("SELECT 8;"),
        False,
    )
    assert versioned.down is not None
    assert (versioned.down.path, versioned.down.sql) == (
        folder / "U2_1__add_users.sql",
        "SELECT 1;",
    )
    assert (repeatable.number, repeatable.order, repeatable.key, repeatable.title) == (
        0,
        (),
        "all views",
        "all views",
    )
    assert repeatable.repeatable is True


@pytest.mark.parametrize("name", ["R1__x.sql", "V__x.sql", "U__x.sql"])
def test_flyway_names_with_a_version_where_none_belongs_are_refused(
    tmp_path: Path, name: str
) -> None:
    error = refused_error(tmp_path, {"V1__a.sql": "SELECT 1;", name: "SELECT 2;"})
    path = tmp_path / "migrations" / name
    assert error.message == (
        f"{path}: file name does not match <number>_<name>.sql (e.g. 002_add_feature.sql)"
    )
    assert error.fields == {"file": str(path)}


def test_flyway_version_zero_keeps_one_part() -> None:
    assert flyway_order("0") == flyway_order("0.0") == flyway_order("0_0_0") == (0,)
    assert flyway_order("1.0.2") == (1, 0, 2)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"V1__a.sql": "SELECT 1;", "V1.0__b.sql": "SELECT 2;"},
            "{f}/V1.0__b.sql and {f}/V1__a.sql have the same version 1",
        ),
        (
            {"V1__a.sql": "SELECT 1;", "U1__a.sql": "SELECT 2;", "U1.0__b.sql": "SELECT 3;"},
            "{f}/U1.0__b.sql and {f}/U1__a.sql have the same version 1",
        ),
        (
            {"V1__a.sql": "SELECT 1;", "U2.0.1__b.sql": "SELECT 2;"},
            "{f}/U2.0.1__b.sql undoes version 2.0.1, which has no V file",
        ),
        (
            {"V1__a.sql": "SELECT 1;\nINSERT INTO t VALUES ('${user}');"},
            "{f}/V1__a.sql: line 2: Flyway placeholder ${{user}} is not replaced by this runner: "
            "write the value",
        ),
    ],
)
def test_flyway_refusals(tmp_path: Path, files: dict[str, str | bytes], message: str) -> None:
    error = refused_error(tmp_path, files)
    assert error.message == message.format(f=tmp_path / "migrations")


def test_flyway_script_configuration_of_an_undo_file(tmp_path: Path) -> None:
    found = read(tmp_path, {
        "V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "\n# comment\n executeInTransaction = TRUE \n",
        "U1__a.sql": "SELECT 2;", "U1__a.sql.conf": "executeInTransaction=false",
    })  # fmt: skip
    migration = found["V1__a"]
    assert migration.forced_reason is None
    assert migration.down is not None
    assert migration.down.forced_reason == "Flyway: executeInTransaction=false in U1__a.sql.conf"


def test_flyway_script_configuration_reads_false_in_any_case(tmp_path: Path) -> None:
    found = read(
        tmp_path, {"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "executeInTransaction=FALSE"}
    )
    assert found["V1__a"].mode_decision.mode is TransactionMode.NO_TRANSACTION
    assert found["V1__a"].forced_reason == "Flyway: executeInTransaction=false in V1__a.sql.conf"


def test_flyway_script_configuration_refusal_names_file_and_line(tmp_path: Path) -> None:
    error = refused_error(tmp_path, {
        "V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "# x\nexecuteInTransaction=no\n",
    })  # fmt: skip
    conf = tmp_path / "migrations" / "V1__a.sql.conf"
    assert error.message == (
        f"{conf}: line 2: 'executeInTransaction=no' is not understood "
        "(known: executeInTransaction=true|false)"
    )
    assert error.fields == {"file": str(conf), "line": 2}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"SELECT 1;", 78787420),
        (b"SELECT 8;", -714045419),  # CRC32 3580921877 >= 2**31: Java's int is negative
        (b"SELECT 8;\n", -714045419),
    ],
)
def test_flyway_checksum_values(tmp_path: Path, content: bytes, expected: int) -> None:
    path = tmp_path / "V1__a.sql"
    path.write_bytes(content)
    assert flyway_checksum(read_source(path)) == expected


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(MigrationFilesError) as caught:
        read_source(tmp_path)  # a folder
    assert caught.value.message == f"{tmp_path}: cannot be read (Is a directory)"
    assert caught.value.fields == {"file": str(tmp_path)}


def test_goose_up_sql_blanks_every_other_character_and_keeps_indentation(tmp_path: Path) -> None:
    text = "-- +goose Up\n  SELECT 'X';\n-- +goose Down\nDROP TABLE XX;\n"
    migration = read(tmp_path, {"00001_a.sql": text})["00001_a"]
    assert migration.sql == "\n  SELECT 'X';\n\n\n"
    assert migration.down is not None
    assert migration.down.sql == "\n\n\nDROP TABLE XX;\n"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "\n-- +goose NO TRANSACTION\n",
            1,
            "no -- +goose Up annotation (goose refuses the file too)",
        ),
    ],
)
def test_goose_refusal_of_a_file_starting_with_a_blank_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    error = refused_error(tmp_path, {"00001_a.sql": text})
    assert error.fields["line"] == line
    assert error.message.endswith(f": line {line}: {problem}")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("\nCREATE TABLE a (id int);\n-- migrate:up\nSELECT 1;", 1),
        ("-- migrate:up transaction:maybe\nSELECT 1;\n-- migrate:down\nSELECT 2;\n", 1),
    ],
)
def test_dbmate_refusals_on_the_first_line(tmp_path: Path, text: str, line: int) -> None:
    assert refused_error(tmp_path, {"001_a.sql": text}).fields["line"] == line


def test_a_placeholder_refusal_names_its_own_line(tmp_path: Path) -> None:
    error = refused_error(tmp_path, {"V1__a.sql": "SELECT 1;\nSELECT '${x}';\nSELECT 3;\n"})
    assert error.fields["line"] == 2


def test_indented_comments_before_migrate_up_are_allowed(tmp_path: Path) -> None:
    text = "  -- an indented note\n-- migrate:up\nSELECT 1;\n"
    assert texts(read(tmp_path, {"001_a.sql": text})["001_a"]) == ["SELECT 1"]


def test_a_script_configuration_of_comments_only_changes_nothing(tmp_path: Path) -> None:
    found = read(tmp_path, {"V1__a.sql": "SELECT 1;", "V1__a.sql.conf": "# nothing yet\n"})
    assert found["V1__a"].forced_reason is None
    assert found["V1__a"].mode_decision.mode is TransactionMode.TRANSACTION


@pytest.mark.parametrize(
    "text", ["SELECT '+goose';", "CREATE TABLE migrate_log (id int);", "SELECT 'migrate:up';"]
)
def test_the_words_goose_and_migrate_alone_do_not_make_a_file_anothers(
    tmp_path: Path, text: str
) -> None:
    found = find_migrations(folder_of(tmp_path, {"001_a.sql": text}))
    assert found.format == "runner"
    assert [s.text for s in found.versioned[0].statements] == [text.removesuffix(";")]


def test_a_folder_of_three_formats_names_the_first_two(tmp_path: Path) -> None:
    error = refused_error(tmp_path, {
        "001_a.sql": "SELECT 1;", "V2__b.sql": "SELECT 2;", "3_c.up.sql": "SELECT 3;",
    })  # fmt: skip
    folder = tmp_path / "migrations"
    assert error.message.startswith(f"{folder / '001_a.sql'} (runner: ")
    assert f"and {folder / '3_c.up.sql'} (golang-migrate: " in error.message


@pytest.mark.parametrize(
    ("files", "file"),
    [
        ({"V1__a.sql": "SELECT 1;", "V1.0__b.sql": "SELECT 2;"}, "V1__a.sql"),
        ({"V1__a.sql": "SELECT 1;", "U2__b.sql": "SELECT 2;"}, "U2__b.sql"),
    ],
)
def test_flyway_refusals_name_the_file(
    tmp_path: Path, files: dict[str, str | bytes], file: str
) -> None:
    assert refused_error(tmp_path, files).fields == {"file": str(tmp_path / "migrations" / file)}


def test_the_checksum_of_a_file_with_a_down_section_is_of_its_up_part(tmp_path: Path) -> None:
    up = "CREATE TABLE a (id int);\n"
    migration = read(tmp_path, {"001_a.sql": up + "-- migrate:down\nDROP TABLE a;\n"})["001_a"]
    assert migration.checksum == sha(up)


# --- phases (-- migrate:phase) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "-- migrate:phase post\n",
        "-- Description: drop the old column\n\n-- migrate:phase post\n",
        "  --  MIGRATE : phase   POST  \n",
        "-- migrate:phase post\n-- migrate:up\n",  # with dbmate's markers
    ],
)
def test_a_post_header_in_the_runner_s_format(tmp_path: Path, header: str) -> None:
    found = read(tmp_path, {"001_a.sql": "SELECT 1;", "002_b.sql": header + "SELECT 2;"})
    assert (found["001_a"].phase, found["002_b"].phase) == ("pre", "post")


def test_a_pre_header_is_the_default_said_out_loud(tmp_path: Path) -> None:
    found = read(tmp_path, {"001_a.sql": "-- migrate:phase pre\nSELECT 1;"})
    assert found["001_a"].phase == "pre"


def test_the_down_part_keeps_its_file_s_phase(tmp_path: Path) -> None:
    text = "-- migrate:phase post\n-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n"
    found = read(tmp_path, {"001_a.sql": text})
    assert found["001_a"].down is not None and found["001_a"].down.phase == "post"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("-- migrate:phase later\nSELECT 1;",
         1, "-- migrate:phase must be followed by pre or post, got 'later'"),
        ("-- x\n-- migrate:phase\nSELECT 1;",
         2, "-- migrate:phase must be followed by pre or post, got ''"),
        ("-- migrate:phase post now\nSELECT 1;",
         1, "-- migrate:phase must be followed by pre or post, got 'post now'"),
        ("-- migrate:phase post\n-- migrate:phase pre\nSELECT 1;",
         2, "a second -- migrate:phase line: a file has one phase"),
        ("-- migrate:phase post\nSELECT 1;\n-- migrate:phase pre\n",
         3, "a second -- migrate:phase line: a file has one phase"),
        ("SELECT 1;\n-- migrate:phase post\nSELECT 2;",
         2, "-- migrate:phase must be in the header, the comment lines before the file's "
            "first statement"),
    ],
)  # fmt: skip
def test_a_bad_phase_header_is_refused_naming_the_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    message = refused(tmp_path, {"001_a.sql": text})
    path = tmp_path / "migrations" / "001_a.sql"
    assert message == f"{path}: line {line}: {problem}"


def test_the_bootstrap_script_takes_no_post_phase(tmp_path: Path) -> None:
    message = refused(tmp_path, {"000_init_database.sql": "-- x\n-- migrate:phase post\nSELECT 0;"})
    path = tmp_path / "migrations" / "000_init_database.sql"
    assert message.startswith(f"{path}: line 2: the bootstrap script runs before every phase")


@pytest.mark.parametrize(
    ("files", "tool"),
    [
        ({"1_a.up.sql": "-- migrate:phase post\nSELECT 1;"}, "golang-migrate"),
        ({"1_a.sql": "-- +goose Up\n-- migrate:phase post\nSELECT 1;"}, "goose"),
        ({"V1__a.sql": "SELECT 1;\n-- migrate:phase post\n"}, "flyway"),
    ],
)
def test_other_tools_files_take_no_phase(
    tmp_path: Path, files: dict[str, str | bytes], tool: str
) -> None:
    message = refused(tmp_path, files)
    (name,) = files
    line = 1 if tool == "golang-migrate" else 2
    assert message == (
        f"{tmp_path / 'migrations' / name}: line {line}: -- migrate:phase is read in the "
        f"runner's own format only: {tool} files all run before the release (phase pre)"
    )
