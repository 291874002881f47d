"""migrator/contract.py: what counts as a breaking change or data loss between two catalogs."""

from __future__ import annotations

import pytest

from migrator.contract import compare, widens

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
    ],
)
def test_widening_a_varchar_breaks_no_reader(old, new, expected):
    assert widens(old, new) is expected
