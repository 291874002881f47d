"""migrator/lint/hazards.py: lock order, the hazard rule, the documented classification of
non-transactional statements, the safe alternatives."""

from __future__ import annotations

import pytest

from migrator.files.formats import read_migration
from migrator.lint.hazards import (
    KINDS,
    Finding,
    Lock,
    documented,
    is_hazard,
    normalized,
    safe_alternative,
)


def test_locks_from_pg_locks_in_order():
    assert Lock.from_pg_locks("AccessExclusiveLock") is Lock.ACCESS_EXCLUSIVE
    assert Lock.from_pg_locks("ShareUpdateExclusiveLock").sql_name == "SHARE UPDATE EXCLUSIVE"
    assert Lock.from_pg_locks("RowExclusiveLock") < Lock.SHARE < Lock.SHARE_ROW_EXCLUSIVE


@pytest.mark.parametrize(
    ("lock", "rewrite", "scanned", "relkind", "expected"),
    [
        (Lock.ACCESS_EXCLUSIVE, True, False, "r", True),
        (Lock.SHARE, False, True, "r", True),  # CREATE INDEX
        (Lock.SHARE_UPDATE_EXCLUSIVE, False, True, "r", False),  # VALIDATE CONSTRAINT
        (Lock.ROW_EXCLUSIVE, False, True, "r", False),  # UPDATE ... (a backfill)
        (Lock.ACCESS_EXCLUSIVE, False, False, "r", False),  # brief: the lock timeout handles it
        (Lock.EXCLUSIVE, False, True, "m", False),  # REFRESH ... CONCURRENTLY: reads go on
        (Lock.ACCESS_EXCLUSIVE, True, False, "m", True),  # REFRESH MATERIALIZED VIEW
        (None, False, True, "r", False),
    ],
)
def test_the_hazard_rule(lock, rewrite, scanned, relkind, expected):
    assert is_hazard(lock, rewrite=rewrite, scanned=scanned, relkind=relkind) is expected


@pytest.mark.parametrize(
    ("statement", "kind", "lock", "targets"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", None, Lock.SHARE_UPDATE_EXCLUSIVE, ()),
        ("REINDEX INDEX CONCURRENTLY i", None, Lock.SHARE_UPDATE_EXCLUSIVE, ()),
        ("DROP INDEX CONCURRENTLY i", None, Lock.SHARE_UPDATE_EXCLUSIVE, ()),
        ("VACUUM (ANALYZE) t", None, Lock.SHARE_UPDATE_EXCLUSIVE, ("t",)),
        ("VACUUM FULL a, b", "rewrite", Lock.ACCESS_EXCLUSIVE, ("a", "b")),
        ("vacuum (full, analyze) app.t (c)", "rewrite", Lock.ACCESS_EXCLUSIVE, ("app.t",)),
        ("VACUUM (FULL false) t", None, Lock.SHARE_UPDATE_EXCLUSIVE, ("t",)),
        ("VACUUM", None, Lock.SHARE_UPDATE_EXCLUSIVE, ("(every table)",)),
        ("CLUSTER", "rewrite", Lock.ACCESS_EXCLUSIVE, ("(every clustered table)",)),
        ("REINDEX SCHEMA app", "index_build", Lock.SHARE, ("(schema app)",)),
        ("ALTER SYSTEM SET work_mem = '8MB'", None, None, ()),
    ],
)
def test_documented_classification(statement, kind, lock, targets):
    doc = documented(statement)
    assert (doc.kind, doc.lock, doc.targets) == (kind, lock, targets)


def test_cluster_wide_statements_are_not_run_on_the_scratch_database():
    assert documented("CREATE DATABASE other").runs_on_scratch is False
    assert documented("VACUUM FULL t").runs_on_scratch is True


@pytest.mark.parametrize(
    ("kind", "statement", "expected"),
    [
        ("index_build", "CREATE INDEX i ON t (a)", "CREATE INDEX CONCURRENTLY"),
        ("index_build", "ALTER TABLE t ADD PRIMARY KEY (id)", "USING INDEX"),
        ("scan", "ALTER TABLE t ALTER COLUMN email SET NOT NULL", "CHECK (email IS NOT NULL)"),
        ("scan", "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)", "NOT VALID, then VALIDATE"),
        ("scan", "alter table t add foreign key (a) references p", "NOT VALID, then VALIDATE"),
        ("rewrite", "ALTER TABLE t ALTER COLUMN a TYPE bigint", "expand and contract"),
        ("rewrite", "ALTER TABLE t ADD COLUMN r float DEFAULT random()", "backfill"),
        ("rewrite", "REFRESH MATERIALIZED VIEW v", "CONCURRENTLY"),
        ("rewrite", "CLUSTER t USING i", "pg_repack"),
    ],
)
def test_safe_alternatives(kind, statement, expected):
    assert expected in (safe_alternative(kind, statement) or "")


