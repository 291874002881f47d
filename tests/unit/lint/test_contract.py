"""migrator/lint/contract.py: what counts as a breaking change or data loss between the catalog at
the release's start and a later one, which tables a DELETE, TRUNCATE or MERGE removed rows from,
and what other sessions see of a release (Release)."""

from __future__ import annotations

import pytest

from migrator.lint.contract import (
    Release,
    compare,
    key_of,
    row_command,
    still_resolves,
    widens,
    written_rows,
)
from migrator.lint.hazards import Finding, Lock

BASE = {
    ("table", "public.tokens"): ("r", "100"),
    ("column", "public.tokens.id"): ("bigint NOT NULL without a default", "100.1"),
    ("column", "public.tokens.scope"): ("character varying(10)", "100.2"),
    ("table", "public.names"): ("v", "200"),
    ("column", "public.names.id"): ("bigint", "200.1"),
    ("function", "public.touch()"): ("returns trigger; defaults 0", "300"),
    ("type", "public.kind"): ("e", "400"),
    ("enum value", "public.kind.'a'"): ("", "401"),
}


BD = ("breaking", "data_loss")


def changes(after, baseline=BASE):
    """(kind, relation, change), a finding with two kinds as ("breaking", "data_loss")."""
    return {(f.kinds if f.also else f.kind, f.relation, f.change) for f in compare(baseline, after)}


def without(*keys):
    return {k: v for k, v in BASE.items() if k not in keys}


def test_nothing_changed():
    assert changes(BASE) == set()


def test_a_dropped_table_is_one_finding_of_both_kinds_not_one_per_column():
    after = without(("table", "public.tokens"), ("column", "public.tokens.id"),
                    ("column", "public.tokens.scope"))  # fmt: skip
    assert changes(after) == {(BD, "public.tokens", "table dropped with its data")}


def test_a_dropped_view_loses_no_data():
    after = without(("table", "public.names"), ("column", "public.names.id"))
    assert changes(after) == {("breaking", "public.names", "table dropped")}


def test_a_rename_keeps_its_identity():
    after = without(("column", "public.tokens.scope"))
    after[("column", "public.tokens.scopes")] = ("character varying(10)", "100.2")
    assert changes(after) == {
        ("breaking", "public.tokens.scope", "column renamed to public.tokens.scopes")
    }
    [renamed] = compare(BASE, after)
    assert renamed.table == "public.tokens"


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
    assert compare(BASE, {**BASE, ("table", "public.tmp"): ("r", "900")}) == []


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
        ("UPDATE 3", "UPDATE"),
        ("UPDATED 3", None),
        ("INSERT 0 1", None),
        ("ALTER TABLE", None),
        ("", None),
    ],
)
def test_the_commands_that_remove_or_update_rows_by_their_tag(tag, expected):
    assert row_command(tag) == expected


TABLES = {1: "public.tokens", 2: "public.sessions", 3: "public.audit"}
RX, AE, AS = Lock.ROW_EXCLUSIVE, Lock.ACCESS_EXCLUSIVE, Lock.ACCESS_SHARE


