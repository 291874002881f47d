"""The hazard lint on a real PostgreSQL: the labelled corpus, waivers, LINT_MIN_ROWS, the target
left untouched, the scratch database dropped, LINT_BEFORE_APPLY and the dry run.

Each corpus file holds one statement and its label on the first line:
``-- expect: <kind> <relation>`` for a hazard, ``-- expect: safe`` otherwise. It runs as the one
pending file on a target built from setup.sql (tables of 2,000 rows), with LINT_MIN_ROWS=0.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from migrator.lint.hazards import KINDS, LOCK_KINDS
from tests.conftest import REPO, Database, create_database, drop_database, launch

HERE = Path(__file__).parent
CORPUS = sorted((HERE / "corpus").glob("*.sql"))
CONTRACT_CORPUS = sorted((HERE / "contract_corpus").glob("*.sql"))
SETUP = HERE / "setup.sql"
CONTRACT_KINDS = {"breaking", "data_loss"}
LABEL_RE = re.compile(r"^-- expect: (?:safe|(?P<kind>\w+) (?P<relation>\S+))$")


def label(path: Path) -> tuple[str, str] | None:
    """(kind, relation) of a hazard file, None for a safe one."""
    match = LABEL_RE.match(path.read_text().splitlines()[0])
    assert match, f"{path.name}: the first line must be its label"
    return (match["kind"], match["relation"]) if match["kind"] else None


def unwaived(result, kinds=LOCK_KINDS) -> set[tuple[str, str]]:
    """(kind, relation) of the unwaived hazards of ``kinds`` (the lock corpus: lock kinds); a
    finding with two kinds (a dropped column: breaking and data_loss) gives both."""
    return {
        (kind, e["relation"])
        for e in result.events_named("hazard")
        if e["level"] == "error"
        for kind in e.get("unwaived_kinds", e["kinds"])
        if kind in kinds
    }


def scratch_databases(server) -> list[str]:
    with Database(server, "postgres").connect() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_lint\\_%'")
        return [row[0] for row in rows]


@pytest.fixture(scope="module")
def target(pg_server, tmp_path_factory):
    """A database with setup.sql applied by the runner, and analyzed (sizes on the target)."""
    database = create_database(pg_server)
    folder = tmp_path_factory.mktemp("setup")
    shutil.copy(SETUP, folder / "001_setup.sql")
    result = launch(env=database.env(MIGRATIONS_DIR=str(folder)), workdir=folder).wait()
    assert result.returncode == 0, result
    with database.connect() as conn:
        conn.execute("ANALYZE")
    yield database
    drop_database(database)


@pytest.fixture
def lint_env(target, pg_server, migrations):
    """Runner variables to lint ``migrations`` (001_setup.sql already there) against the target."""
    shutil.copy(SETUP, migrations.path / "001_setup.sql")
    return target.env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
        LINT_MIN_ROWS="0",
    )


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_file(path, lint_env, target, migrations, run_runner):
    shutil.copy(path, migrations.path / f"002_{path.name}")
    result = run_runner("lint", env=lint_env)
    expected = label(path)
    # Breaking changes and data loss (contract_corpus/) may fail a lock-safe file too.
    assert result.returncode == (65 if unwaived(result, KINDS) else 0), result
    if expected is None:
        assert unwaived(result) == set()
        return
    assert result.returncode == 65, result
    assert expected in unwaived(result)
    hazard = next(e for e in result.events_named("hazard") if e["relation"] == expected[1])
    assert hazard["version"] == f"002_{path.stem}"
    lines = path.read_text().splitlines()
    assert hazard["line"] == next(i for i, text in enumerate(lines, 1) if not text.startswith("--"))
    # The target's estimates after ANALYZE, read from its catalog.
    size = (
        "SELECT reltuples::bigint, relpages::bigint * 8192 FROM pg_class WHERE oid = %s::regclass"
    )
    assert (hazard["rows"], hazard["bytes"]) == target.query(size, expected[1])[0]
    assert hazard["rows"] >= 100
    assert hazard["lock"] in ("SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE")
    # VACUUM FULL cannot run in a transaction: classified from the documentation, and said so.
    assert hazard["observed"] is not path.stem.startswith("hazard_vacuum_full")
    assert result.events_named("hazards_found")[0]["exit_code"] == 65


def labels(path: Path) -> set[tuple[str, ...]]:
    """Every ``-- expect:`` line of a contract_corpus file (none for a safe one)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("-- expect: ")]
    return {tuple(line.split()[2:4]) for line in lines if line != "-- expect: safe"}


