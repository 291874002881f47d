"""migrator/lint/contract.py: what counts as a breaking change or data loss between two catalogs,
and which tables a DELETE, TRUNCATE or MERGE removed rows from."""

from __future__ import annotations

import pytest

from migrator.lint.contract import compare, removed_rows, removing_command, widens
from migrator.lint.hazards import Finding, Lock

BASE = {
    ("table", "public.tokens"): ("r", "100"),
    ("column", "public.tokens.id"): ("bigint NOT NULL without a default", "100.1"),
    ("column", "public.tokens.scope"): ("character varying(10)", "100.2"),
    ("table", "public.names"): ("v", "200"),
    ("column", "public.names.id"): ("bigint", "200.1"),
    ("function", "public.touch()"): ("", "300"),
    ("type", "public.kind"): ("e", "400"),
    ("enum value", "public.kind.'a'"): ("", "401"),
}


def changes(after):
    return {(f.kind, f.relation, f.change) for f in compare(BASE, BASE, after)}


def without(*keys):
    return {k: v for k, v in BASE.items() if k not in keys}


def test_nothing_changed():
    assert changes(BASE) == set()


def test_a_dropped_table_is_breaking_and_data_loss_once_not_per_column():
    after = without(("table", "public.tokens"), ("column", "public.tokens.id"),
                    ("column", "public.tokens.scope"))  # fmt: skip
    assert changes(after) == {
        ("breaking", "public.tokens", "table dropped"),
        ("data_loss", "public.tokens", "table dropped with its data"),
    }


def test_a_dropped_view_loses_no_data():
    after = without(("table", "public.names"), ("column", "public.names.id"))
    assert changes(after) == {("breaking", "public.names", "table dropped")}


def test_a_rename_keeps_its_identity():
    after = without(("column", "public.tokens.scope"))
    after[("column", "public.tokens.scopes")] = ("character varying(10)", "100.2")
    assert changes(after) == {
        ("breaking", "public.tokens.scope", "column renamed to public.tokens.scopes")
    }


def test_narrowing_a_column():
    after = dict(BASE)
    after[("column", "public.tokens.scope")] = ("character varying(10) NOT NULL without a default",
                                                "100.2")  # fmt: skip
    [(kind, name, change)] = changes(after)
    assert (kind, name) == ("breaking", "public.tokens.scope")
    assert change.startswith("column becomes NOT NULL without a default")


def test_a_new_not_null_column_without_default_on_an_existing_table():
    after = {**BASE, ("column", "public.tokens.tenant"): ("integer NOT NULL without a default",
                                                          "100.3")}  # fmt: skip
    assert changes(after) == {
        ("breaking", "public.tokens.tenant",
         "new column is NOT NULL without a default (INSERTs that omit it fail)")
    }  # fmt: skip


def test_what_the_release_created_does_not_count():
    before = {**BASE, ("table", "public.tmp"): ("r", "900")}
    assert compare(BASE, before, BASE) == []


def test_a_dropped_type_is_reported_once():
    after = without(("type", "public.kind"), ("enum value", "public.kind.'a'"))
    assert changes(after) == {("breaking", "public.kind", "type dropped")}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("character varying(10)", "character varying(20)", True),
        ("character varying(10)", "character varying", True),
        ("character varying(10)", "text", True),
        ("character varying(20)", "character varying(10)", False),
        ("character varying", "character varying(10)", False),
        ("integer", "bigint", False),
        ("character varying(10)", "integer", False),
        ("character varying(10)", "character varying(10)", True),
    ],
)
def test_widening_a_varchar_breaks_no_reader(old, new, expected):
    assert widens(old, new) is expected


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("DELETE 12", "DELETE"),
        ("TRUNCATE TABLE", "TRUNCATE"),
        ("MERGE 3", "MERGE"),
        ("UPDATE 3", None),
        ("INSERT 0 1", None),
        ("ALTER TABLE", None),
        ("", None),
    ],
)
def test_the_commands_that_remove_rows_by_their_tag(tag, expected):
    assert removing_command(tag) == expected