def removed(command, locks, deleted=({}, {})):
    return [
        (f.kind, f.relation, f.change, f.table)
        for f in written_rows(TABLES, command, locks, deleted)
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


def test_a_dropped_column_is_one_finding_of_both_kinds_with_its_table():
    after = without(("column", "public.tokens.scope"))
    assert compare(BASE, after) == [
        Finding("breaking", "public.tokens.scope", change="column dropped with its data",
                table="public.tokens", also=("data_loss",)),
    ]  # fmt: skip
    assert compare(BASE, after)[0].kinds == ("breaking", "data_loss")


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
    found = compare(before, after)
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
    assert compare(required, after) == []


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


def test_a_column_the_release_adds_with_a_default_then_drops_the_default_is_new_and_required():
    """Issue 26: ADD COLUMN ... NOT NULL DEFAULT 'eu', then DROP DEFAULT: judged against the
    release's start, the column is new and INSERTs that omit it fail."""
    after = {**BASE, ("column", "public.tokens.region"): ("text NOT NULL without a default",
                                                          "100.3")}  # fmt: skip
    assert changes(after) == {
        ("breaking", "public.tokens.region",
         "new column is NOT NULL without a default (INSERTs that omit it fail)")
    }  # fmt: skip
    assert compare(BASE, {**BASE, ("column", "public.tokens.region"): ("text", "100.3")}) == []


def test_a_widened_required_varchar_breaks_no_reader():
    required = {**BASE, ("column", "public.tokens.scope"): ("character varying(10) NOT NULL "
                                                            "without a default", "100.2")}  # fmt: skip
    after = {**required, ("column", "public.tokens.scope"): ("character varying(20) NOT NULL "
                                                             "without a default", "100.2")}  # fmt: skip
    assert compare(required, after) == []


def test_a_dropped_table_and_a_dropped_function_after_it():
    after = without(("table", "public.tokens"), ("column", "public.tokens.id"),
                    ("column", "public.tokens.scope"), ("function", "public.touch()"))  # fmt: skip
    assert compare(BASE, after) == [
        Finding("breaking", "public.tokens", change="table dropped with its data",
                table="public.tokens", also=("data_loss",)),
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
    after = {("column", "public.tokens.tenant"): ("text", "100.3"), **BASE}
    del after[("column", "public.tokens.id")]
    after[("column", "public.names.id")] = ("integer", "200.1")
    assert changes(after) == {
        (BD, "public.tokens.id", "column dropped with its data"),
        ("breaking", "public.names.id", "column changes from bigint to integer"),
    }


# --- the object behind a name: identity, partitions, replacements -------------------------------


def test_a_column_dropped_and_added_again_under_its_name_lost_its_data():
    after = {**BASE, ("column", "public.tokens.scope"): ("character varying(10)", "100.3")}
    assert changes(after) == {
        ("data_loss", "public.tokens.scope",
         "column dropped with its data (a new column took its name)")
    }  # fmt: skip
    [lost] = compare(BASE, after)
    assert lost.table == "public.tokens"


def test_a_column_renamed_away_and_a_new_one_under_its_name():
    after = {**BASE, ("column", "public.tokens.scope"): ("character varying(10)", "100.3"),
             ("column", "public.tokens.scope_old"): ("character varying(10)", "100.2")}  # fmt: skip
    assert changes(after) == {
        ("breaking", "public.tokens.scope",
         "column renamed to public.tokens.scope_old (a new column took its name)")
    }  # fmt: skip


def test_a_replaced_column_that_also_narrows_is_one_finding_of_both_kinds():
    after = {**BASE, ("column", "public.tokens.scope"): ("integer", "100.3")}
    assert changes(after) == {
        (BD, "public.tokens.scope", "column dropped with its data (a new column took its name); "
         "column changes from character varying(10) to integer")
    }  # fmt: skip


def test_a_table_dropped_and_created_again_lost_its_rows_its_columns_are_judged_by_name():
    after = {**BASE, ("table", "public.tokens"): ("r", "900"),
             ("column", "public.tokens.id"): ("bigint NOT NULL without a default", "900.1"),
             ("column", "public.tokens.scope"): ("text", "900.2")}  # fmt: skip
    assert changes(after) == {
        ("data_loss", "public.tokens", "table dropped with its data (a new table took its name)")
    }
    after[("column", "public.tokens.scope")] = ("integer", "900.2")
    assert ("breaking", "public.tokens.scope",
            "column changes from character varying(10) to integer") in changes(after)  # fmt: skip


def test_a_table_renamed_behind_a_view_of_its_old_name_breaks_nothing():
    after = without(("table", "public.tokens"), ("column", "public.tokens.id"),
                    ("column", "public.tokens.scope"))  # fmt: skip
    after |= {("table", "public.tokens_v2"): ("r", "100"),
              ("column", "public.tokens_v2.id"): ("bigint NOT NULL without a default", "100.1"),
              ("column", "public.tokens_v2.scope"): ("character varying(10)", "100.2"),
              ("table", "public.tokens"): ("v", "901"),
              ("column", "public.tokens.id"): ("bigint", "901.1"),
              ("column", "public.tokens.scope"): ("character varying(10)", "901.2")}  # fmt: skip
    assert changes(after) == set()
    del after[("column", "public.tokens.scope")]
    assert changes(after) == {("breaking", "public.tokens.scope", "column dropped")}


def test_a_view_replaced_by_a_table_no_longer_follows_its_tables():
    after = {**BASE, ("table", "public.names"): ("r", "901"),
             ("column", "public.names.id"): ("bigint", "901.1")}  # fmt: skip
    assert changes(after) == {
        ("breaking", "public.names",
         "view replaced by a table (it no longer follows the tables the view read)")
    }  # fmt: skip
    after[("table", "public.names")] = ("v", "901")  # a view replaced by a view: its columns
    assert changes(after) == set()


PARTITIONED = {
    ("table", "public.audit"): ("p", "10"),
    ("column", "public.audit.at"): ("date NOT NULL without a default", "10.1"),
    ("table", "public.audit_2024"): ("r partition of public.audit", "11"),
    ("table", "public.audit_2025"): ("r partition of public.audit", "12"),
}


def test_the_partitions_of_a_dropped_partitioned_table_fold_into_it():
    assert changes({}, PARTITIONED) == {(BD, "public.audit", "table dropped with its data")}


def test_a_partition_dropped_alone_lost_its_rows():
    after = {k: v for k, v in PARTITIONED.items() if k != ("table", "public.audit_2024")}
    assert changes(after, PARTITIONED) == {(BD, "public.audit_2024", "table dropped with its data")}
    after[("table", "public.audit_2024")] = ("r", "11")  # detached: judged by its columns
    assert changes(after, PARTITIONED) == set()


def test_an_enum_type_swapped_for_one_without_a_value():
    after = without(("enum value", "public.kind.'a'"))
    after |= {("type", "public.kind"): ("e", "410"), ("enum value", "public.kind.'b'"): ("", "411")}
    assert changes(after) == {("breaking", "public.kind.'a'", "enum value dropped")}
    after[("enum value", "public.kind.'a'")] = ("", "412")  # the same values: nothing lost
    assert changes(after) == set()


# --- functions: what every old call still resolves to --------------------------------------------

F = "returns bigint; defaults {}"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("public.f(a integer, b boolean)", F.format(1), True),
        ("public.f(a integer, b boolean, c text)", F.format(2), True),
        ("public.f(a integer, b boolean)", F.format(0), False),  # b has no default
        ("public.f(a integer, b boolean, c text)", F.format(1), False),
        ("public.f(a integer, b boolean)", "returns integer; defaults 1", False),
        ("public.f(x integer, b boolean)", F.format(1), False),  # a => 1 no longer resolves
        ("public.f(a bigint, b boolean)", F.format(1), False),
        ("public.g(a integer, b boolean)", F.format(1), False),
        ("other.f(a integer, b boolean)", F.format(1), False),
        ("public.f(a integer)", F.format(1), False),  # the same arguments: it is the old one
        ("public.f()", F.format(0), False),
    ],
)
def test_a_function_replaced_by_one_with_more_defaulted_arguments(name, value, expected):
    state = {("function", name): (value, "7")}
    found = still_resolves("public.f(a integer)", F.format(0), state)
    assert found == (name if expected else None)