@pytest.mark.parametrize("path", CONTRACT_CORPUS, ids=[p.stem for p in CONTRACT_CORPUS])
def test_contract_corpus_file(path, lint_env, target, migrations, run_runner):
    """Breaking changes and data loss, from the scratch catalog and statistics."""
    shutil.copy(path, migrations.path / f"002_{path.name}")
    result = run_runner("lint", env=lint_env)
    found = unwaived(result, ("breaking", "data_loss"))
    assert found == labels(path), result
    assert result.returncode == (65 if unwaived(result, KINDS) else 0), result
    # One change, one finding: a dropped column is one event with both kinds, a partitioned
    # table's partitions fold into it.
    contract = [e for e in result.events_named("hazard") if CONTRACT_KINDS & {*e["kinds"]}]
    assert len(contract) == len({e["relation"] for e in contract}), result
    for event in result.events_named("hazard"):
        if "data_loss" in event["kinds"]:  # the rows of its table on the target
            table = ".".join(event["relation"].split(".")[:2])
            rows = "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass"
            assert event["rows"] == target.scalar(rows, table) > 0
        if CONTRACT_KINDS & {*event["kinds"]}:
            assert event["change"]
            assert event["alternative"]


def test_the_corpus_is_big_and_balanced():
    labels = [label(path) for path in CORPUS]
    assert len(labels) >= 40
    assert sum(1 for x in labels if x) >= 20
    assert sum(1 for x in labels if x is None) >= 20


def test_a_waived_hazard_passes_and_the_target_is_not_changed(
    lint_env, target, migrations, run_runner, pg_server
):
    migrations.write(
        "002_bigint.sql",
        "-- migrate:allow rewrite tokens: maintenance window on Sunday\n"
        "-- migrate:allow breaking tokens.n: every running release reads n as bigint\n"
        "ALTER TABLE tokens ALTER COLUMN n TYPE bigint;\n",
    )
    before = target.pg_dump()
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 0, result
    [hazard, breaking] = result.events_named("hazard")
    assert (breaking["kind"], breaking["relation"], breaking["level"]) == (
        "breaking",
        "public.tokens.n",
        "warning",
    )
    assert breaking["change"] == "column changes from integer to bigint"
    assert hazard["level"] == "warning"
    assert hazard["waiver"] == "maintenance window on Sunday"
    assert hazard["alternative"].startswith("expand and contract")
    assert target.pg_dump() == before
    assert scratch_databases(pg_server) == []
    # The runner itself accepts the directive.
    applied = run_runner(env=lint_env)
    assert applied.returncode == 0, applied
    waived = applied.events_named("hazard_waived")
    assert [(w["kind"], w["relation"], w["line"]) for w in waived] == [
        ("rewrite", "tokens", 1),
        ("breaking", "tokens.n", 2),
    ]
    assert waived[0]["reason"] == "maintenance window on Sunday"
    [done] = [e for e in applied.events_named("migration_applied") if e["version"] == "002_bigint"]
    assert done["locks"] == {"public.tokens": "ACCESS EXCLUSIVE"}
    assert done["transaction_ms"] >= 0
    with target.connect() as conn:  # leave the module's target as it was
        conn.execute("ALTER TABLE tokens ALTER COLUMN n TYPE int")
        conn.execute("DELETE FROM schema_migrations WHERE version = '002_bigint'")


def test_a_waiver_without_a_reason_is_refused(lint_env, migrations, run_runner):
    migrations.write(
        "002_bigint.sql",
        "-- migrate:allow rewrite tokens\nALTER TABLE tokens ALTER COLUMN n TYPE bigint;\n",
    )
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 65, result
    error = result.events_named("invalid_migration_files")[0]
    assert error["line"] == 1
    assert "the reason is required" in error["error"]