TABLES = {1: "public.tokens", 2: "public.sessions", 3: "public.audit"}
RX, AE, AS = Lock.ROW_EXCLUSIVE, Lock.ACCESS_EXCLUSIVE, Lock.ACCESS_SHARE


def removed(command, locks, deleted=({}, {})):
    return [
        (f.kind, f.relation, f.change, f.table)
        for f in removed_rows(TABLES, command, locks, deleted)
    ]


def test_the_table_a_delete_writes_loses_rows_not_the_tables_it_reads():
    assert removed("DELETE", ({}, {1: RX, 2: AS})) == [
        ("data_loss", "public.tokens", "rows removed (DELETE)", "public.tokens")
    ]


def test_a_truncate_takes_a_lock_stronger_than_the_one_held_before():
    assert removed("TRUNCATE", ({1: RX, 2: RX}, {1: AE, 2: RX})) == [
        ("data_loss", "public.tokens", "rows removed (TRUNCATE)", "public.tokens")
    ]


def test_rows_counted_as_deleted_on_a_table_already_locked():
    deleted = ({1: 5, 2: 7}, {1: 5, 2: 9, 3: 1})
    assert removed("MERGE", ({1: RX, 2: RX, 3: AS}, {1: RX, 2: RX, 3: AS}), deleted) == [
        ("data_loss", "public.sessions", "rows removed (MERGE)", "public.sessions"),
        ("data_loss", "public.audit", "rows removed (MERGE)", "public.audit"),
    ]


def test_a_delete_that_removes_nothing_new_from_a_locked_table():
    assert removed("DELETE", ({1: RX}, {1: RX}), ({1: 3}, {1: 3})) == []
    assert removed("DELETE", ({}, {})) == []


def test_compare_reports_a_changed_type_and_a_widened_one_not():
    after = dict(BASE)
    after[("column", "public.names.id")] = ("integer", "200.1")
    after[("column", "public.tokens.scope")] = ("text", "100.2")
    assert changes(after) == {
        ("breaking", "public.names.id", "column changes from bigint to integer")
    }


def test_a_dropped_column_is_breaking_and_data_loss_with_its_table():
    after = without(("column", "public.tokens.scope"))
    assert compare(BASE, BASE, after) == [
        Finding("breaking", "public.tokens.scope", change="column dropped"),
        Finding("data_loss", "public.tokens.scope", change="column dropped with its data",
                table="public.tokens"),
    ]  # fmt: skip


def test_a_dropped_function_or_enum_value_is_breaking():
    after = without(("function", "public.touch()"), ("enum value", "public.kind.'a'"))
    assert changes(after) == {
        ("breaking", "public.touch()", "function dropped"),
        ("breaking", "public.kind.'a'", "enum value dropped"),
    }


def test_a_rename_is_matched_by_kind_and_identity():
    after = without(("table", "public.names"), ("column", "public.names.id"))
    after[("function", "public.names()")] = ("", "200")  # same identity, another kind
    after[("table", "public.people")] = ("v", "201")
    assert changes(after) == {("breaking", "public.names", "table dropped")}


def test_a_column_that_loses_its_default_becomes_required():
    before = {**BASE, ("column", "public.tokens.scope"): ("text", "100.2")}
    after = {
        **BASE,
        ("column", "public.tokens.scope"): ("text NOT NULL without a default", "100.2"),
    }
    found = compare(before, before, after)
    assert [(f.relation, f.change) for f in found] == [
        ("public.tokens.scope",
         "column becomes NOT NULL without a default (INSERTs that omit it fail)")
    ]  # fmt: skip


def test_a_required_column_that_stays_required_changes_type():
    after = {
        **BASE,
        ("column", "public.tokens.id"): ("integer NOT NULL without a default", "100.1"),
    }
    assert changes(after) == {
        ("breaking", "public.tokens.id",
         "column changes from bigint NOT NULL without a default to integer NOT NULL without a "
         "default")
    }  # fmt: skip


