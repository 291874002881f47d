"""Unit tests for migrator.history.foreign: which tool a history table belongs to, by its columns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from migrator.errors import EX_CONFIG, EX_DATAERR, HistoryMismatchError
from migrator.history.foreign import (
    TOOLS,
    Applied,
    ForeignHistory,
    Tool,
    dbmate_history,
    flyway_history,
    foreign_history_error,
    golang_migrate_history,
    goose_history,
    tool_in,
    tool_of,
)

GOLANG, DBMATE, GOOSE, FLYWAY = TOOLS
T1, T2, T3 = (datetime(2024, 1, day, tzinfo=UTC) for day in (1, 2, 3))


@pytest.mark.parametrize(
    ("table", "columns", "tool"),
    [
        ("schema_migrations", {"version"}, "dbmate"),
        ("schema_migrations", {"version", "dirty"}, "golang-migrate"),
        ("goose_db_version", {"id", "version_id", "is_applied", "tstamp"}, "goose"),
        (
            "flyway_schema_history",
            {
                "installed_rank",
                "version",
                "description",
                "type",
                "script",
                "checksum",
                "installed_by",
                "installed_on",
                "execution_time",
                "success",
            },
            "Flyway",
        ),
    ],
)
def test_other_tools_tables_are_recognised(table: str, columns: set[str], tool: str) -> None:
    found = tool_of(table, columns)
    assert found is not None and found.name == tool


def test_the_runners_own_table_is_not_another_tools() -> None:
    columns = {"version", "description", "checksum", "applied_at", "execution_ms", "applied_by"}
    assert tool_of("schema_migrations", columns) is None
    # Altered by hand (a column dropped) is still the runner's: exit 65 names the column.
    assert tool_of("schema_migrations", columns - {"execution_ms"}) is None
    assert tool_of("schema_migrations", columns - {"description"}) is None
    assert tool_of("goose_db_version", {"id"}) is None


def test_a_flyway_table_with_extra_columns_is_flyways_but_missing_ones_are_not() -> None:
    columns = {"installed_rank", "version", "type", "checksum", "success"}
    assert tool_of("flyway_schema_history", columns | {"script"}) is FLYWAY
    assert tool_of("flyway_schema_history", columns - {"success"}) is None
    # dbmate's table is recognised by its exact columns only.
    assert tool_of("schema_migrations", {"version", "extra"}) is None
    assert tool_of("goose_db_version", {"version"}) is None


def test_each_tool_keeps_its_table_under_a_name_of_its_own() -> None:
    assert [(t.name, t.table, t.renamed_to) for t in TOOLS] == [
        ("golang-migrate", "schema_migrations", "schema_migrations_golang_migrate"),
        ("dbmate", "schema_migrations", "schema_migrations_dbmate"),
        ("goose", "goose_db_version", "goose_db_version_adopted"),
        ("Flyway", "flyway_schema_history", "flyway_schema_history_adopted"),
    ]


def test_each_tool_is_read_from_its_table_in_public_with_the_columns_its_rows_need() -> None:
    assert [t.select().as_string() for t in TOOLS] == [
        'SELECT version, dirty FROM "public"."schema_migrations"',
        'SELECT version FROM "public"."schema_migrations"',
        'SELECT version_id, is_applied, tstamp FROM "public"."goose_db_version" ORDER BY id',
        "SELECT installed_rank, version, description, type, checksum, installed_on, "
        'installed_by, success FROM "public"."flyway_schema_history" ORDER BY installed_rank',
    ]


def test_each_tool_interprets_its_own_rows() -> None:
    assert [t.history for t in TOOLS] == [
        golang_migrate_history,
        dbmate_history,
        goose_history,
        flyway_history,
    ]


# --- which tool's history a database holds, from its tables' columns ---------------------------


def test_the_first_table_another_tool_wrote_names_the_tool() -> None:
    runners = ["version", "description", "checksum", "applied_at", "execution_ms", "applied_by"]
    goose = ["id", "version_id", "is_applied", "tstamp"]
    assert tool_in([]) is None
    assert tool_in([("schema_migrations", runners)]) is None
    assert tool_in([("goose_db_version", goose), ("schema_migrations", runners)]) is GOOSE
    assert tool_in([("schema_migrations", runners), ("goose_db_version", goose)]) is GOOSE
    assert tool_in([("goose_db_version", goose), ("schema_migrations", ["version"])]) is GOOSE
    assert tool_in([("schema_migrations", ["version"]), ("goose_db_version", goose)]) is DBMATE


@pytest.mark.parametrize("tool", TOOLS, ids=[t.name for t in TOOLS])
def test_another_tools_history_is_refused_with_exit_78_naming_table_and_tool(tool: Tool) -> None:
    error = foreign_history_error(tool)
    assert error.exit_code == EX_CONFIG
    assert error.message == (
        f"public.{tool.table} was written by {tool.name}, not by this runner: nothing was "
        "applied; take it over with 'entrypoint.py adopt' (see README, Adopting an existing "
        "database)"
    )
    assert error.fields == {"tool": tool.name, "table": f"public.{tool.table}"}


# --- what each tool's rows mean (the readers fetch them; these functions decide) ----------------


def test_dbmate_rows_are_the_applied_versions() -> None:
    found = dbmate_history(DBMATE, [("20240101120000",), ("20240102120000",)])
    assert found == ForeignHistory(
        DBMATE,
        {
            "20240101120000": Applied("20240101120000"),
            "20240102120000": Applied("20240102120000"),
        },
    )


@pytest.mark.parametrize("rows", [[], [(-1, False)], [(-1, True)]])
def test_golang_migrate_without_a_version_applied_nothing(rows: list[tuple[int, bool]]) -> None:
    assert golang_migrate_history(GOLANG, rows) == ForeignHistory(GOLANG)


def test_golang_migrate_version_covers_every_version_up_to_it() -> None:
    assert golang_migrate_history(GOLANG, [(0, False)]) == ForeignHistory(GOLANG, up_to=(0,))
    assert golang_migrate_history(GOLANG, [(20240102, False)]).up_to == (20240102,)


def test_golang_migrate_dirty_version_is_refused_with_what_to_do() -> None:
    with pytest.raises(HistoryMismatchError) as caught:
        golang_migrate_history(GOLANG, [(7, True)])
    assert caught.value.exit_code == EX_DATAERR
    assert caught.value.message == (
        "golang-migrate left version 7 dirty: that migration failed part-way. Check which "
        "of its statements ran, finish or undo them by hand, set dirty = false, then adopt"
    )
    assert caught.value.fields == {"version": 7}


def test_goose_newest_row_of_a_version_decides_and_version_0_is_gooses_own() -> None:
    rows = [
        (0, True, T1),
        (1, True, T1),
        (2, True, T2),
        (2, False, T3),
        (3, False, T1),
        (3, True, T3),
    ]
    assert goose_history(GOOSE, rows) == ForeignHistory(
        GOOSE, {"1": Applied("1", T1), "3": Applied("3", T3)}
    )


def flyway_row(
    rank: int, version: str | None, kind: str = "SQL", success: bool = True, description: str = "d"
) -> tuple[object, ...]:
    return (rank, version, description, kind, 100 + rank, T1, "flyway", success)


def test_flyway_rows_in_rank_order() -> None:
    rows = [
        flyway_row(1, None, "SCHEMA"),  # Flyway created the schema: not a migration
        flyway_row(2, "1.01", "BASELINE"),
        flyway_row(3, "1.2"),
        flyway_row(4, "1.3", "JDBC"),
        flyway_row(5, "1.3", "UNDO_SQL"),
        flyway_row(6, "1.4"),
        flyway_row(7, "1.4", "DELETE"),  # flyway repair marking a missing file: kept
        flyway_row(8, None, "SQL", description="views"),
    ]
    assert flyway_history(FLYWAY, rows) == ForeignHistory(
        FLYWAY,
        {
            "1.2": Applied("1.2", T1, 103, "flyway"),
            "1.4": Applied("1.4", T1, 106, "flyway"),
            "views": Applied("views", T1, 108, "flyway"),
        },
        up_to=(1, 1),
    )


def test_flyway_undo_of_a_version_never_applied_is_harmless() -> None:
    assert flyway_history(FLYWAY, [flyway_row(1, "2", "UNDO_SQL")]) == ForeignHistory(FLYWAY)


@pytest.mark.parametrize(
    ("row", "what", "version"),
    [
        (flyway_row(4, "1.3", success=False), "version 1.3", "1.3"),
        (flyway_row(5, None, success=False, description="views"), "repeatable 'views'", "views"),
    ],
)
def test_flyway_failed_row_is_refused_naming_it(
    row: tuple[object, ...], what: str, version: str
) -> None:
    with pytest.raises(HistoryMismatchError) as caught:
        flyway_history(FLYWAY, [flyway_row(1, "1"), row])
    assert caught.value.message == (
        f"flyway_schema_history has a failed row for {what} (installed_rank {row[0]}): Flyway "
        "stopped there. Undo what of it ran, delete the row (flyway repair), then adopt"
    )
    assert caught.value.fields == {"version": version}


def test_a_flyway_table_with_the_runners_column_names_is_still_flyways() -> None:
    columns = {"installed_rank", "version", "description", "type", "checksum", "success"}
    assert tool_of("flyway_schema_history", columns | {"applied_at"}) is FLYWAY