def test_small_tables_pass_below_lint_min_rows(lint_env, migrations, run_runner):
    migrations.write("002_index.sql", "CREATE INDEX tokens_scope ON tokens (scope);")
    env = {k: v for k, v in lint_env.items() if k != "LINT_MIN_ROWS"}  # default: 10,000
    result = run_runner("lint", env=env)
    assert result.returncode == 0, result
    [hazard] = result.events_named("hazard")
    assert (hazard["level"], hazard["below_min_rows"], hazard["rows"]) == ("warning", 10000, 2000)
    assert run_runner("lint", env={**env, "LINT_MIN_ROWS": "1000"}).returncode == 65


def test_what_the_same_release_creates_is_not_a_hazard(lint_env, migrations, run_runner):
    migrations.add({
        "002_grants.sql": "CREATE TABLE grants (id int, token_id bigint);",
        "003_grants_index.sql": "CREATE INDEX grants_token ON grants (token_id);",
        "004_fill.sql": "INSERT INTO grants SELECT id, id FROM tokens;",
        "005_type.sql": "ALTER TABLE grants ALTER COLUMN token_id TYPE text;",
    })  # fmt: skip
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 0, result
    assert result.events_named("hazard") == []


def test_vacuum_full_without_a_table_rewrites_every_table(lint_env, migrations, run_runner):
    migrations.add({"002_vacuum.sql": "VACUUM FULL;"})
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 65, result
    assert unwaived(result) == {("rewrite", "(every table)")}
    assert result.events_named("hazard")[0]["observed"] is False


def test_without_a_target_each_file_meets_the_files_before_it(
    unborn_database, pg_server, migrations, run_runner
):
    migrations.add({
        "001_tokens.sql": "CREATE TABLE tokens (id int, scope text);",
        "002_index.sql": "CREATE INDEX tokens_scope ON tokens (scope);",
    })  # fmt: skip
    env = unborn_database.env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )
    result = run_runner("lint", env=env)
    assert result.returncode == 65, result
    assert unwaived(result) == {("index_build", "public.tokens")}
    assert result.events_named("lint_started")[0]["min_rows"] == 0
    assert scratch_databases(pg_server) == []
    with Database(pg_server, "postgres").connect() as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (unborn_database.name,)
        )
        assert exists.fetchone() is None


def test_a_shadow_database_instead_of_admin_credentials(
    target, pg_server, other_database, migrations, run_runner
):
    shutil.copy(SETUP, migrations.path / "001_setup.sql")
    migrations.write("002_not_null.sql", "ALTER TABLE tokens ALTER COLUMN n SET NOT NULL;")
    env = target.env(MIGRATIONS_DIR=str(migrations.path), LINT_MIN_ROWS="0")
    base = f"postgresql://postgres@127.0.0.1:{pg_server.port}/"
    url = base.replace("@", f":{pg_server.password}@") + other_database.name
    # In the environment: a password on the command line would show in ps.
    result = run_runner("lint", env={**env, "LINT_SHADOW_URL": url})
    assert result.returncode == 65, result
    assert unwaived(result) == {("scan", "public.tokens")}
    assert "CHECK (n IS NOT NULL) NOT VALID" in result.events_named("hazard")[0]["alternative"]
    # The shadow is left filled; lint refuses it rather than empty it.
    again = run_runner("lint", env={**env, "LINT_SHADOW_URL": url})
    assert again.returncode == 78, again
    assert "not empty, it holds public." in again.events_named("invalid_configuration")[0]["error"]
    assert run_runner("lint", env=env).returncode == 78  # neither admin nor shadow
    # The flag, with the password left to PGPASSWORD.
    fresh = create_database(pg_server)
    try:
        flag = run_runner("lint", "--shadow-url", base + fresh.name,
                          env={**env, "PGPASSWORD": pg_server.password})  # fmt: skip
        assert unwaived(flag) == {("scan", "public.tokens")}, flag
    finally:
        drop_database(fresh)