def test_an_old_default_must_still_be_there_beside_the_new_ones():
    state = {("function", "public.f(a integer, b boolean)"): (F.format(1), "7")}
    assert still_resolves("public.f(a integer)", F.format(1), state) is None
    state = {("function", "public.f(a integer, b boolean)"): (F.format(2), "7")}
    assert still_resolves("public.f(a integer)", F.format(1), state) is not None
    assert still_resolves("public.f(a integer)", "", state) is None  # an old reading


def test_a_function_dropped_for_one_every_call_resolves_to_breaks_nothing():
    after = without(("function", "public.touch()"))
    after[("function", "public.touch(force boolean)")] = ("returns trigger; defaults 1", "301")
    assert changes(after) == set()
    after[("function", "public.touch(force boolean)")] = ("returns trigger; defaults 0", "301")
    assert changes(after) == {("breaking", "public.touch()", "function dropped")}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("returns trigger; defaults 0", None),  # created again, the same: nobody can tell
        ("returns trigger; defaults 1", None),
        ("returns void; defaults 0", "function returns void instead of trigger"),
        ("odd", "function changes from returns trigger; defaults 0 to odd"),
    ],
)
def test_a_function_created_again_under_its_signature(value, expected):
    after = {**BASE, ("function", "public.touch()"): (value, "333")}
    assert changes(after) == ({("breaking", "public.touch()", expected)} if expected else set())


def test_a_function_that_loses_a_default():
    baseline = {("function", "public.f(a integer)"): (F.format(1), "5")}
    after = {("function", "public.f(a integer)"): (F.format(0), "6")}
    assert changes(after, baseline) == {
        ("breaking", "public.f(a integer)",
         "function loses a default (calls that omit that argument fail)")
    }  # fmt: skip


