"""Deterministic migration histories for bench/bench.py (the same files for every tool and run).

    >>> HistoryWriter(Path("realistic")).write(50)      # W1, W2: tables, indexes, functions...
    >>> TinyHistoryWriter(Path("tiny")).write(500)      # W3: one small statement per file

Every file starts with ``-- migrate:up`` and ends with an empty ``-- migrate:down`` block, so
dbmate takes the same files; the runner reads both lines as plain comments.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20240501
UP = "-- migrate:up\n"
# dbmate insists on a down block; it stays empty, because the runner does not know about
# sections and would run whatever follows as part of the file.
DOWN = "-- migrate:down\n"


@dataclass
class History:
    """What the generator wrote: the folder, the files in order, statements per file."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    statements: dict[str, int] = field(default_factory=dict)


class HistoryWriter:
    """A deterministic, realistic migration history (same files for every tool and run)."""

    STATUSES = ("new", "active", "suspended", "closed")

    def __init__(self, directory: Path, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.history = History(directory)
        self.tables: list[str] = []
        self.columns: dict[str, list[str]] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, count: int) -> History:
        kinds: list[tuple[str, Callable[[int], list[str]]]] = [
            ("create_table", self.create_table),
            ("alter_table", self.alter_table),
            ("function", self.function),
            ("view", self.view),
            ("seed_rows", self.seed_rows),
            ("enum_and_domain", self.enum_and_domain),
        ]
        weights = [30, 25, 15, 10, 15, 5]
        for number in range(1, count + 1):
            if number == 1 or len(self.tables) < 2:
                kind, make = kinds[0]
            else:
                kind, make = self.rng.choices(kinds, weights)[0]
            statements = make(number)
            name = f"{number:04d}_{kind}_{number}.sql"
            header = f"{UP}-- Description: {kind.replace('_', ' ')} ({number})\n"
            body = "".join(f"{statement};\n\n" for statement in statements)
            path = self.history.directory / name
            path.write_text(f"{header}{body}{DOWN}")
            self.history.files.append(path)
            self.history.statements[path.stem] = len(statements)
        return self.history

    def _table(self) -> str:
        return self.rng.choice(self.tables)

    def create_table(self, n: int) -> list[str]:
        table = f"account_{n}"
        parent = self._table() if self.tables else None
        reference = (
            f",\n    parent_id bigint REFERENCES {parent} (id) ON DELETE CASCADE" if parent else ""
        )
        statuses = ", ".join(f"'{s}'" for s in self.STATUSES)
        statements = [
            f"CREATE TABLE {table} (\n"
            f"    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
            f"    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),\n"
            f"    email text NOT NULL,\n"
            f"    status text NOT NULL DEFAULT 'new' CHECK (status IN ({statuses})),\n"
            f"    amount numeric(12, 2) NOT NULL DEFAULT 0 CHECK (amount >= 0),\n"
            f"    attributes jsonb NOT NULL DEFAULT '{{}}'::jsonb,\n"
            f"    created_at timestamptz NOT NULL DEFAULT now(),\n"
            f"    updated_at timestamptz NOT NULL DEFAULT now(){reference},\n"
            f"    CONSTRAINT {table}_email_key UNIQUE (email)\n"
            f")",
            f"CREATE INDEX {table}_status_created_idx ON {table} (status, created_at DESC)",
            f"COMMENT ON TABLE {table} IS 'Accounts of kind {n}; one row per customer''s account'",
            f"COMMENT ON COLUMN {table}.attributes IS 'free-form settings; keys: {{a; b}}'",
        ]
        if parent:
            statements.append(f"CREATE INDEX {table}_parent_idx ON {table} (parent_id)")
        self.tables.append(table)
        self.columns[table] = []
        return statements

    def alter_table(self, n: int) -> list[str]:
        table = self._table()
        column = f"note_{n}"
        self.columns[table].append(column)
        return [
            f"ALTER TABLE {table} ADD COLUMN {column} text",
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_length "
            f"CHECK (char_length({column}) <= 500)",
            f"CREATE INDEX {table}_{column}_idx ON {table} ({column}) WHERE {column} IS NOT NULL",
            f"COMMENT ON COLUMN {table}.{column} IS 'added by migration {n}: -- not a comment'",
        ]

    def function(self, n: int) -> list[str]:
        table = self._table()
        touch = f"{table}_touch_{n}"
        label = f"{table}_label_{n}"
        return [
            f"CREATE OR REPLACE FUNCTION {touch}() RETURNS trigger\n"
            f"LANGUAGE plpgsql AS $fn$\n"
            f"BEGIN\n"
            f"    -- a semicolon; and a 'quote' inside the body\n"
            f"    NEW.updated_at := now();\n"
            f"    IF NEW.status = 'closed' AND OLD.status IS DISTINCT FROM 'closed' THEN\n"
            f"        NEW.attributes := NEW.attributes || jsonb_build_object('closed_at', now());\n"
            f"    END IF;\n"
            f"    RETURN NEW;\n"
            f"END;\n"
            f"$fn$",
            f"CREATE TRIGGER {touch} BEFORE UPDATE ON {table}\n"
            f"    FOR EACH ROW EXECUTE FUNCTION {touch}()",
            f"CREATE FUNCTION {label}(p_id bigint) RETURNS text\n"
            f"LANGUAGE sql STABLE AS $$\n"
            f"    SELECT name || ' <' || email || '>; ' || status FROM {table} WHERE id = p_id\n"
            f"$$",
            f"COMMENT ON FUNCTION {label}(bigint) IS $c$label of one row; uses 'quotes'$c$",
        ]

    def view(self, n: int) -> list[str]:
        table = self._table()
        view = f"{table}_summary_{n}"
        return [
            f"CREATE VIEW {view} AS\n"
            f"SELECT status, count(*) AS accounts, sum(amount) AS total,\n"
            f"       max(created_at) AS newest\n"
            f"FROM {table}\n"
            f"WHERE status <> 'closed'\n"
            f"GROUP BY status",
            f"COMMENT ON VIEW {view} IS 'open accounts by status (migration {n})'",
        ]

    def seed_rows(self, n: int) -> list[str]:
        table = self._table()
        rows = []
        for i in range(self.rng.randint(3, 6)):
            status = self.rng.choice(self.STATUSES)
            amount = f"{self.rng.randint(0, 99_999) / 100:.2f}"
            attributes = json.dumps({"source": f"migration {n}", "tags": ["a;b", "c"]})
            rows.append(
                f"    ('O''Brien {n}-{i}; jr.', 'user{n}.{i}@example.org', '{status}', {amount},"
                f" '{attributes}')"
            )
        return [
            f"INSERT INTO {table} (name, email, status, amount, attributes) VALUES\n"
            + ",\n".join(rows),
            f"UPDATE {table} SET amount = amount + 1 WHERE email LIKE 'user{n}.%'",
        ]

    def enum_and_domain(self, n: int) -> list[str]:
        return [
            f"CREATE TYPE priority_{n} AS ENUM ('low', 'normal', 'high')",
            f"CREATE DOMAIN short_code_{n} AS text CHECK (VALUE ~ '^[A-Z]{{2,8}}$')",
            f"COMMENT ON TYPE priority_{n} IS 'priority levels, migration {n}'",
        ]


class TinyHistoryWriter:
    """One small statement per file: the per-migration overhead."""

    def __init__(self, directory: Path) -> None:
        self.history = History(directory)
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, count: int) -> History:
        for number in range(1, count + 1):
            statement = self.statement(number)
            path = self.history.directory / f"{number:04d}_tiny_{number}.sql"
            path.write_text(f"{UP}{statement};\n{DOWN}")
            self.history.files.append(path)
            self.history.statements[path.stem] = 1
        return self.history

    @staticmethod
    def statement(n: int) -> str:
        """One small table: catalog work on the server, little else (as in the issue's figures)."""
        return f"CREATE TABLE tiny_{n} (id bigint PRIMARY KEY, name text NOT NULL)"