def test_lint_before_apply_refuses_and_applies_nothing(lint_env, target, migrations, run_runner):
    migrations.write("002_index.sql", "CREATE INDEX tokens_scope ON tokens (scope);")
    result = run_runner(env={**lint_env, "LINT_BEFORE_APPLY": "true"})
    assert result.returncode == 65, result
    assert result.events_named("hazards_found")
    assert result.events_named("migration_started") == []
    assert target.scalar("SELECT to_regclass('tokens_scope')") is None
    dry = run_runner("--dry-run", env=lint_env)
    assert dry.returncode == 0, dry
    assert unwaived(dry) == {("index_build", "public.tokens")}
    assert dry.events_named("lint_complete")[0]["unwaived"] == 1


def test_squawk_on_the_same_corpus_misses_what_only_the_server_can_tell():
    """The figures of bench/lint_compare.py for squawk (the lint's side is test_corpus_file)."""
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "lint_compare.py"), "--squawk-only", "--json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    squawk = json.loads(run.stdout)["squawk"]
    assert squawk["hazards"] == sum(1 for path in CORPUS if label(path))
    for missed in ("refresh_materialized_view", "cluster", "set_unlogged", "vacuum_full"):
        assert f"hazard_{missed}.sql" in squawk["missed"]
    for flagged in ("set_not_null_with_validated_check", "widen_varchar"):
        assert f"safe_{flagged}.sql" in squawk["flagged_safe"]


def test_a_procedure_that_commits_runs_bare_and_is_listed_as_not_observed(
    lint_env, migrations, run_runner
):
    migrations.write(
        "002_backfill.sql",
        "-- migrate:no-transaction\n"
        "CREATE OR REPLACE PROCEDURE fill() LANGUAGE plpgsql AS $$ BEGIN\n"
        "  UPDATE legacy_grants SET note = note; COMMIT; END $$;\n"
        "CALL fill();\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS legacy_grants_id ON legacy_grants (id);\n",
    )
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 0, result
    notes = {e["line"]: e["note"] for e in result.events_named("not_observed")}
    assert "commits its own transactions" in notes[4]
    assert "concurrent build" in notes[5]
    assert notes[5].startswith("not observed (it cannot run inside a transaction)")


def test_nothing_pending_needs_no_scratch_database(lint_env, run_runner):
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 0, result
    assert result.events_named("lint_complete")[0]["files"] == 0
    assert result.events_named("lint_scratch_created") == []


def test_a_database_name_of_many_byte_characters_gets_a_scratch_name_the_server_keeps(
    pg_server, migrations, run_runner
):
    # 25 'ü' (two bytes each) and 12 hex digits: 62 bytes, a valid name. The scratch name keeps
    # 47 bytes of it, in whole characters, and its random part. Cut at 47 characters it was 78
    # bytes: the server kept 63, so the random part was lost (two lints of one database would
    # meet on one scratch name) and the log named a database that did not exist.
    name = "ü" * 25 + uuid.uuid4().hex[:12]
    migrations.add({"001_tokens.sql": "CREATE TABLE tokens (id int);"})
    env = Database(pg_server, name).env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )
    result = run_runner("lint", env=env)
    assert result.returncode == 0, result
    [created] = result.events_named("lint_scratch_created")
    assert re.fullmatch("ü{23}_lint_[0-9a-f]{10}", created["scratch"])
    assert scratch_databases(pg_server) == []


