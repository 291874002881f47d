"""The history table's name (MIGRATIONS_TABLE), and the lock relation's, which follows it.

Built once by the configuration and handed to every layer that reads or writes the history;
nothing below the configuration reads MIGRATIONS_TABLE itself.

>>> table = TableName("migrator", "history")
>>> str(table), table.regclass, str(table.lock)
('migrator.history', '"migrator"."history"', 'migrator.history_lock')
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

DEFAULT_SCHEMA = "public"
DEFAULT_NAME = "schema_migrations"
# The lock relation is the history table's name with this suffix, in the same schema: two
# histories in one database (two services, or a tool beside the runner) do not block each other.
LOCK_SUFFIX = "_lock"
# The checkpoints of batched data migrations: the history's name with this suffix, cut as
# PostgreSQL cuts a name longer than its 63 bytes (NAMEDATALEN - 1).
BATCH_SUFFIX = "_batch"
MAX_NAME_BYTES = 63


@dataclass(frozen=True)
class TableName:
    """A relation's schema and name, as stored in the catalog (not quoted)."""

    schema: str = DEFAULT_SCHEMA
    name: str = DEFAULT_NAME

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def identifier(self) -> sql.Identifier:
        """The qualified name for a composed statement (sql.SQL(...).format)."""
        return sql.Identifier(self.schema, self.name)

    @property
    def regclass(self) -> str:
        """The qualified name as to_regclass() and ::regclass read it: quoted, so that it means
        exactly this schema and name whatever their letters."""
        return f"{_quoted(self.schema)}.{_quoted(self.name)}"

    @property
    def lock(self) -> TableName:
        """The migration lock's view that goes with this history."""
        return TableName(self.schema, self.name + LOCK_SUFFIX)

    @property
    def batch(self) -> TableName:
        """The checkpoint table of batched data migrations that goes with this history.

        >>> TableName("public", "schema_migrations").batch.name
        'schema_migrations_batch'
        """
        room = MAX_NAME_BYTES - len(BATCH_SUFFIX)
        return TableName(self.schema, self.name.encode()[:room].decode() + BATCH_SUFFIX)


DEFAULT_TABLE = TableName()


def _quoted(part: str) -> str:
    return '"' + part.replace('"', '""') + '"'