def test_no_alternative_when_there_is_no_standard_one():
    assert safe_alternative("rewrite", "ALTER TABLE t SET UNLOGGED") is None


def test_the_runner_accepts_the_allow_directive(tmp_path):
    path = tmp_path / "002_widen.sql"
    path.write_text("-- migrate:allow rewrite tokens: approved\nALTER TABLE tokens SET UNLOGGED;")
    assert read_migration(path).version == "002_widen"


@pytest.mark.parametrize(
    ("statement", "kind", "lock", "note"),
    [
        ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", None, Lock.SHARE_UPDATE_EXCLUSIVE,
         "concurrent build or drop: SHARE UPDATE EXCLUSIVE, reads and writes go on"),
        ("REINDEX (VERBOSE) INDEX CONCURRENTLY i", None, Lock.SHARE_UPDATE_EXCLUSIVE,
         "concurrent build or drop: SHARE UPDATE EXCLUSIVE, reads and writes go on"),
        ("ALTER TABLE t DETACH PARTITION p CONCURRENTLY", None, Lock.SHARE_UPDATE_EXCLUSIVE,
         "DETACH PARTITION CONCURRENTLY: SHARE UPDATE EXCLUSIVE on the parent"),
        ("vacuum full t", "rewrite", Lock.ACCESS_EXCLUSIVE,
         "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE"),
        ("VACUUM (FULL OFF) t", None, Lock.SHARE_UPDATE_EXCLUSIVE,
         "VACUUM: SHARE UPDATE EXCLUSIVE, reads and writes go on"),
        ("CLUSTER t USING i", "rewrite", Lock.ACCESS_EXCLUSIVE,
         "CLUSTER rewrites every clustered table under ACCESS EXCLUSIVE"),
        ("REINDEX (VERBOSE) DATABASE", "index_build", Lock.SHARE,
         "REINDEX DATABASE rebuilds every index under SHARE locks"),
        ("CREATE DATABASE other", None, None, "touches no table of the database"),
    ],
)  # fmt: skip
def test_documented_notes(statement, kind, lock, note):
    doc = documented(statement)
    assert (doc.kind, doc.lock, doc.note) == (kind, lock, note)


@pytest.mark.parametrize(
    ("statement", "targets"),
    [
        ("vacuum freeze verbose analyze app.t, s", ("app.t", "s")),
        ("VACUUM (FULL 0, VERBOSE) t (a, b), u", ("t", "u")),
        ("VACUUM FULL", ("(every table)",)),
        ("REINDEX DATABASE", ("(database)",)),
        ("REINDEX SYSTEM app", ("(system app)",)),
    ],
)
def test_documented_targets(statement, targets):
    assert documented(statement).targets == targets


def test_the_not_null_alternative_names_the_column_when_it_can():
    assert safe_alternative("scan", "alter table t alter email set not null") == (
        "ADD CONSTRAINT ... CHECK (email IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT in a "
        "later transaction; SET NOT NULL then skips the scan (drop the CHECK afterwards)"
    )
    assert safe_alternative("scan", 'ALTER TABLE t ALTER COLUMN "my col" SET NOT NULL') == (
        "ADD CONSTRAINT ... CHECK (column IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT in a "
        "later transaction; SET NOT NULL then skips the scan (drop the CHECK afterwards)"
    )


def test_normalized_drops_comments_case_and_spacing():
    assert normalized("alter  table t -- why\n\tADD /* x */ c int") == "ALTER TABLE T ADD C INT"


def test_a_finding_carries_every_kind_of_its_change():
    assert Finding("breaking", "public.t.a", also=("data_loss",)).kinds == ("breaking", "data_loss")
    assert Finding("rewrite", "public.t").kinds == ("rewrite",)
    assert Finding(None, "public.t").kinds == ()


def test_a_statement_that_cannot_run_twice_has_its_kind_and_alternative():
    assert "rerun" in KINDS
    alternative = safe_alternative("rerun", "CREATE TABLE t (id int)")
    assert alternative is not None
    assert alternative.startswith("make the statement re-runnable (CREATE ... IF NOT EXISTS")
    assert "move it to a transactional file" in alternative
