"""docs/writing-migrations.md, "Expand and contract, end to end", run as written.

Every SQL block of the section runs, in the order the section gives it, on a real server: a
block whose first line names a file (``-- 041_accounts_display_name.sql``) is that migration
file, applied by the runner in its release and phase, each phase linted first (it must pass);
any other block is what the application does at that point, run on the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migrator.files.migration import PHASE_LINE, POST, PRE
from tests.conftest import REPO

DOC = REPO / "docs" / "writing-migrations.md"
SECTION = "### Expand and contract, end to end"
SQL_BLOCK = re.compile(r"^```sql\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
FILE_NAME = re.compile(r"^-- (?P<name>(?P<number>\d+)_\w+\.sql)$")
# What the section must keep showing: the steps of the pattern.
EXPECTED_FILES = [
    "040_accounts.sql",
    "041_accounts_display_name.sql",
    "042_backfill_display_name.sql",
    "051_display_name_check.sql",
    "052_validate_display_name.sql",
    "053_display_name_not_null.sql",
    "061_name_nullable.sql",
    "062_drop_name.sql",
]


@dataclass(frozen=True)
class Block:
    text: str
    name: str | None  # the migration file it is, None for the application's statements

    @property
    def release(self) -> int:
        """Files numbered 04x are one release, 05x the next..."""
        assert self.name
        return int(self.name.split("_")[0]) // 10

    @property
    def phase(self) -> str:
        found = PHASE_LINE.search(self.text)
        return found["value"].strip() if found else PRE


def section_blocks() -> list[Block]:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    blocks = []
    for match in SQL_BLOCK.finditer(text, start, end):
        body = match["body"]
        named = FILE_NAME.match(body.splitlines()[0])
        blocks.append(Block(body, named["name"] if named else None))
    return blocks


def test_the_section_shows_every_step_of_the_pattern():
    blocks = section_blocks()
    assert [b.name for b in blocks if b.name] == EXPECTED_FILES
    assert sum(1 for b in blocks if b.name is None) == 2  # the application, N+1 and N+3
    batch = next(b for b in blocks if b.name == "042_backfill_display_name.sql")
    assert "-- migrate:batch table=public.accounts key=id" in batch.text
    assert batch.phase == POST


def test_expand_and_contract_runs_as_written_and_passes_the_lint(
    database, pg_server, migrations, run_runner
):
    env = database.env(
        MIGRATIONS_DIR=str(migrations.path),
        DB_ADMIN_USER="postgres",
        DB_ADMIN_PASSWORD=pg_server.password,
        LINT_MIN_ROWS="0",
        LINT_BATCH_ROWS="1000",
    )
    unapplied: list[Block] = []
    runs: dict[str, list] = {"lint": [], "migrate": []}

    def flush(phase: str) -> None:
        """Lint, then apply, the written files of ``phase``, as a release's step does."""
        if not any(b.phase == phase for b in unapplied):
            return
        linted = run_runner("lint", "--phase", phase, env=env)
        assert linted.returncode == 0, linted
        applied = run_runner("--phase", phase, env=env)
        assert applied.returncode == 0, applied
        runs["lint"].append(linted)
        runs["migrate"].append(applied)
        unapplied[:] = [b for b in unapplied if b.phase != phase]
        with database.connect() as conn:
            conn.execute("ANALYZE accounts")  # the sizes the next lint reads on the target

    for block in section_blocks():
        if block.name is None:  # the new release runs once its pre phase is applied
            flush(PRE)
            with database.connect() as conn:
                conn.execute(block.text)
            continue
        if unapplied and unapplied[-1].release != block.release:  # the release before is done
            flush(PRE)
            flush(POST)
        if block.phase == POST:
            flush(PRE)
        migrations.write(block.name, block.text)
        unapplied.append(block)
    flush(PRE)
    flush(POST)

    versions = [
        [e["version"] for e in run.events_named("migration_applied")] for run in runs["migrate"]
    ]
    assert versions == [
        ["040_accounts", "041_accounts_display_name"],
        ["042_backfill_display_name"],
        ["051_display_name_check", "052_validate_display_name", "053_display_name_not_null"],
        ["061_name_nullable"],
        ["062_drop_name"],
    ]
    # The backfill ran in batches, and the lint took it for the batched form it is.
    backfill = runs["migrate"][1]
    assert backfill.events_named("batch_finished"), backfill
    assert not [e for run in runs["lint"] for e in run.events_named("hazard")
                if "unbatched" in e["kinds"]]  # fmt: skip
    # The waivers the section shows are the lint's only findings (no scan, no rewrite).
    findings = {
        (e["version"], tuple(e["kinds"]), e.get("waived"))
        for run in runs["lint"]
        for e in run.events_named("hazard")
    }
    assert findings == {
        ("051_display_name_check", ("breaking",), True),
        ("062_drop_name", ("breaking", "data_loss"), True),
    }
    columns = database.query(
        "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'accounts'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    )
    assert columns == [("id", True), ("display_name", True)]
    assert database.query("SELECT conname FROM pg_constraint WHERE conrelid = 'accounts'::regclass "
                          "AND contype = 'c'") == []  # fmt: skip
    assert database.scalar("SELECT count(*) FROM accounts") == 3002
    rows = database.query(
        "SELECT id, display_name FROM accounts WHERE id IN (1, 7, 3000, 3001, 3002) ORDER BY id"
    )
    assert rows == [
        (1, "account 1"),
        (7, "renamed"),
        (3000, "account 3000"),
        (3001, "new account"),
        (3002, "newest account"),
    ]
