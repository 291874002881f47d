"""Unit tests for migrator.foreign: which tool a history table belongs to, by its columns."""

from __future__ import annotations

import pytest

from migrator.foreign import tool_of


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