@pytest.mark.parametrize("column", ["public.tokens.id", "public.tokens.scope"])
def test_a_required_column_that_takes_nulls_or_gets_a_default_breaks_nothing(column):
    """DROP NOT NULL and SET DEFAULT relax a column whatever its type: the running release's
    INSERTs still work. (bigint and varchar were told apart before.)"""
    required = {**BASE, ("column", "public.tokens.scope"):
                ("character varying(10) NOT NULL without a default", "100.2")}  # fmt: skip
    after = dict(required)
    after[("column", column)] = (required[("column", column)][0].split(" NOT NULL")[0],
                                 required[("column", column)][1])  # fmt: skip
    assert compare(required, required, after) == []


def test_a_column_that_takes_nulls_and_changes_type_is_still_a_type_change():
    after = {**BASE, ("column", "public.tokens.id"): ("integer", "100.1")}
    assert changes(after) == {
        ("breaking", "public.tokens.id",
         "column changes from bigint NOT NULL without a default to integer")
    }  # fmt: skip


def test_a_new_column_with_a_default_or_on_a_view_or_new_table_breaks_nothing():
    after = {
        **BASE,
        ("column", "public.tokens.tenant"): ("integer", "100.3"),
        ("column", "public.names.extra"): ("integer NOT NULL without a default", "200.2"),
        ("table", "public.fresh"): ("r", "500"),
        ("column", "public.fresh.id"): ("integer NOT NULL without a default", "500.1"),
    }
    assert changes(after) == set()


def test_a_column_that_existed_before_the_statement_is_not_new():
    before = {**BASE, ("column", "public.tokens.tenant"): ("integer NOT NULL without a default",
                                                           "100.3")}  # fmt: skip
    assert compare(BASE, before, before) == []


def test_a_widened_required_varchar_breaks_no_reader():
    required = {**BASE, ("column", "public.tokens.scope"): ("character varying(10) NOT NULL "
                                                            "without a default", "100.2")}  # fmt: skip
    after = {**required, ("column", "public.tokens.scope"): ("character varying(20) NOT NULL "
                                                             "without a default", "100.2")}  # fmt: skip
    assert compare(required, required, after) == []


def test_a_dropped_table_and_a_dropped_function_after_it():
    after = without(("table", "public.tokens"), ("column", "public.tokens.id"),
                    ("column", "public.tokens.scope"), ("function", "public.touch()"))  # fmt: skip
    assert compare(BASE, BASE, after) == [
        Finding("breaking", "public.tokens", change="table dropped"),
        Finding("data_loss", "public.tokens", change="table dropped with its data",
                table="public.tokens"),
        Finding("breaking", "public.touch()", change="function dropped"),
    ]  # fmt: skip


def test_a_rename_then_a_drop():
    after = without(("column", "public.tokens.scope"), ("function", "public.touch()"))
    after[("column", "public.tokens.scopes")] = ("character varying(10)", "100.2")
    assert changes(after) == {
        ("breaking", "public.tokens.scope", "column renamed to public.tokens.scopes"),
        ("breaking", "public.touch()", "function dropped"),
    }


def test_a_change_after_a_dropped_or_new_object_is_still_found():
    # The release adds tokens.tenant (first in the loop's order), drops tokens.id, then
    # changes names.id and its own new column: each is looked at, none stops the rest.
    created = {("column", "public.tokens.tenant"): ("integer", "100.3"), **BASE}
    after = {k: v for k, v in created.items() if k != ("column", "public.tokens.id")}
    after[("column", "public.names.id")] = ("integer", "200.1")
    after[("column", "public.tokens.tenant")] = ("text", "100.3")
    found = compare(BASE, created, after)
    assert {(f.kind, f.relation, f.change) for f in found} == {
        ("breaking", "public.tokens.id", "column dropped"),
        ("data_loss", "public.tokens.id", "column dropped with its data"),
        ("breaking", "public.names.id", "column changes from bigint to integer"),
    }