def test_a_finding_inside_a_goose_block_names_its_own_line_and_statement(
    unborn_database, pg_server, migrations, run_runner
):
    """A StatementBegin/End block was observed as one statement: every finding pointed at the
    block's first line and showed its first statement, not the one the finding is about."""
    migrations.add({
        "00001_tokens.sql": "-- +goose Up\nCREATE TABLE tokens (id int, scope text);\n",
        "00002_index.sql": (
            "-- +goose Up\n-- +goose StatementBegin\n"
            "CREATE TABLE grants (id int);\n"
            "INSERT INTO grants VALUES (1);\n"
            "CREATE INDEX tokens_scope ON tokens (scope);\n"
            "-- +goose StatementEnd\n"
        ),
        "00003_not_null.sql": (
            "-- +goose NO TRANSACTION\n-- +goose Up\n-- +goose StatementBegin\n"
            "CREATE TABLE other (id int);\n"
            "ALTER TABLE tokens ALTER COLUMN scope SET NOT NULL;\n"
            "-- +goose StatementEnd\n"
        ),
    })  # fmt: skip
    env = unborn_database.env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )
    result = run_runner("lint", env=env)
    assert result.returncode == 65, result
    hazards = result.events_named("hazard")
    # Every finding (the scan also breaks the column's writers) names the statement it is about.
    assert {(e["version"], e["line"], e["statement"]) for e in hazards} == {
        ("00002_index", 5, "CREATE INDEX tokens_scope ON tokens (scope)"),
        ("00003_not_null", 4, "CREATE TABLE other (id int)"),  # cannot run twice
        ("00003_not_null", 5, "ALTER TABLE tokens ALTER COLUMN scope SET NOT NULL"),
    }
    assert unwaived(result) == {("index_build", "public.tokens"), ("scan", "public.tokens")}
    assert unwaived(result, kinds={"rerun"}) == {("rerun", "public.other")}


def hazards(result, kind):
    return [e for e in result.events_named("hazard") if kind in e["kinds"]]


def test_a_dropped_column_is_one_finding_and_the_two_waivers_written_for_it_still_cover_it(
    lint_env, migrations, run_runner
):
    migrations.write(
        "002_drop.sql",
        "-- migrate:allow breaking tokens.scope: v42 no longer reads it\n"
        "-- migrate:allow data_loss tokens.scope: copied to scopes_backup in 001\n"
        "ALTER TABLE tokens DROP COLUMN scope;\n",
    )
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 0, result
    [drop] = [e for e in result.events_named("hazard") if e["relation"] == "public.tokens.scope"]
    assert (drop["kind"], drop["kinds"], drop["level"]) == (
        "breaking", ["breaking", "data_loss"], "warning")  # fmt: skip
    assert drop["waiver"] == "v42 no longer reads it; copied to scopes_backup in 001"
    assert drop["change"] == "column dropped with its data"
    assert "expand and contract" in drop["alternative"] and "backup" in drop["alternative"]
    assert result.events_named("waiver_unused") == []
    # One of the two kinds waived: the finding is still a hazard, for the other one.
    migrations.write(
        "002_drop.sql",
        "-- migrate:allow breaking tokens.scope: v42 no longer reads it\n"
        "ALTER TABLE tokens DROP COLUMN scope;\n",
    )
    half = run_runner("lint", env=lint_env)
    assert half.returncode == 65, half
    [drop] = [e for e in half.events_named("hazard") if e["relation"] == "public.tokens.scope"]
    assert (drop["level"], drop["unwaived_kinds"]) == ("error", ["data_loss"])
    assert half.events_named("lint_complete")[0]["unwaived"] == 1


def test_the_release_is_judged_across_its_files_at_the_statement_that_made_the_difference(
    lint_env, migrations, run_runner
):
    migrations.add({
        "002_region.sql": "ALTER TABLE tokens ADD COLUMN region text NOT NULL DEFAULT 'eu';",
        "003_region_required.sql": "SELECT 1;\nALTER TABLE tokens ALTER COLUMN region DROP DEFAULT;",
    })  # fmt: skip
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 65, result
    [required] = hazards(result, "breaking")
    assert (required["version"], required["line"], required["relation"]) == (
        "003_region_required", 2, "public.tokens.region")  # fmt: skip
    assert required["change"] == (
        "new column is NOT NULL without a default (INSERTs that omit it fail)"
    )


def test_a_not_null_check_then_set_not_null_is_one_change_at_the_check(
    lint_env, migrations, run_runner
):
    migrations.write(
        "002_n_required.sql",
        "ALTER TABLE tokens ADD CONSTRAINT tokens_n_nn CHECK (n IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE tokens VALIDATE CONSTRAINT tokens_n_nn;\n"
        "ALTER TABLE tokens ALTER COLUMN n SET NOT NULL;\n",
    )
    result = run_runner("lint", env=lint_env)
    [required] = hazards(result, "breaking")
    assert (required["line"], required["relation"]) == (1, "public.tokens.n")
    assert required["change"].startswith("column becomes NOT NULL without a default")