# --- what other sessions see of a release --------------------------------------------------------

NO_SCOPE = without(("column", "public.tokens.scope"))


def test_a_change_undone_before_the_commit_is_never_seen():
    release = Release(BASE)
    release.observe("drop", NO_SCOPE)
    release.observe("add again", {**BASE, ("column", "public.tokens.scope"): BASE[
        ("column", "public.tokens.scope")]})  # fmt: skip
    assert release.commit() == []


def test_a_change_seen_at_a_commit_is_reported_once_for_the_statement_that_made_it():
    release = Release(BASE)
    release.observe("drop", NO_SCOPE)
    assert [(s, f.relation) for s, f in release.commit()] == [("drop", "public.tokens.scope")]
    release.observe("later", NO_SCOPE)
    assert release.commit() == []  # already shown, in this file or an earlier one
    release.observe("add again", BASE)
    release.observe("drop again", NO_SCOPE)
    assert release.commit() == []


def test_a_change_is_attributed_to_the_statement_since_which_it_has_been_there():
    release = Release(BASE)
    release.observe("harmless", BASE)
    renamed = without(("column", "public.tokens.scope"))
    release.observe("rename", {**renamed, ("column", "public.tokens.tmp"): ("character varying(10)",
                                                                           "100.2")})  # fmt: skip
    release.observe("rename again", {**renamed, ("column", "public.tokens.s"): (
        "character varying(10)", "100.2")})  # fmt: skip
    [(statement, finding)] = release.commit()
    assert statement == "rename"
    assert finding.change == "column renamed to public.tokens.s"  # what the commit shows


def test_a_change_that_goes_and_comes_back_before_the_commit_is_attributed_anew():
    release = Release(BASE)
    release.observe("drop", NO_SCOPE)
    release.observe("add again", BASE)
    release.observe("drop again", NO_SCOPE)
    assert [s for s, _ in release.commit()] == ["drop again"]


def test_rows_removed_are_reported_at_the_commit_once():
    release = Release(BASE)
    rows = Finding("data_loss", "public.tokens", change="rows removed (DELETE)")
    release.removed("delete", [rows])
    release.removed("delete more", [rows])
    release.observe("delete more", BASE)
    assert release.commit() == [("delete", rows)]
    release.removed("delete in the next file", [rows])
    assert release.commit() == []
    assert key_of(rows) == ("public.tokens", ("data_loss",))


def test_a_removed_partition_folds_into_its_partitioned_table():
    tables = {1: "public.events", 2: "public.events_2024", 3: "public.events_2025",
              4: "public.events_2024_q1"}  # fmt: skip
    parents = {2: 1, 3: 1, 4: 2}
    locks = ({}, {1: RX, 2: RX, 3: RX, 4: RX})
    found = written_rows(tables, "DELETE", locks, ({}, {}), parents)
    assert [f.relation for f in found] == ["public.events"]
    alone = written_rows(tables, "DELETE", ({}, {2: RX, 4: RX}), ({}, {}), parents)
    assert [f.relation for f in alone] == ["public.events_2024"]
    cycle = written_rows(tables, "DELETE", ({}, {3: RX}), ({}, {}), {3: 3})
    assert [f.relation for f in cycle] == ["public.events_2025"]


def test_an_update_is_unbatched_only_and_a_delete_both_one_finding_each():
    update = written_rows(TABLES, "UPDATE", ({}, {1: RX, 2: AS}), ({}, {}))
    assert [(f.kinds, f.relation, f.change, f.table) for f in update] == [
        (("unbatched",), "public.tokens", "rows updated in one statement (UPDATE)", "public.tokens")
    ]
    delete = written_rows(TABLES, "DELETE", ({1: RX}, {1: RX}), ({1: 3}, {1: 4}))
    assert [(f.kind, f.kinds) for f in delete] == [("data_loss", ("data_loss", "unbatched"))]
    truncate = written_rows(TABLES, "TRUNCATE", ({}, {1: AE}), ({}, {}))
    assert [f.kinds for f in truncate] == [("data_loss",)]
    merge = written_rows(TABLES, "MERGE", ({}, {1: RX}), ({}, {}))
    assert [f.kinds for f in merge] == [("data_loss",)]
