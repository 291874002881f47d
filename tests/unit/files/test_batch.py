"""Unit tests for migrator.files.batch: the -- migrate:batch header and its one statement."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.errors import EX_DATAERR, MigrationFilesError
from migrator.files.batch import BatchSpec, batch_of
from migrator.files.formats import read_migration

HEAD = "-- Description: backfill\n-- migrate:phase post\n"
GOOD = "UPDATE tokens SET scope_v2 = scope WHERE id BETWEEN $1 AND $2;\n"


def refused(text: str) -> str:
    with pytest.raises(MigrationFilesError) as caught:
        batch_of(Path("004_backfill.sql"), text)
    assert caught.value.exit_code == EX_DATAERR
    assert "\n" not in caught.value.message
    return caught.value.message


def test_the_header_gives_table_key_size_and_line():
    text = HEAD + "-- migrate:batch table=public.tokens key=id size=5000\n" + GOOD
    assert batch_of(Path("004_backfill.sql"), text) == BatchSpec("public.tokens", "id", 5000, 3)


def test_a_file_without_the_header_is_no_batch():
    assert batch_of(Path("004_x.sql"), HEAD + GOOD) is None
    assert batch_of(Path("004_x.sql"), "-- migrate:phase post\nSELECT 'migrate:batch';") is None


def test_options_in_any_order_and_case_quoted_names_kept():
    spec = batch_of(Path("4_x.sql"), HEAD + '-- migrate:batch KEY="Id" Table=app."Tokens"\n')
    assert spec is not None
    assert (spec.table_parts, spec.key_name, spec.size) == (("app", "Tokens"), "Id", None)
    plain = BatchSpec("Tokens", "ID", None, 1)
    assert (plain.table_parts, plain.key_name) == (("tokens",), "id")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("-- migrate:batch table=t", "needs key="),
        ("-- migrate:batch key=id", "needs table="),
        ("-- migrate:batch table=t key=id rows=5", "option 'rows=5' is not understood"),
        ("-- migrate:batch table=t key=id size", "option 'size' is not understood"),
        ("-- migrate:batch table=t key=id size=0", "size='0' must be a whole number"),
        ("-- migrate:batch table=t key=id size=-3", "size='-3' must be a whole number"),
        ("-- migrate:batch table=t key=id size=1e3", "size='1e3' must be a whole number"),
        ("-- migrate:batch table=t key=id key=x", "names key= twice"),
        ("-- migrate:batch table=a.b.c key=id", "table='a.b.c' is not a table name"),
        ("-- migrate:batch table=t key=a.b", "key='a.b' is not a column name"),
    ],
)
def test_bad_options_are_refused_naming_the_line(line, expected):
    message = refused(HEAD + line + "\n" + GOOD)
    assert message.startswith("004_backfill.sql: line 3: "), message
    assert expected in message


def test_a_second_batch_line_is_refused():
    line = "-- migrate:batch table=t key=id\n"
    assert "line 4: a second -- migrate:batch line" in refused(HEAD + line + line + GOOD)


def test_a_batch_line_after_the_header_is_refused():
    text = HEAD + GOOD + "-- migrate:batch table=t key=id\n"
    assert "line 4: -- migrate:batch must be in the header" in refused(text)


@pytest.mark.parametrize("phase", ["", "-- migrate:phase pre\n"])
def test_a_batch_file_must_be_a_post_file(phase):
    message = refused(phase + "-- migrate:batch table=t key=id\n" + GOOD)
    assert "add -- migrate:phase post" in message


# --- the statement (validate_batch, through Migration.refuse_unsupported) -----------------------


def migration_refusal(tmp_path: Path, body: str, header: str = "table=public.tokens key=id"):
    path = tmp_path / "004_backfill.sql"
    path.write_text(HEAD + f"-- migrate:batch {header}\n" + body, encoding="utf-8")
    migration = read_migration(path)
    assert migration.batch is not None
    refusal: MigrationFilesError | None = None
    try:
        migration.refuse_unsupported()
    except MigrationFilesError as error:
        refusal = error
    if refusal is None:
        return None
    assert refusal.exit_code == EX_DATAERR
    assert "\n" not in refusal.message
    return refusal.message


@pytest.mark.parametrize(
    "body",
    [
        GOOD,
        "DELETE FROM tokens WHERE id BETWEEN $1 AND $2 AND revoked;",
        "INSERT INTO archive (id) SELECT id FROM tokens WHERE id >= $1 AND id <= $2;",
        "WITH moved AS (SELECT id FROM tokens WHERE id BETWEEN $1 AND $2)\n"
        "UPDATE tokens t SET scope_v2 = t.scope FROM moved WHERE moved.id = t.id;",
        "UPDATE tokens SET (a, b) = (b, a) WHERE id BETWEEN $1 AND $2;",
        "UPDATE tokens SET note = 'id = $3' WHERE id BETWEEN $1 AND $2; -- $4\n",
    ],
)
def test_bounded_data_statements_are_accepted(tmp_path, body):
    assert migration_refusal(tmp_path, body) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", "line 3: a batch file holds one data statement; this one holds none"),
        (GOOD + "UPDATE tokens SET a = 1 WHERE id BETWEEN $1 AND $2;\n", "line 5: a second"),
        ("UPDATE tokens SET a = 1;", "does not use $1"),
        ("UPDATE tokens SET a = 1 WHERE id >= $1;", "does not use $2"),
        ("UPDATE tokens SET a = '$1 $2' WHERE id > 0;", "does not use $1"),
        ("UPDATE tokens SET a = 1 /* $1 */ WHERE id <= $2;", "does not use $1"),
        ("UPDATE tokens SET a = $f$ $1 $f$ WHERE id <= $2;", "does not use $1"),
        ("UPDATE tokens SET a = 1 WHERE id <= $2; -- $1", "does not use $1"),
        ("UPDATE tokens SET a = $3 WHERE id BETWEEN $1 AND $2;", "uses $3"),
        ("ALTER TABLE tokens ADD COLUMN b int; -- $1 $2", "not ALTER"),
        ("CREATE INDEX i ON tokens (id) WHERE id BETWEEN $1 AND $2;", "not CREATE"),
        ("COMMIT;", "not COMMIT"),
        ("SELECT * FROM tokens WHERE id BETWEEN $1 AND $2;", "not SELECT"),
        ("INSERT INTO archive VALUES ($1, $2);", "must take its rows from a SELECT"),
        ("UPDATE tokens SET id = id + 100 WHERE id BETWEEN $1 AND $2;", "sets the key column id"),
        ("UPDATE tokens SET (a, id) = (1, 2) WHERE id BETWEEN $1 AND $2;", "sets the key column"),
        (
            "INSERT INTO public.tokens (id) SELECT id + 1000 FROM tokens WHERE id BETWEEN $1 AND $2;",
            "inserts into public.tokens, the table it walks",
        ),
    ],
)
def test_statements_the_loop_cannot_batch_are_refused(tmp_path, body, expected):
    message = migration_refusal(tmp_path, body)
    assert message is not None and message.startswith(str(tmp_path / "004_backfill.sql") + ": line")
    assert expected in message, message


def test_another_tools_file_with_a_batch_line_is_refused(tmp_path):
    from migrator.files.folder import find_migrations

    (tmp_path / "1_x.up.sql").write_text("-- migrate:batch table=t key=id\nSELECT 1;\n")
    with pytest.raises(MigrationFilesError, match="migrate:batch is read in the runner's own"):
        find_migrations(tmp_path)


def test_the_down_part_of_a_batch_file_runs_whole(tmp_path: Path) -> None:
    up = tmp_path / "004_backfill.sql"
    up.write_text(HEAD + "-- migrate:batch table=tokens key=id\n" + GOOD, encoding="utf-8")
    (tmp_path / "004_backfill.down.sql").write_text("UPDATE tokens SET scope_v2 = NULL;\n")
    migration = read_migration(up)
    assert migration.batch is not None
    assert migration.down is not None and migration.down.batch is None
    migration.down.refuse_unsupported()