def test_a_statement_of_a_non_transactional_file_that_cannot_run_twice(
    lint_env, migrations, run_runner
):
    migrations.write(
        "002_no_tx.sql",
        "-- migrate:allow rerun tokens_client: the runner drops an invalid index first\n"
        "-- migrate:no-transaction\n"
        "CREATE TABLE IF NOT EXISTS flags (id int);\n"
        "ALTER TABLE flags ADD COLUMN IF NOT EXISTS enabled boolean;\n"
        "CREATE TABLE audit_log (id int);\n"
        "ALTER TABLE tokens ADD COLUMN region text;\n"
        "INSERT INTO flags VALUES (1, true);\n"
        "CREATE INDEX CONCURRENTLY tokens_region ON tokens (region);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS tokens_n ON tokens (n);\n"
        "CREATE INDEX CONCURRENTLY tokens_client ON tokens (client_id);\n"
        "DROP INDEX CONCURRENTLY IF EXISTS tokens_n;\n",
    )
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 65, result
    found = {(e["line"], e["relation"], e["level"]) for e in hazards(result, "rerun")}
    assert found == {
        (5, "public.audit_log", "error"),
        (6, "public.tokens.region", "error"),
        (8, "public.tokens_region", "error"),
        (10, "public.tokens_client", "warning"),
    }
    audit = next(e for e in hazards(result, "rerun") if e["line"] == 5)
    assert audit["change"] == 'a second run fails: relation "audit_log" already exists (42P07)'
    assert "IF NOT EXISTS" in audit["alternative"]
    assert audit["observed"] is True
    # The same statements in a transactional file: a failure leaves nothing, nothing to say.
    migrations.write("002_no_tx.sql", "CREATE TABLE audit_log (id int);\n")
    assert hazards(run_runner("lint", env=lint_env), "rerun") == []


def test_an_update_or_delete_of_a_large_table_in_one_statement_asks_for_the_batched_form(
    lint_env, migrations, run_runner
):
    migrations.add({
        "002_backfill.sql": "UPDATE tokens SET n = id;",
        "003_purge.sql": "-- migrate:allow data_loss sessions: closed sessions only\n"
                         "DELETE FROM sessions WHERE id > 1000;",
        "004_small.sql": "UPDATE clients SET name = upper(name);",
        "005_waived.sql": "-- migrate:allow unbatched audit_2024: archive, nobody writes it\n"
                          "UPDATE audit_2024 SET id = id + 1;",
    })  # fmt: skip
    result = run_runner("lint", env={**lint_env, "LINT_BATCH_ROWS": "1000"})
    assert result.returncode == 65, result
    assert result.events_named("lint_started")[0]["batch_rows"] == 1000
    hazards = {e["version"]: e for e in result.events_named("hazard")}
    assert set(hazards) == {"002_backfill", "003_purge", "005_waived"}  # clients: 100 rows
    update = hazards["002_backfill"]
    assert (update["level"], update["kinds"], update["relation"]) == (
        "error",
        ["unbatched"],
        "public.tokens",
    )
    assert (update["rows"], update["line"]) == (2000, 1)
    assert update["change"] == "rows updated in one statement (UPDATE)"
    assert "-- migrate:batch table=public.tokens key=" in update["alternative"]
    # One change, one finding: the DELETE is data loss and unbatched; one waiver covers one.
    delete = hazards["003_purge"]
    assert (delete["kinds"], delete["unwaived_kinds"]) == (
        ["data_loss", "unbatched"],
        ["unbatched"],
    )
    assert (hazards["005_waived"]["level"], hazards["005_waived"]["waiver"]) == (
        "warning",
        "archive, nobody writes it",
    )
    # LINT_BATCH_ROWS defaults to 100,000: tables of 2,000 rows are small.
    default = run_runner("lint", env=lint_env)
    assert default.returncode == 0, default
    assert [e["kinds"] for e in default.events_named("hazard")] == [["data_loss"]]
    assert default.events_named("lint_started")[0]["batch_rows"] == 100_000


