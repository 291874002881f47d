"""Other tools' folder formats applied by the runner: only the up part runs, as that tool runs it."""

from __future__ import annotations

DBMATE_FILE = """\
-- migrate:up
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);

-- migrate:down
DROP TABLE accounts;
"""


def test_dbmate_down_section_does_not_run_on_migrate(database, run_runner, migrations):
    """The issue's silent data loss: the down section used to run right after the up one."""
    migrations.add({
        "001_accounts.sql": DBMATE_FILE,
        "002_use_accounts.sql": "-- migrate:up\nINSERT INTO accounts VALUES (1, 'a@example.com');\n",
    })  # fmt: skip
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    assert result.returncode == 0, result.stdout
    assert database.query("SELECT id, email FROM accounts") == [(1, "a@example.com")]
    assert database.query("SELECT version FROM schema_migrations ORDER BY version") == [
        ("001_accounts",),
        ("002_use_accounts",),
    ]
