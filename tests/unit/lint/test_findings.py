"""migrator/lint/findings.py: what the lint concludes from its measurements (the finding for a table
from two snapshots and the locks held), the documented statements, the waivers, and the report:
its counts, summary line, events and their fields, and the exit-65 message."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from migrator.errors import HazardsFoundError, MigrationFilesError
from migrator.files.migration import Migration, checksum_of
from migrator.files.sql import Statement
from migrator.lint.findings import (
    Located,
    LockJudge,
    Relation,
    Report,
    Snapshot,
    Waiver,
    batch_sized,
    bounds_finding,
    documented_findings,
    is_transaction_control,
    min_rows_of,
    refused_in_transaction,
    rerun_finding,
    reruns_on_scratch,
    waivers_for,
    waivers_of,
)
from migrator.lint.hazards import (
    NOT_OBSERVED,
    Documented,
    Finding,
    Lock,
    documented,
    safe_alternative,
)

TOKENS, SESSIONS, VIEW = 10, 20, 30
RELATIONS = {
    TOKENS: Relation("public.tokens", "r"),
    SESSIONS: Relation("public.sessions", "r"),
    VIEW: Relation("public.totals", "m"),
}
AE, SHARE = Lock.ACCESS_EXCLUSIVE, Lock.SHARE


def snap(node: int = 100, scans: int = 0, *indexes: tuple[int, int]) -> Snapshot:
    return Snapshot(node, scans, tuple(indexes))


def judge_one(
    before: Snapshot,
    after: Snapshot,
    lock: Lock | None,
    tag: str = "ALTER TABLE",
    oid: int = TOKENS,
) -> list[Finding]:
    locks = {oid: lock} if lock else {}
    return LockJudge(RELATIONS).findings({oid: before}, {oid: after}, locks, tag)


# --- LockJudge: rewrite, index build, scan, brief lock -----------------------------------------


def test_a_new_relfilenode_under_a_blocking_lock_is_a_rewrite():
    assert judge_one(snap(100), snap(101), AE) == [Finding("rewrite", "public.tokens", AE)]


def test_truncate_swaps_the_file_without_copying_it_a_brief_lock():
    assert judge_one(snap(100), snap(101), AE, tag="TRUNCATE TABLE") == [
        Finding(None, "public.tokens", AE)
    ]


def test_a_partitioned_table_has_no_file_to_rewrite():
    assert judge_one(snap(0), snap(101), AE) == [Finding(None, "public.tokens", AE)]


def test_a_new_or_rebuilt_index_is_an_index_build():
    built = judge_one(snap(100, 0, (1, 11)), snap(100, 0, (1, 11), (2, 12)), SHARE)
    assert built == [Finding("index_build", "public.tokens", SHARE)]
    rebuilt = judge_one(snap(100, 0, (1, 11)), snap(100, 0, (1, 13)), SHARE)
    assert rebuilt == [Finding("index_build", "public.tokens", SHARE)]


def test_dropping_an_index_builds_nothing():
    assert judge_one(snap(100, 0, (1, 11), (2, 12)), snap(100, 0, (1, 11)), AE) == [
        Finding(None, "public.tokens", AE)
    ]


def test_a_rewrite_that_also_builds_indexes_and_scans_is_a_rewrite():
    found = judge_one(snap(100, 0, (1, 11)), snap(101, 1, (1, 12)), AE)
    assert found == [Finding("rewrite", "public.tokens", AE)]


def test_an_index_build_that_scans_is_an_index_build():
    found = judge_one(snap(100, 0), snap(100, 1, (1, 11)), SHARE)
    assert found == [Finding("index_build", "public.tokens", SHARE)]


def test_a_full_scan_under_a_lock_that_blocks_writes():
    assert judge_one(snap(100, 3), snap(100, 4), SHARE) == [Finding("scan", "public.tokens", SHARE)]


def test_a_scan_under_a_weak_lock_is_nothing_to_report():
    assert judge_one(snap(100, 3), snap(100, 4), Lock.SHARE_UPDATE_EXCLUSIVE) == []
    assert judge_one(snap(100, 3), snap(100, 4), Lock.ROW_EXCLUSIVE) == []


def test_the_same_counts_change_nothing():
    assert judge_one(snap(100, 3, (1, 11)), snap(100, 3, (1, 11)), Lock.SHARE_ROW_EXCLUSIVE) == [
        Finding(None, "public.tokens", Lock.SHARE_ROW_EXCLUSIVE)
    ]


def test_a_materialized_view_is_only_hurt_by_a_lock_that_blocks_reads():
    found = judge_one(snap(100, 0), snap(100, 1), Lock.EXCLUSIVE, oid=VIEW)
    assert found == [Finding(None, "public.totals", Lock.EXCLUSIVE)]  # REFRESH ... CONCURRENTLY
    found = judge_one(snap(100, 0), snap(101, 0), AE, oid=VIEW)
    assert found == [Finding("rewrite", "public.totals", AE)]


def test_a_table_without_a_lock_or_dropped_by_the_statement_gives_nothing():
    assert judge_one(snap(100), snap(101), None) == []
    judge = LockJudge(RELATIONS)
    before = {TOKENS: snap(100), SESSIONS: snap(200)}
    now = {SESSIONS: snap(201)}
    assert judge.findings(before, now, {TOKENS: AE, SESSIONS: AE}, "DROP TABLE") == [
        Finding("rewrite", "public.sessions", AE)
    ]


def test_each_table_is_judged_in_the_order_of_the_snapshots():
    judge = LockJudge(RELATIONS)
    before = {SESSIONS: snap(200, 0), TOKENS: snap(100, 0), VIEW: snap(300, 0)}
    now = {TOKENS: snap(101, 0), SESSIONS: snap(200, 1), VIEW: snap(300, 0)}
    locks = {TOKENS: AE, SESSIONS: AE, VIEW: Lock.ACCESS_SHARE}
    assert judge.findings(before, now, locks, "ALTER TABLE") == [
        Finding("scan", "public.sessions", AE),
        Finding("rewrite", "public.tokens", AE),
    ]


def test_a_brief_lock_is_listed_once_per_file_unless_a_stronger_one_follows():
    judge = LockJudge(RELATIONS)
    same = {TOKENS: snap(100)}

    def brief(lock: Lock) -> list[Finding]:
        return judge.findings(same, same, {TOKENS: lock}, "ALTER TABLE")

    assert brief(SHARE) == [Finding(None, "public.tokens", SHARE)]
    assert brief(SHARE) == []  # listed for the earlier statement
    assert brief(Lock.ACCESS_SHARE) == []
    assert brief(AE) == [Finding(None, "public.tokens", AE)]
    assert brief(SHARE) == []
    assert brief(Lock.EXCLUSIVE) == []  # weaker than the ACCESS EXCLUSIVE already listed


def test_a_hazard_counts_as_listed_for_the_brief_locks_after_it():
    judge = LockJudge(RELATIONS)
    assert judge.findings({TOKENS: snap(100)}, {TOKENS: snap(101)}, {TOKENS: AE}, "ALTER") == [
        Finding("rewrite", "public.tokens", AE)
    ]
    same = {TOKENS: snap(101)}
    assert judge.findings(same, same, {TOKENS: AE}, "ALTER TABLE") == []
    # A hazard is reported each time, listed lock or not.
    assert judge.findings(same, {TOKENS: snap(102)}, {TOKENS: AE}, "ALTER") == [
        Finding("rewrite", "public.tokens", AE)
    ]


# --- statements that run outside a transaction -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BEGIN", True),
        ("begin isolation level serializable", True),
        ("START TRANSACTION", True),
        ("commit;", True),
        ("End", True),
        ("ROLLBACK", True),
        ("abort", True),
        ("BEGINNING", False),
        ("SELECT 1", False),
        ("", False),
    ],
)
def test_transaction_control(text, expected):
    assert is_transaction_control(Statement(text, 0, 1)) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", True),
        ("VACUUM t", True),
        ("CREATE DATABASE other", True),
        ("ALTER TABLE t ADD c int", False),
        ("COMMIT", False),  # outside a transaction too, but the file's own transaction control
        ("BEGIN", False),
    ],
)
def test_refused_in_a_transaction(text, expected):
    assert refused_in_transaction(Statement(text, 0, 1)) is expected


def resolve(name: str) -> str:
    assert name and not name.startswith("("), name  # only table names are looked up
    return name if "." in name else f"public.{name}"


def test_what_this_release_created_is_no_hazard_of_a_documented_statement():
    doc = documented("VACUUM FULL tokens, sessions, app.audit")
    found = documented_findings(doc, None, {"public.tokens", "app.audit"}, resolve)
    note = "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE"
    assert found == [
        Finding("rewrite", "public.tokens", AE, observed=False, note=note),
        Finding("rewrite", "app.audit", AE, observed=False, note=note),
    ]


def test_a_documented_statement_on_every_table_is_reported_as_written():
    found = documented_findings(documented("REINDEX SCHEMA app"), None, set(), resolve)
    note = "REINDEX SCHEMA rebuilds every index under SHARE locks"
    assert found == [Finding("index_build", "(schema app)", SHARE, observed=False, note=note)]


def test_a_safe_documented_statement_is_listed_even_on_a_new_table():
    doc = documented("CREATE INDEX CONCURRENTLY i ON tokens (a)")
    found = documented_findings(doc, "tokens", set(), resolve)
    note = "concurrent build or drop: SHARE UPDATE EXCLUSIVE, reads and writes go on"
    lock = Lock.SHARE_UPDATE_EXCLUSIVE
    assert found == [Finding(None, "public.tokens", lock, observed=False, note=note)]


def test_a_documented_statement_that_names_no_table():
    found = documented_findings(
        documented("ALTER SYSTEM SET work_mem = '8MB'"), None, set(), resolve
    )
    note = "touches no table of the database"
    assert found == [Finding(None, "", None, observed=False, note=note)]
    hazard = Documented("rewrite", AE, "a rewrite of no table in particular")
    assert documented_findings(hazard, None, set(), resolve) == [
        Finding("rewrite", "", AE, observed=False, note="a rewrite of no table in particular")
    ]


# --- waivers -------------------------------------------------------------------------------------


def _migration(sql: str, name: str = "002_x.sql") -> Migration:
    version = name.removesuffix(".sql")
    return Migration(Path(name), int(version[:3]), version, sql, checksum_of(sql.encode()))


def test_waivers_are_read_from_the_header():
    sql = (
        "-- Description: widen ids\n"
        "-- migrate:allow rewrite public.tokens: maintenance window, approved by ops  \n"
        "--migrate:allow scan sessions:nightly\n"
        "  -- MIGRATE : ALLOW data_loss legacy :  backed up\n"
        "ALTER TABLE tokens ALTER COLUMN id TYPE bigint;\n"
        "-- migrate:allow index_build later: not in the header, ignored\n"
    )
    assert waivers_of(_migration(sql)) == [
        Waiver("rewrite", "public.tokens", "maintenance window, approved by ops", 2),
        Waiver("scan", "sessions", "nightly", 3),
        Waiver("data_loss", "legacy", "backed up", 4),
    ]


def test_a_file_without_statements_is_all_header():
    sql = "-- nothing yet\n-- migrate:allow breaking public.tokens.scope: the app stopped\n"
    assert waivers_of(_migration(sql)) == [
        Waiver("breaking", "public.tokens.scope", "the app stopped", 2)
    ]


@pytest.mark.parametrize(
    "line",
    [
        "-- migrate:allow rewrite tokens",  # no reason
        "-- migrate:allow rewrite tokens:   ",  # an empty reason
        "-- migrate:allow rewrites tokens: typo in the kind",
        "-- migrate:allow rewrite: no relation",
    ],
)
def test_a_malformed_waiver_names_its_file_and_line(line):
    with pytest.raises(MigrationFilesError) as raised:
        waivers_of(_migration(f"-- header\n{line}\nSELECT 1;"))
    assert raised.value.message == (
        f"002_x.sql: line 2: {line.strip()!r} must read -- migrate:allow <kind> <relation>: <reason> "
        "(kinds: rewrite, scan, index_build, breaking, data_loss, rerun, unbatched, unbounded; "
        "the reason is required)"
    )
    assert raised.value.fields == {"file": "002_x.sql", "line": 2}


@pytest.mark.parametrize(
    ("waiver", "finding", "expected"),
    [
        (Waiver("scan", "sessions", "", 1), Finding("scan", "public.sessions"), True),
        (Waiver("scan", "public.sessions", "", 1), Finding("scan", "public.sessions"), True),
        (Waiver("scan", "*", "", 1), Finding("scan", "public.sessions"), True),
        (Waiver("rewrite", "sessions", "", 1), Finding("scan", "public.sessions"), False),
        (Waiver("scan", "ssions", "", 1), Finding("scan", "public.sessions"), False),
        (Waiver("scan", "tokens", "", 1), Finding("scan", "public.sessions"), False),
        (Waiver("breaking", "t.scope", "", 1), Finding("breaking", "public.t.scope"), True),
        (Waiver("breaking", "t", "", 1), Finding("breaking", "public.t.scope"), False),
    ],
)
def test_what_a_waiver_covers(waiver, finding, expected):
    assert waiver.covers(finding) is expected


# --- the report ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "has_target", "expected"),
    [(None, True, 10_000), (None, False, 0), (500, True, 500), (0, True, 0), (7, False, 7)],
)
def test_min_rows(setting, has_target, expected):
    assert min_rows_of(setting, has_target) == expected


ALTER = "ALTER TABLE tokens\n    ALTER COLUMN id TYPE bigint"
ALTERNATIVE = (
    "expand and contract: add a column of the new type, backfill it in batches, "
    "switch the application, then drop the old column"
)


def located(migration: Migration, finding: Finding, text: str = ALTER, line: int = 3) -> Located:
    return Located(migration, Statement(text, 0, line), finding)


def hazard_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "event": "hazard",
        "logger_name": "lint",
        "version": "002_x",
        "file": "002_x.sql",
        "line": 3,
        "statement": "ALTER TABLE tokens ALTER COLUMN id TYPE bigint",
        "relation": "public.tokens",
        "lock": "ACCESS EXCLUSIVE",
        "rows": 50_000,
        "bytes": 4_096_000,
        "observed": True,
        "kind": "rewrite",
        "alternative": ALTERNATIVE,
        "log_level": "error",
    }
    merged = {**fields, **changes}
    merged.setdefault("kinds", [merged["kind"]])
    return merged


SIZES = {"public.tokens": (50_000, 4_096_000), "public.small": (20, 8192)}


def test_an_unwaived_hazard_logs_an_error_with_its_alternative_and_fails_the_lint():
    report = Report(10_000, SIZES)
    migration = _migration("ALTER TABLE tokens ALTER COLUMN id TYPE bigint;")
    with capture_logs() as logs:
        report.add(migration, [located(migration, Finding("rewrite", "public.tokens", AE))])
    assert logs == [hazard_fields()]
    assert report.summary == (
        "lint: 1 file(s), 1 hazard(s), 0 waived, 0 on small tables, 1 unwaived"
    )
    with pytest.raises(HazardsFoundError) as raised:
        report.verdict()
    assert raised.value.message == (
        "1 unwaived hazard(s) in 002_x.sql: see the hazard events; use the safe alternative, "
        "or waive one in the file's header with -- migrate:allow <kind> <relation>: <reason>"
    )
    assert raised.value.fields == {"hazards": 1}
    assert raised.value.exit_code == 65


def test_a_waived_hazard_is_a_warning_with_its_reason():
    migration = _migration("-- migrate:allow rewrite tokens: window approved\n" + ALTER)
    report = Report(10_000, SIZES)
    finding = Finding("rewrite", "public.tokens", AE)
    with capture_logs() as logs:
        report.add(migration, [located(migration, finding), located(migration, finding)])
    waived = hazard_fields(waived=True, waiver="window approved", log_level="warning")
    assert logs == [waived, waived]
    assert (report.hazards, report.waived, report.small, report.unwaived) == (2, 2, 0, 0)
    assert report.verdict() == (
        "lint: 1 file(s), 2 hazard(s), 2 waived, 0 on small tables, 0 unwaived"
    )


def test_the_first_waiver_that_covers_a_hazard_is_used_and_the_others_reported_unused():
    migration = _migration(
        "-- migrate:allow rewrite tokens: first\n"
        "-- migrate:allow rewrite *: second\n"
        "-- migrate:allow scan sessions: never needed\n" + ALTER
    )
    report = Report(10_000, SIZES)
    with capture_logs() as logs:
        report.add(migration, [located(migration, Finding("rewrite", "public.tokens", AE))])
    unused = {"event": "waiver_unused", "logger_name": "lint", "log_level": "warning",
              "version": "002_x", "file": "002_x.sql", "kind": "rewrite"}  # fmt: skip
    assert logs == [
        hazard_fields(waived=True, waiver="first", log_level="warning"),
        {**unused, "line": 2, "relation": "*"},
        {**unused, "line": 3, "kind": "scan", "relation": "sessions"},
    ]


def test_a_lock_hazard_on_a_table_below_min_rows_is_a_warning():
    migration = _migration(ALTER)
    report = Report(20, {"public.tokens": (19, 8192), "public.sessions": (20, 8192)})
    with capture_logs() as logs:
        report.add(
            migration,
            [
                located(migration, Finding("rewrite", "public.tokens", AE)),
                located(migration, Finding("rewrite", "public.sessions", AE)),
                located(migration, Finding("rewrite", "public.tokens", AE)),
            ],
        )
    small = hazard_fields(rows=19, bytes=8192, below_min_rows=20, log_level="warning")
    assert logs == [small, hazard_fields(rows=20, bytes=8192, relation="public.sessions"), small]
    assert (report.hazards, report.waived, report.small, report.unwaived) == (3, 0, 2, 1)
    assert report.summary.endswith("3 hazard(s), 0 waived, 2 on small tables, 1 unwaived")


def test_a_table_of_unknown_size_is_not_small():
    migration = _migration(ALTER)
    report = Report(10_000, {})
    with capture_logs() as logs:
        report.add(migration, [located(migration, Finding("rewrite", "public.tokens", AE))])
    assert logs == [hazard_fields(rows=None, bytes=None)]
    assert report.unwaived == 1


def test_breaking_changes_fail_whatever_the_table_size():
    migration = _migration("ALTER TABLE small DROP COLUMN note")
    report = Report(10_000, SIZES)
    finding = Finding(
        "data_loss", "public.small.note", change="column dropped with its data",
        table="public.small",
    )  # fmt: skip
    text = "ALTER TABLE small DROP COLUMN note"
    with capture_logs() as logs:
        report.add(migration, [located(migration, finding, text, line=1)])
    assert logs == [
        hazard_fields(
            line=1, statement=text, relation="public.small.note", lock=None, rows=20, bytes=8192,
            change="column dropped with its data", kind="data_loss",
            alternative="keep a backup (CREATE TABLE ... AS SELECT) and remove the data in a "
            "later release, once no running release reads it",
        )
    ]  # fmt: skip
    assert report.unwaived == 1


def test_brief_locks_and_documented_statements_are_information():
    migration = _migration("VACUUM tokens")
    report = Report(10_000, SIZES)
    vacuum = Finding(None, "public.tokens", Lock.SHARE_UPDATE_EXCLUSIVE, observed=False,
                     note="VACUUM: SHARE UPDATE EXCLUSIVE, reads and writes go on")  # fmt: skip
    with capture_logs() as logs:
        report.add(
            migration,
            [
                located(migration, Finding(None, "public.tokens", AE), "VACUUM tokens", 1),
                located(migration, vacuum, "VACUUM tokens", 1),
            ],
        )
    common = {"logger_name": "lint", "log_level": "info", "version": "002_x",
              "file": "002_x.sql", "line": 1, "statement": "VACUUM tokens",
              "relation": "public.tokens", "rows": 50_000, "bytes": 4_096_000}  # fmt: skip
    assert logs == [
        {**common, "event": "brief_lock", "lock": "ACCESS EXCLUSIVE", "observed": True},
        {**common, "event": "not_observed", "lock": "SHARE UPDATE EXCLUSIVE", "observed": False,
         "note": f"{NOT_OBSERVED}: VACUUM: SHARE UPDATE EXCLUSIVE, reads and writes go on"},
    ]  # fmt: skip
    assert (report.files, report.hazards, report.unwaived) == (1, 0, 0)
    assert (
        report.verdict() == "lint: 1 file(s), 0 hazard(s), 0 waived, 0 on small tables, 0 unwaived"
    )


def test_the_statement_excerpt_is_one_line_of_200_characters():
    migration = _migration("UPDATE tokens SET a = 1")
    text = "UPDATE tokens\n\tSET " + ", ".join(f"c{i} = {i}" for i in range(100))
    with capture_logs() as logs:
        Report(0, {}).add(migration, [located(migration, Finding(None, "public.tokens", AE), text)])
    excerpt = " ".join(text.split())[:200]
    assert len(excerpt) == 200
    assert logs[0]["statement"] == excerpt


def test_the_message_names_each_file_with_unwaived_hazards_once():
    report = Report(10_000, SIZES)
    first, second = _migration(ALTER, "002_x.sql"), _migration(ALTER, "003_y.sql")
    rewrite = Finding("rewrite", "public.tokens", AE)
    with capture_logs():
        report.add(first, [located(first, rewrite), located(first, rewrite)])
        report.add(_migration("SELECT 1", "004_z.sql"), [])
        report.add(second, [located(second, rewrite)])
    with pytest.raises(HazardsFoundError) as raised:
        report.verdict()
    assert raised.value.message.startswith("3 unwaived hazard(s) in 002_x.sql, 003_y.sql: see")
    assert raised.value.fields == {"hazards": 3}
    assert report.summary == "lint: 3 file(s), 3 hazard(s), 0 waived, 0 on small tables, 3 unwaived"


def test_lint_complete_carries_the_counts_and_the_summary():
    report = Report(10, {"public.tokens": (5, 8192)})
    migration = _migration("-- migrate:allow scan sessions: ok\n" + ALTER)
    with capture_logs() as logs:
        report.add(
            migration,
            [
                located(migration, Finding("rewrite", "public.tokens", AE)),
                located(migration, Finding("scan", "public.sessions", AE)),
                located(migration, Finding("rewrite", "public.other", AE)),
            ],
        )
        report.complete(1234)
    assert logs[-1] == {
        "event": "lint_complete",
        "logger_name": "lint",
        "log_level": "info",
        "files": 1,
        "hazards": 3,
        "waived": 1,
        "below_min_rows": 1,
        "unwaived": 1,
        "duration_ms": 1234,
        "summary": "lint: 1 file(s), 3 hazard(s), 1 waived, 1 on small tables, 1 unwaived",
    }


# --- one change, several kinds ------------------------------------------------------------------

DROPPED = Finding("breaking", "public.tokens.scope", change="column dropped with its data",
                  table="public.tokens", also=("data_loss",))  # fmt: skip


@pytest.mark.parametrize(
    ("waiver", "expected"),
    [
        (Waiver("breaking", "tokens.scope", "", 1), True),
        (Waiver("data_loss", "tokens.scope", "", 1), True),
        (Waiver("data_loss", "*", "", 1), True),
        (Waiver("rewrite", "tokens.scope", "", 1), False),
        (Waiver("data_loss", "tokens", "", 1), False),
    ],
)
def test_a_waiver_covers_the_kind_of_a_finding_it_names(waiver, expected):
    assert waiver.covers(DROPPED) is expected


def test_a_finding_of_two_kinds_takes_a_waiver_for_each():
    breaking, data_loss = (Waiver("breaking", "tokens.scope", "a", 1),
                           Waiver("data_loss", "*", "b", 2))  # fmt: skip
    other = Waiver("breaking", "tokens", "c", 3)
    assert waivers_for(DROPPED, [other, breaking, data_loss]) == {
        "breaking": breaking, "data_loss": data_loss}  # fmt: skip
    assert waivers_for(DROPPED, [data_loss, data_loss]) == {"data_loss": data_loss}
    assert waivers_for(DROPPED, [other]) == {}
    assert waivers_for(Finding(None, "public.tokens"), [breaking]) == {}


DROP = "ALTER TABLE tokens DROP COLUMN scope"
DROP_FIELDS = {
    "statement": DROP, "relation": "public.tokens.scope", "lock": None, "rows": 50_000,
    "bytes": 4_096_000, "kind": "breaking", "kinds": ["breaking", "data_loss"],
    "change": "column dropped with its data",
    "alternative": "expand and contract: add the new object beside the old one, deploy the "
    "release that uses it, and drop or rename the old one in a later release (a rename can go "
    "through a view); keep a backup (CREATE TABLE ... AS SELECT) and remove the data in a "
    "later release, once no running release reads it",
}  # fmt: skip


def test_the_two_waivers_written_for_a_dropped_column_waive_its_one_finding():
    migration = _migration(
        "-- migrate:allow breaking tokens.scope: v42 reads none\n"
        "-- migrate:allow data_loss tokens.scope: backed up\n" + DROP
    )
    report = Report(10_000, SIZES)
    with capture_logs() as logs:
        report.add(migration, [located(migration, DROPPED, DROP)])
    assert logs == [hazard_fields(**DROP_FIELDS, waived=True, log_level="warning",
                                  waiver="v42 reads none; backed up")]  # fmt: skip
    assert (report.hazards, report.waived, report.unwaived) == (1, 1, 0)


def test_one_kind_of_a_finding_waived_leaves_it_a_hazard_and_says_which_kind():
    migration = _migration("-- migrate:allow breaking tokens.scope: v42 reads none\n" + DROP)
    report = Report(10_000, SIZES)
    with capture_logs() as logs:
        report.add(migration, [located(migration, DROPPED, DROP)])
    assert logs == [hazard_fields(**DROP_FIELDS, unwaived_kinds=["data_loss"])]
    assert (report.hazards, report.waived, report.small, report.unwaived) == (1, 0, 0, 1)
    assert report.unwaived_files == ["002_x.sql"]
    with pytest.raises(HazardsFoundError):
        report.verdict()


def test_a_finding_of_contract_kinds_is_never_small():
    migration = _migration(DROP)
    report = Report(10_000, {"public.tokens": (5, 8192)})
    with capture_logs() as logs:
        report.add(migration, [located(migration, DROPPED, DROP)])
    assert logs[0]["log_level"] == "error"
    assert (report.small, report.unwaived) == (0, 1)


# --- statements that cannot run twice -----------------------------------------------------------


def qualified(name: str) -> str:
    return "public." + name


@pytest.mark.parametrize(
    ("sqlstate", "message", "relation"),
    [
        ("42P07", 'relation "audit_log" already exists', "public.audit_log"),
        ("42701", 'column "region" of relation "tokens" already exists', "public.tokens.region"),
        ("42710", 'type "mood" already exists', "public.mood"),
        ("42883", "function touch() does not exist", "(statement)"),
        ("23505", 'duplicate key value violates unique constraint "flags_pkey"',
         "public.flags_pkey"),
    ],
)  # fmt: skip
def test_a_second_run_that_fails_is_a_rerun_hazard_on_what_it_names(sqlstate, message, relation):
    finding = rerun_finding(sqlstate, message, qualified)
    assert finding == Finding(
        "rerun", relation, change=f"a second run fails: {message} ({sqlstate})"
    )
    assert finding.kinds == ("rerun",)


@pytest.mark.parametrize("sqlstate", ["2D000", "25001"])
def test_a_second_run_refused_for_the_transaction_it_was_tried_in_says_nothing(sqlstate):
    assert rerun_finding(sqlstate, "cannot ...", qualified) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CREATE INDEX CONCURRENTLY t_a ON t (a)", True),
        ("create unique index concurrently if not exists t_a on t (a)", True),
        ("CREATE INDEX CONCURRENTLY ON t (a)", False),  # a second run builds a second index
        ("CREATE UNIQUE INDEX CONCURRENTLY ON t (a)", False),
        ("DROP INDEX CONCURRENTLY t_a", True),
        ("VACUUM t", True),
        ("ALTER SYSTEM SET work_mem = '8MB'", False),  # never run on the scratch server
        ("CREATE DATABASE other", False),
    ],
)
def test_which_statements_refused_in_a_transaction_run_a_second_time(text, expected):
    assert reruns_on_scratch(Statement(text, 0, 1)) is expected


# --- unbatched: an UPDATE or DELETE of a large table in one statement ---------------------------

UPDATE = "UPDATE tokens SET scope = 'read'"
UNBATCHED_UPDATE = Finding(
    "unbatched", "public.tokens", change="rows updated in one statement (UPDATE)",
    table="public.tokens",
)  # fmt: skip
UNBATCHED_DELETE = Finding(
    "data_loss", "public.tokens", change="rows removed (DELETE)", table="public.tokens",
    also=("unbatched",),
)  # fmt: skip


@pytest.mark.parametrize(
    ("finding", "rows", "batched", "kinds"),
    [
        (UNBATCHED_UPDATE, 100, False, ("unbatched",)),  # at the threshold: large
        (UNBATCHED_UPDATE, 99, False, None),  # below: nothing
        (UNBATCHED_UPDATE, None, False, None),  # no estimate: not known to be large
        (UNBATCHED_UPDATE, 10**6, True, None),  # the batched form itself
        (UNBATCHED_DELETE, 100, False, ("data_loss", "unbatched")),
        (UNBATCHED_DELETE, 99, False, ("data_loss",)),  # the data loss stays
        (UNBATCHED_DELETE, 10**6, True, ("data_loss",)),
        (Finding("rewrite", "public.tokens", AE), 1, False, ("rewrite",)),  # other kinds pass
    ],
)
def test_unbatched_only_on_a_large_table_and_outside_the_batched_form(
    finding, rows, batched, kinds
):
    migration = _migration(UPDATE)
    found = batch_sized(located(migration, finding, UPDATE), rows, 100, batched)
    assert (found.finding.kinds if found else None) == kinds
    if found and kinds:
        assert found.finding.kind == kinds[0]


def test_an_update_of_a_large_table_fails_the_lint_with_the_batched_form_naming_it():
    report = Report(10_000, SIZES, batch_rows=50_000)
    migration = _migration(UPDATE)
    with capture_logs() as logs:
        report.add(migration, [located(migration, UNBATCHED_UPDATE, UPDATE)])
    [event] = logs
    assert (event["log_level"], event["kind"], event["kinds"]) == (
        "error",
        "unbatched",
        ["unbatched"],
    )
    assert event["rows"] == 50_000
    assert event["change"] == "rows updated in one statement (UPDATE)"
    assert "-- migrate:batch table=public.tokens key=" in event["alternative"]
    assert "-- migrate:phase post" in event["alternative"]
    with pytest.raises(HazardsFoundError):
        report.verdict()


def test_a_delete_of_a_large_table_is_one_finding_of_both_kinds_waived_by_both():
    lines = (
        "-- migrate:allow data_loss tokens: expired rows only\n"
        "-- migrate:allow unbatched tokens: at night\n"
    )
    migration = _migration(lines + "DELETE FROM tokens")
    report = Report(10_000, SIZES, batch_rows=50_000)
    with capture_logs() as logs:
        report.add(migration, [located(migration, UNBATCHED_DELETE, "DELETE FROM tokens")])
    [event] = logs
    assert event["kinds"] == ["data_loss", "unbatched"]
    assert (event["log_level"], event["waiver"]) == ("warning", "expired rows only; at night")
    assert "keep a backup" in event["alternative"] and "-- migrate:batch" in event["alternative"]
    assert report.verdict().endswith("1 waived, 0 on small tables, 0 unwaived")


def test_an_update_of_a_small_table_is_no_event_and_lint_min_rows_does_not_apply():
    report = Report(0, SIZES, batch_rows=50_001)  # LINT_MIN_ROWS=0 makes nothing small
    migration = _migration(UPDATE)
    with capture_logs() as logs:
        report.add(migration, [located(migration, UNBATCHED_UPDATE, UPDATE)])
    assert logs == []
    assert report.hazards == 0
    large = Report(10**9, SIZES, batch_rows=50_000)  # a huge LINT_MIN_ROWS passes no unbatched
    with capture_logs():
        large.add(migration, [located(migration, UNBATCHED_UPDATE, UPDATE)])
    assert (large.small, large.unwaived) == (0, 1)


@pytest.mark.parametrize(
    ("scans", "bounded"),
    [
        ([("tokens", "((tokens.id >= $1) AND (tokens.id <= $2))")], True),
        ([("t", "(($1 <= t.id) AND (t.id <= $2) AND (t.scope = 'a'::text))")], True),
        ([("t", '((t."id" >= ($1)::bigint) AND (t."id" <= ($2)::bigint))')], True),
        # The outer scan unbounded, the one a CTE joins it with bounded: the rows are bounded.
        ([("tokens", ""), ("tokens_1", "((tokens_1.id >= $1) AND (tokens_1.id <= $2))")], True),
        ([("tokens", "((tokens.other >= $1) AND (tokens.other <= $2))")], False),  # another column
        ([("tokens", "((tokens.id >= $1) AND (tokens.n <= $2))")], False),  # one bound on the key
        ([("tokens", "((tokens.idx >= $1) AND (tokens.idx <= $2))")], False),  # a longer name
        ([("tokens", "((tokens.id >= $12) AND (tokens.id <= $2))")], False),  # not $1
        ([("tokens", "((o.id >= $1) AND (o.id <= $2))")], False),  # another table's id
        ([], False),  # no scan of the table at all
    ],
)
def test_a_batch_statement_must_bound_the_key_of_the_walked_table_by_both_parameters(
    scans, bounded
):
    found = bounds_finding("public.tokens", "id", scans)
    if bounded:
        assert found is None
        return
    assert found is not None
    assert (found.kind, found.relation, found.table) == (
        "unbounded",
        "public.tokens",
        "public.tokens",
    )
    assert found.change == (
        "no scan of public.tokens in PostgreSQL's plan of the statement compares id with both $1 "
        "and $2: its batches would not each take their own rows"
    )
    assert "WHERE <key> BETWEEN $1 AND $2" in safe_alternative("unbounded", "", "public.tokens")