def test_lint_phase_post_meets_the_pending_pre_files_applied_and_judges_only_the_post_ones(
    lint_env, migrations, run_runner
):
    migrations.add({
        "002_add_scope_v2.sql": "ALTER TABLE tokens ADD COLUMN scope_v2 text;",
        "003_backfill.sql": "-- migrate:phase post\nUPDATE tokens SET scope_v2 = scope;",
        "004_index.sql": "CREATE INDEX tokens_scope ON tokens (scope);",
    })  # fmt: skip
    post = run_runner("lint", "--phase", "post", env=lint_env)
    assert post.returncode == 0, post
    [started] = post.events_named("lint_started")
    assert started["pending"] == ["003_backfill"]
    assert started["applied_first"] == ["002_add_scope_v2", "004_index"]
    findings = ("hazard", "brief_lock", "not_observed")
    assert [e for e in post.events if e["event"] in findings] == []  # no ADD COLUMN, no index
    # The pre phase lints the pre files only: the index build, not the backfill.
    pre = run_runner("lint", "--phase", "pre", env={**lint_env, "LINT_BATCH_ROWS": "1"})
    assert pre.returncode == 65, pre
    assert unwaived(pre, KINDS) == {("index_build", "public.tokens")}
    assert pre.events_named("lint_started")[0]["applied_first"] == []


def test_without_a_target_lint_phase_post_builds_the_pre_files_first(
    unborn_database, pg_server, migrations, run_runner
):
    migrations.add({
        "001_tokens.sql": "CREATE TABLE tokens (id int, scope text);",
        "002_post.sql": "-- migrate:phase post\nALTER TABLE tokens ADD COLUMN scope_v2 text;",
        "003_index.sql": "CREATE INDEX tokens_scope ON tokens (scope);",
    })  # fmt: skip
    env = unborn_database.env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )
    post = run_runner("lint", "--phase", "post", env=env)
    assert post.returncode == 0, post
    [started] = post.events_named("lint_started")
    assert (started["pending"], started["applied_first"]) == (
        ["002_post"],
        ["001_tokens", "003_index"],
    )
    assert unwaived(run_runner("lint", env=env), KINDS) == {("index_build", "public.tokens")}


BATCH_HEADER = "-- migrate:phase post\n-- migrate:batch table=public.tokens key=id size=100\n"


def test_a_batch_file_runs_once_over_the_whole_key_range_and_is_not_unbatched(
    lint_env, migrations, run_runner
):
    migrations.add({
        "002_backfill.sql": BATCH_HEADER
        + "UPDATE tokens SET scope = 'write' WHERE id BETWEEN $1 AND $2 AND scope = 'read';",
        # Holds only when the backfill reached every row of the scratch table.
        "003_check.sql": "-- migrate:phase post\n"
        "-- migrate:allow scan tokens: the test's own proof\n"
        "ALTER TABLE tokens ADD CONSTRAINT tokens_written CHECK (scope = 'write');",
    })  # fmt: skip
    result = run_runner("lint", env={**lint_env, "LINT_BATCH_ROWS": "1000"})
    assert result.returncode == 0, result
    assert [e["version"] for e in result.events_named("hazard")] == ["003_check"]
    # A batched DELETE still removes rows: data loss, not unbatched.
    migrations.write(
        "002_backfill.sql", BATCH_HEADER + "DELETE FROM tokens WHERE id BETWEEN $1 AND $2;"
    )
    (migrations.path / "003_check.sql").unlink()
    deleted = run_runner("lint", env={**lint_env, "LINT_BATCH_ROWS": "1000"})
    assert deleted.returncode == 65, deleted
    assert unwaived(deleted, KINDS) == {("data_loss", "public.tokens")}
    assert [e["kinds"] for e in deleted.events_named("hazard")] == [["data_loss"]]


