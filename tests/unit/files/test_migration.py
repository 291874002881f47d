"""Unit tests for migrator.files.migration: one file's name, version, checksum, description, emptiness."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from migrator.errors import EX_DATAERR, MigrationFilesError
from migrator.files.formats import read_migration
from migrator.files.migration import checksum_of, looks_like_checksum, parse_file_name
from migrator.files.sql import transaction_mode

REPO = Path(__file__).resolve().parents[3]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- file names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "number", "version"),
    [
        ("002_add_feature.sql", 2, "002_add_feature"),
        ("000_init_database.sql", 0, "000_init_database"),
        ("1_a.sql", 1, "1_a"),
        ("1000_x.sql", 1000, "1000_x"),
        ("20240101120000_create_users.sql", 20240101120000, "20240101120000_create_users"),
        ("003_add-index.v2.sql", 3, "003_add-index.v2"),
        ("004_CamelCase_Name.sql", 4, "004_CamelCase_Name"),
    ],
)
def test_valid_names(name: str, number: int, version: str) -> None:
    assert parse_file_name(Path(name)) == (number, version)


@pytest.mark.parametrize(
    "name",
    [
        "add.sql",
        "002-add.sql",
        "002_.sql",
        "V1__x.sql",
        "002.sql",
        "_002_add.sql",
        "002_add feature.sql",
        "002__double.sql",
        "002_add.sql.bak",
    ],
)
def test_invalid_names_do_not_parse(name: str) -> None:
    assert parse_file_name(Path(name)) is None


@pytest.mark.parametrize("name", ["add.sql", "002-add.sql", "002_.sql", "V1__x.sql"])
def test_reading_a_badly_named_file_names_it(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "SELECT 1;")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    assert caught.value.exit_code == EX_DATAERR == 65
    assert name in caught.value.message
    assert "<number>_<name>.sql" in caught.value.message
    assert caught.value.fields["file"] == str(path)


# --- contents -----------------------------------------------------------------------------------


def test_version_number_checksum_and_sql(tmp_path: Path) -> None:
    content = "CREATE TABLE feature (id int);\n"
    path = write(tmp_path, "002_add_feature.sql", content)
    migration = read_migration(path)
    assert migration.version == "002_add_feature"
    assert migration.number == 2
    assert migration.path == path
    assert migration.sql == content
    assert migration.checksum == hashlib.sha256(content.encode()).hexdigest()
    assert migration.is_bootstrap is False
    assert migration.is_empty is False


def test_checksum_is_sha256_hex_of_the_bytes_as_stored() -> None:
    assert checksum_of(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert checksum_of(b"SELECT 1;\r\n") == hashlib.sha256(b"SELECT 1;\r\n").hexdigest()
    assert checksum_of(b"SELECT 1;\r\n") != checksum_of(b"SELECT 1;\n"), "bytes, not text"


def test_checksum_covers_a_byte_order_mark_which_is_not_sent(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbfSELECT 1;\n"
    migration = read_migration(write(tmp_path, "001_bom.sql", raw))
    assert migration.checksum == hashlib.sha256(raw).hexdigest()
    assert migration.sql == "SELECT 1;\n"


def test_a_one_byte_change_changes_the_checksum(tmp_path: Path) -> None:
    first = read_migration(write(tmp_path, "001_a.sql", "SELECT 1;"))
    second = read_migration(write(tmp_path, "001_a.sql", "SELECT 2;"))
    assert first.checksum != second.checksum


def test_non_utf8_file_is_rejected_naming_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "003_latin1.sql", b"-- ok\nSELECT 1;\nSELECT 'caf\xe9';\n")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    message = caught.value.message
    assert caught.value.exit_code == 65
    assert "003_latin1.sql" in message
    assert "line 3" in message
    assert "UTF-8" in message
    assert caught.value.fields["line"] == 3


def test_folder_with_a_valid_name_is_rejected_as_unreadable(tmp_path: Path) -> None:
    (tmp_path / "002_x.sql").mkdir()
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(tmp_path / "002_x.sql")
    assert caught.value.exit_code == 65
    assert "002_x.sql" in caught.value.message
    assert "cannot be read" in caught.value.message


def test_dangling_symlink_is_rejected_as_unreadable(tmp_path: Path) -> None:
    (tmp_path / "002_x.sql").symlink_to(tmp_path / "nowhere.sql")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(tmp_path / "002_x.sql")
    assert "002_x.sql" in caught.value.message
    assert "cannot be read" in caught.value.message


# --- description and emptiness ------------------------------------------------------------------


def test_description_from_the_header(tmp_path: Path) -> None:
    path = write(
        tmp_path, "002_add_feature.sql", "-- Description:   Add the feature table  \nSELECT 1;"
    )
    assert read_migration(path).description == "Add the feature table"


def test_description_defaults_to_the_name_in_words(tmp_path: Path) -> None:
    path = write(tmp_path, "002_add_feature_flags.sql", "SELECT 1;")
    assert read_migration(path).description == "add feature flags"


@pytest.mark.parametrize(
    "content",
    [
        "",
        "\n\n   \n",
        "-- nothing to do yet\n",
        "/* a block comment\n   over lines */\n-- and a line comment\n",
        "-- Description: placeholder\n;\n",
    ],
)
def test_empty_or_comment_only_files_are_empty(tmp_path: Path, content: str) -> None:
    migration = read_migration(write(tmp_path, "008_placeholder.sql", content))
    assert migration.is_empty is True
    assert migration.statements == []


def test_a_statement_makes_a_file_not_empty(tmp_path: Path) -> None:
    migration = read_migration(write(tmp_path, "009_one.sql", "-- comment\nSELECT 1"))
    assert migration.is_empty is False


def test_bootstrap_is_number_zero(tmp_path: Path) -> None:
    assert read_migration(write(tmp_path, "000_init_database.sql", "")).is_bootstrap is True
    assert read_migration(write(tmp_path, "00_init.sql", "")).is_bootstrap is True
    assert read_migration(write(tmp_path, "001_first.sql", "")).is_bootstrap is False


# --- what counts as a real checksum -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (hashlib.sha256(b"x").hexdigest(), True),
        (hashlib.sha256(b"x").hexdigest().upper(), True),
        ("checksum_here", False),
        ("", False),
        (None, False),
        ("abc123", False),
        ("g" * 64, False),
        (hashlib.md5(b"x").hexdigest(), False),  # noqa: S324 - an MD5 is not our checksum
    ],
)
def test_looks_like_checksum(value: str | None, expected: bool) -> None:
    assert looks_like_checksum(value) is expected


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "tests" / "corpus").glob("*.sql")) + sorted((REPO / "migrations").glob("*.sql")),
    ids=lambda path: path.name,
)
def test_mode_shortcut_agrees_with_the_lexer(path: Path) -> None:
    migration = read_migration(path)
    assert migration.mode_decision == transaction_mode(migration.sql, migration.statements)


# --- cases mutation testing found unasserted (scripts/mutation.sh) ------------------------------


def test_a_nul_byte_is_refused_at_read_time_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "001_a.sql", b"SELECT 1;\nSELECT '\0';\n")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    assert caught.value.message == (
        f"{path}: line 2: contains a NUL byte (libpq would send the file only up to it)"
    )
    assert caught.value.fields == {"file": str(path), "line": 2}


def test_invalid_utf8_message_names_byte_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "001_a.sql", b"SELECT 1;\nSELECT '\xff';\n")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    assert caught.value.message == f"{path}: line 2: not valid UTF-8 (byte 0xff at offset 18)"
    assert caught.value.fields == {"file": str(path), "line": 2}


def test_a_bad_name_message(tmp_path: Path) -> None:
    path = write(tmp_path, "add_feature.sql", "SELECT 1;")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    assert caught.value.message == (
        f"{path}: file name does not match <number>_<name>.sql (e.g. 002_add_feature.sql)"
    )
    assert caught.value.fields == {"file": str(path)}


@pytest.mark.parametrize(
    "header",
    ["-- migrate: no-transaction", "-- Migrate:No-Transaction", "--migrate:no-transaction"],
)
def test_no_transaction_header_spellings_at_read_time(tmp_path: Path, header: str) -> None:
    migration = read_migration(write(tmp_path, "001_a.sql", f"{header}\nCREATE TABLE t (a int);\n"))
    assert migration.mode_decision.mode.value == "no-transaction"
    assert migration.mode_decision.reason == "-- migrate:no-transaction header"


def test_a_misspelt_directive_is_refused_at_read_time(tmp_path: Path) -> None:
    path = write(tmp_path, "001_a.sql", "-- a note\n-- migrate:no-transactoin\nVACUUM;\n")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    assert caught.value.message == (
        f"{path}: line 2: unknown marker '-- migrate:no-transactoin' (known: -- migrate:up, "
        "-- migrate:down, -- migrate:no-transaction, -- migrate:allow, "
        "-- migrate:replaces-checksum, -- migrate:phase, -- migrate:batch)"
    )


def test_a_down_companion_is_read_with_its_file(tmp_path: Path) -> None:
    path = write(tmp_path, "001_a.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "001_a.down.sql", "DROP TABLE a;")
    migration = read_migration(path)
    assert migration.down is not None
    assert (migration.down.path.name, migration.down.sql) == ("001_a.down.sql", "DROP TABLE a;")


def test_drift_is_only_a_real_checksum_that_differs(tmp_path: Path) -> None:
    migration = read_migration(write(tmp_path, "001_a.sql", "SELECT 1;"))
    other = "0" * 64
    assert migration.changed_since(other) is True
    assert migration.changed_since(migration.checksum) is False
    assert migration.changed_since("checksum_here") is False
    assert migration.changed_since(None) is False
    bootstrap = read_migration(write(tmp_path, "000_init.sql", "SELECT 0;"))
    assert bootstrap.is_bootstrap and bootstrap.changed_since(other) is False


def test_order_and_sort_key(tmp_path: Path) -> None:
    migration = read_migration(write(tmp_path, "0042_a.sql", "SELECT 1;"))
    assert (migration.number, migration.order, migration.sort_key) == (42, (), (42,))
    assert migration.key == "0042"
    assert (migration.title, migration.repeatable, migration.down) == (None, False, None)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"\n-- x\nSELECT '\0';\nSELECT 2;\nSELECT '\0';\n", 3),  # the first NUL, counted from 1
        (b"\0SELECT 1;", 1),
    ],
)
def test_the_first_nul_byte_is_named(tmp_path: Path, content: bytes, line: int) -> None:
    path = write(tmp_path, "001_a.sql", content)
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    assert caught.value.fields == {"file": str(path), "line": line}


def test_invalid_utf8_after_a_blank_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "001_a.sql", b"\nSELECT 1;\nSELECT '\xff';\n")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(path)
    assert caught.value.message == f"{path}: line 3: not valid UTF-8 (byte 0xff at offset 19)"


# --- what the runner will not run: refused before anything is applied ---------------------------

REFUSED_CASES = [
    (
        "CREATE TABLE t (a int);\nPREPARE TRANSACTION 'x';\n",
        2,
        "PREPARE TRANSACTION leaves the file's work uncommitted, so it could never be recorded",
    ),
    (
        "SELECT 1;\n\n\\connect other\nSELECT 2;\n",
        3,
        "psql meta-command \\connect: the runner sends SQL only, never psql's commands",
    ),
    (
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (:'USER');\n",
        2,
        "psql variable :'USER': psql replaces it with its own value, the runner sends SQL as it is",
    ),
    (
        "-- migrate:no-transaction\nBEGIN;\nCREATE TABLE t (a int);\n",
        2,
        "BEGIN here is not ended by COMMIT: psql would roll the file's work back when it ends, "
        "the runner will not record work it cannot commit",
    ),
    (  # what the file cannot send is named before a BEGIN left open
        "-- migrate:no-transaction\nBEGIN;\nCREATE TABLE t (a int);\n\\gset\n",
        4,
        "psql meta-command \\gset: the runner sends SQL only, never psql's commands",
    ),
]


@pytest.mark.parametrize(("content", "line", "reason"), REFUSED_CASES)
def test_what_the_runner_will_not_run_is_refused_naming_the_line(
    tmp_path: Path, content: str, line: int, reason: str
) -> None:
    path = write(tmp_path, "003_refused.sql", content)
    migration = read_migration(path)
    with pytest.raises(MigrationFilesError) as caught:
        migration.refuse_unsupported()
    assert caught.value.exit_code == EX_DATAERR
    assert caught.value.message == f"{path}: line {line}: {reason}; nothing of it was run"
    assert caught.value.fields == {"file": str(path), "line": line}


@pytest.mark.parametrize(
    "content",
    [
        "CREATE TABLE t (a int);\n",
        "BEGIN;\nCREATE TABLE t (a int);\nCOMMIT;\n",
        "SELECT ':value', :value;\n",  # a variable psql does not define is left as it is
        "-- migrate:no-transaction\nBEGIN;\nCREATE TABLE t (a int);\nCOMMIT;\nVACUUM;\n",
        "COMMENT ON TABLE t IS 'a \\ backslash and copy';\n",
    ],
)
def test_what_the_runner_can_run_is_not_refused(tmp_path: Path, content: str) -> None:
    read_migration(write(tmp_path, "003_fine.sql", content)).refuse_unsupported()


def test_a_replaced_checksum_is_not_drift_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    earlier = "ab" * 32
    header = f"-- migrate:replaces-checksum {earlier.upper()} the same table, a comment fixed\n"
    migration = read_migration(write(tmp_path, "001_a.sql", header + "CREATE TABLE a (id int);\n"))
    assert migration.replaced_checksums == {earlier}
    assert not migration.changed_since(earlier)
    assert migration.changed_since("cd" * 32)
    bad = write(tmp_path, "002_b.sql", "-- migrate:replaces-checksum 12ab typo\nSELECT 1;\n")
    with pytest.raises(MigrationFilesError) as caught:
        read_migration(bad)
    assert caught.value.message.startswith(f"{bad}: line 1: ")
    assert "64 hex digits" in caught.value.message
    assert "'-- migrate:replaces-checksum 12ab typo' needs the SHA-256" in caught.value.message