@pytest.mark.parametrize(
    ("header", "statement", "problem"),
    [
        (BATCH_HEADER, "UPDATE tokens SET n = 0 WHERE id >= $1;", "does not use $2"),
        (
            "-- migrate:phase post\n-- migrate:batch table=clients key=name\n",
            "UPDATE clients SET id = id WHERE name BETWEEN $1 AND $2;",
            "no valid btree index of the table starts with name",
        ),
    ],
    ids=["a_bound_missing", "an_unindexed_key"],
)
def test_a_batch_file_the_runner_refuses_is_refused_by_the_lint_in_one_line(
    header, statement, problem, lint_env, migrations, run_runner, pg_server
):
    migrations.write("002_backfill.sql", header + statement)
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 65, result
    [error] = result.events_named("invalid_migration_files")
    assert error["file"].endswith("002_backfill.sql")
    assert problem in error["error"] and "\n" not in error["error"]
    assert result.events_named("hazard") == []
    assert scratch_databases(pg_server) == []


def test_a_batch_statement_that_bounds_another_column_is_unbounded(
    lint_env, migrations, run_runner
):
    migrations.write(
        "002_backfill.sql",
        BATCH_HEADER + "UPDATE tokens SET scope = 'write' WHERE n BETWEEN $1 AND $2;",
    )
    result = run_runner("lint", env=lint_env)
    assert result.returncode == 65, result
    [hazard] = result.events_named("hazard")
    assert (hazard["kinds"], hazard["relation"], hazard["line"]) == (
        ["unbounded"],
        "public.tokens",
        3,
    )
    assert "compares id with both $1 and $2" in hazard["change"]
    # A join that bounds the walked table through a CTE of it is bounded.
    migrations.write(
        "002_backfill.sql",
        BATCH_HEADER + "WITH b AS (SELECT id FROM tokens WHERE id BETWEEN $1 AND $2)\n"
        "UPDATE tokens SET scope = 'write' FROM b WHERE b.id = tokens.id;",
    )
    joined = run_runner("lint", env=lint_env)
    assert joined.returncode == 0, joined
    assert joined.events_named("hazard") == []
    # A partitioned table is scanned through its partitions: their scans carry the bounds.
    migrations.add({
        "002_backfill.sql": "CREATE TABLE ev (id bigint NOT NULL, at date) PARTITION BY RANGE (at);\n"
        "CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');\n"
        "CREATE TABLE ev_other PARTITION OF ev DEFAULT;\n"
        "CREATE INDEX ev_id ON ev (id);\n"
        "INSERT INTO ev SELECT g, date '2024-01-01' + g FROM generate_series(1, 500) g;",
        "003_purge.sql": "-- migrate:phase post\n-- migrate:batch table=ev key=id\n"
        "DELETE FROM ev WHERE id BETWEEN $1 AND $2 AND at < date '2024-06-01';",
    })  # fmt: skip
    partitioned = run_runner("lint", env=lint_env)
    assert partitioned.returncode == 0, partitioned
    assert partitioned.events_named("hazard") == []


def test_a_goose_block_whose_later_statement_cannot_run_in_a_transaction_is_caught(
    unborn_database, pg_server, migrations, run_runner
):
    """The mode check read a block's first statement only: a CREATE INDEX CONCURRENTLY (or
    VACUUM) later in a StatementBegin/End block was missed, the file linted and planned as
    transactional, and the lint stopped on the server's 25001. PostgreSQL runs a block sent as
    one text as one transaction, so such a block never runs: lint, --dry-run and migrate refuse
    it up front, naming its line, and nothing is created."""
    migrations.add({
        "00001_tokens.sql": "-- +goose Up\nCREATE TABLE tokens (id int, scope text);\n",
        "00002_index.sql": (
            "-- +goose Up\n-- +goose StatementBegin\n"
            "CREATE TABLE grants (id int);\n"
            "CREATE INDEX CONCURRENTLY tokens_scope ON tokens (scope);\n"
            "-- +goose StatementEnd\n"
        ),
    })  # fmt: skip
    env = unborn_database.env(
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        MIGRATIONS_DIR=str(migrations.path),
    )
    for args in (("lint",), ("--dry-run",)):
        result = run_runner(*args, env=env)
        assert result.returncode == 65, result
        error = result.events_named("invalid_migration_files")[0]["error"]
        assert "00002_index.sql: line 4: CREATE INDEX CONCURRENTLY in a StatementBegin" in error
        assert not result.events_named("migration_failed"), result
    assert scratch_databases(pg_server) == []
