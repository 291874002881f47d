"""Batched data migrations: the ``-- migrate:batch`` header of a post file, and what its one
statement must be (docs/writing-migrations.md, Batched data migrations).

A batch file walks a table in the order of an indexed key and runs its statement once per
batch, with ``$1`` and ``$2`` the inclusive lower and upper key of the batch::

    -- migrate:phase post
    -- migrate:batch table=public.tokens key=id size=5000
    UPDATE tokens SET scope_v2 = scope WHERE id BETWEEN $1 AND $2 AND scope_v2 IS NULL;

>>> text = "-- migrate:phase post\\n-- migrate:batch table=public.tokens key=id\\nUPDATE t;"
>>> batch_of(Path("004_backfill.sql"), text)
BatchSpec(table='public.tokens', key='id', size=None, line=2)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from migrator.errors import MigrationFilesError
from migrator.files.header import PHASE_LINE, POST, header_end

if TYPE_CHECKING:
    from migrator.files.sql import Statement

BATCH_LINE = re.compile(
    r"^[ \t]*--\s*migrate\s*:\s*batch\b(?P<options>.*)$", re.MULTILINE | re.IGNORECASE
)
# An identifier as the header names it: plain (folded to lower case, as PostgreSQL reads it)
# or double-quoted (kept as written).
IDENTIFIER = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
TABLE_VALUE = re.compile(rf"{IDENTIFIER}(?:\.{IDENTIFIER})?")
KEY_VALUE = re.compile(IDENTIFIER)
OPTIONS = ("table", "key", "size")
# The statement's bounds: $1 the batch's lowest key, $2 its highest, both inclusive.
BOUNDS = ("$1", "$2")
DATA_VERBS = ("UPDATE", "DELETE", "INSERT")

ERR_BATCH = "{path}: line {line}: {problem}"
USAGE = "-- migrate:batch table=<schema.table> key=<column> [size=<rows>]"
BAD_OPTION = "-- migrate:batch option {option!r} is not understood (" + USAGE + ")"
OPTION_TWICE = "-- migrate:batch names {name}= twice"
MISSING_OPTION = "-- migrate:batch needs {name}= (" + USAGE + ")"
BAD_TABLE = "-- migrate:batch table={value!r} is not a table name (schema.table or table)"
BAD_KEY = "-- migrate:batch key={value!r} is not a column name"
BAD_SIZE = "-- migrate:batch size={value!r} must be a whole number of rows, 1 or more"
SECOND_LINE = "a second -- migrate:batch line: a batch file walks one table"
NOT_IN_HEADER = (
    "-- migrate:batch must be in the header, the comment lines before the file's first statement"
)
NOT_POST = (
    "a batch file runs after the rollout: add -- migrate:phase post to its header (the old "
    "release must not run beside a half-done backfill it does not know about)"
)
NO_STATEMENT = "a batch file holds one data statement; this one holds none"
SECOND_STATEMENT = "a second statement: a batch file holds exactly one, run once per batch"
NOT_DATA = (
    "a batch file's statement must be an UPDATE, a DELETE or an INSERT ... SELECT (a leading "
    "WITH allowed), not {verb}: schema changes and transaction control go in a file of their own"
)
INSERT_VALUES = "a batch file's INSERT must take its rows from a SELECT bounded by $1 and $2"
MISSING_BOUND = (
    "the statement does not use {bound}: it must select its rows with both bounds of the key, "
    "e.g. WHERE {key} BETWEEN $1 AND $2"
)
EXTRA_PARAMETER = "the statement uses {parameter}: a batch statement has only $1 and $2"
UPDATES_KEY = (
    "the statement sets the key column {key}: a row moved past the checkpoint would be done "
    "again and one moved before it never; walk another indexed column"
)
INSERTS_INTO_WALKED = (
    "the statement inserts into {table}, the table it walks: the batches would walk their own "
    "new rows; insert into another table"
)


class BatchFile(Protocol):
    """What validate_batch reads of a Migration (files/migration.py imports this module)."""

    @property
    def path(self) -> Path: ...
    @property
    def batch(self) -> BatchSpec | None: ...
    @property
    def statements(self) -> list[Statement]: ...


@dataclass(frozen=True)
class BatchSpec:
    """The ``-- migrate:batch`` header: the table walked, its key, the first batch's size."""

    table: str  # as written: schema.table or table (then found on the search_path)
    key: str  # the key column as written
    size: int | None  # rows per batch at the start; None: BATCH_SIZE
    line: int  # the header line, for errors

    @property
    def table_parts(self) -> tuple[str, ...]:
        """The table's schema (when written) and name as the catalog stores them.

        >>> BatchSpec('Public."Tokens"', "id", None, 1).table_parts
        ('public', 'Tokens')
        """
        return tuple(_catalog_name(part) for part in _split_qualified(self.table))

    @property
    def key_name(self) -> str:
        """The key column's name as the catalog stores it.

        >>> BatchSpec("t", '"Id"', None, 1).key_name, BatchSpec("t", "ID", None, 1).key_name
        ('Id', 'id')
        """
        return _catalog_name(self.key)


def batch_of(path: Path, text: str) -> BatchSpec | None:
    """The file's ``-- migrate:batch`` header, None without one; MigrationFilesError (exit 65,
    naming the line) for a bad, unknown or missing option, a second batch line, a batch line
    after the header, or a batch file that is not a post file.

    >>> text = "-- migrate:phase post\\n-- migrate:batch table=t key=id size=0"
    >>> batch_of(Path("004_x.sql"), text)
    Traceback (most recent call last):
    migrator.errors.MigrationFilesError: 004_x.sql: line 2: -- migrate:batch size='0' must be ...
    """
    if "batch" not in text:  # most files: no regular expression over them
        return None
    end = header_end(text)
    found = list(BATCH_LINE.finditer(text))
    if not found:
        return None
    first = found[0]
    line = _line(text, first.start())
    if first.start() >= end:
        raise _refused(path, line, NOT_IN_HEADER)
    if len(found) > 1:
        second = found[1]
        problem = SECOND_LINE if second.start() < end else NOT_IN_HEADER
        raise _refused(path, _line(text, second.start()), problem)
    spec = _spec(path, line, first["options"])
    phase = PHASE_LINE.search(text, 0, end)
    if phase is None or phase["value"].strip().lower() != POST:
        raise _refused(path, line, NOT_POST)
    return spec


def _spec(path: Path, line: int, options: str) -> BatchSpec:
    values: dict[str, str] = {}
    for option in options.split():
        name, equals, value = option.partition("=")
        name = name.lower()
        if not equals or name not in OPTIONS or not value:
            raise _refused(path, line, BAD_OPTION.format(option=option))
        if name in values:
            raise _refused(path, line, OPTION_TWICE.format(name=name))
        values[name] = value
    for name in ("table", "key"):
        if name not in values:
            raise _refused(path, line, MISSING_OPTION.format(name=name))
    if not TABLE_VALUE.fullmatch(values["table"]):
        raise _refused(path, line, BAD_TABLE.format(value=values["table"]))
    if not KEY_VALUE.fullmatch(values["key"]):
        raise _refused(path, line, BAD_KEY.format(value=values["key"]))
    size = None
    if "size" in values:
        written = values["size"]
        if not (written.isascii() and written.isdigit()) or int(written) < 1:
            raise _refused(path, line, BAD_SIZE.format(value=written))
        size = int(written)
    return BatchSpec(table=values["table"], key=values["key"], size=size, line=line)


def validate_batch(migration: BatchFile) -> None:
    """Refuse (exit 65, naming the line) a batch file whose statement the loop cannot run
    exactly once per row: not exactly one statement; not an UPDATE, DELETE or INSERT ...
    SELECT (a leading WITH allowed), so no DDL and no transaction control; not using both
    ``$1`` and ``$2`` as parameters (strings and comments do not count), or using another;
    an UPDATE that sets the key; an INSERT into the walked table."""
    from migrator.files.sql import parameters, words

    spec = migration.batch
    if spec is None:
        return
    statements = migration.statements
    if not statements:
        raise _refused(migration.path, spec.line, NO_STATEMENT)
    if len(statements) > 1:
        raise _refused(migration.path, statements[1].line, SECOND_STATEMENT)
    statement = statements[0]
    tokens = words(statement.text)
    verb, position = _main_verb(tokens)
    if verb not in DATA_VERBS:
        raise _refused(migration.path, statement.line, NOT_DATA.format(verb=verb or "nothing"))
    if verb == "INSERT" and "SELECT" not in tokens[position:]:
        raise _refused(migration.path, statement.line, INSERT_VALUES)
    used = parameters(statement.text)
    for bound in BOUNDS:
        if bound not in used:
            problem = MISSING_BOUND.format(bound=bound, key=spec.key)
            raise _refused(migration.path, statement.line, problem)
    for parameter in sorted(used - set(BOUNDS)):
        problem = EXTRA_PARAMETER.format(parameter=parameter)
        raise _refused(migration.path, statement.line, problem)
    if verb == "UPDATE" and _sets_column(tokens[position:], spec.key_name.upper()):
        raise _refused(migration.path, statement.line, UPDATES_KEY.format(key=spec.key))
    if verb == "INSERT" and _names_table(tokens[position + 2 :], spec):
        raise _refused(migration.path, statement.line, INSERTS_INTO_WALKED.format(table=spec.table))


def _main_verb(tokens: list[str]) -> tuple[str | None, int]:
    """The statement's verb and its index: after a leading WITH, the first top-level word that
    starts a statement (the common table expressions are parenthesized)."""
    if not tokens:
        return None, 0
    if tokens[0] != "WITH":
        return tokens[0], 0
    depth = 0
    for index, token in enumerate(tokens):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth == 0 and token in (*DATA_VERBS, "SELECT", "VALUES", "MERGE", "TABLE"):
            return token, index
    return "WITH", 0


def _sets_column(tokens: list[str], column: str) -> bool:
    """Whether an UPDATE's SET list assigns ``column`` (``SET col =`` or ``SET (a, col) =``).

    >>> _sets_column(["UPDATE", "T", "SET", "ID", "=", "ID", "+", "1"], "ID")
    True
    >>> _sets_column(["UPDATE", "T", "SET", "B", "=", "ID", "WHERE", "ID", "=", "1"], "ID")
    False
    """
    depth, in_set, in_group = 0, False, False
    for index, token in enumerate(tokens):
        if token == "(":
            depth += 1
            in_group = in_set and depth == 1 and _assigned_group(tokens, index)
            continue
        if token == ")":
            depth -= 1
            in_group = in_group and depth > 0
            continue
        if depth == 0 and token == "SET":
            in_set = True
        elif depth == 0 and token in ("FROM", "WHERE", "RETURNING"):
            in_set = False
        elif in_set and token == column:
            follows = tokens[index + 1] if index + 1 < len(tokens) else ""
            if (depth == 0 and follows == "=") or in_group:
                return True
    return False


def _assigned_group(tokens: list[str], start: int) -> bool:
    """Whether the parenthesized group opening at ``start`` is followed by ``=``: a column list
    ``SET (a, b) = (...)`` rather than an expression."""
    depth = 0
    for index in range(start, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[index], 0)
        if depth == 0:
            return index + 1 < len(tokens) and tokens[index + 1] == "="
    return False


def _names_table(tokens: list[str], spec: BatchSpec) -> bool:
    """Whether an INSERT's target (the tokens after INSERT INTO) is the walked table; a
    quoted target is not compared."""
    if not tokens:
        return False
    written = [tokens[0]]
    if len(tokens) > 2 and tokens[1] == ".":
        written.append(tokens[2])
    walked = [part.upper() for part in spec.table_parts]
    if len(written) == 1 or len(walked) == 1:
        return written[-1] == walked[-1]
    return written == walked


def _split_qualified(value: str) -> list[str]:
    parts = re.findall(IDENTIFIER, value)
    return parts


def _catalog_name(part: str) -> str:
    if part.startswith('"'):
        return part[1:-1].replace('""', '"')
    return part.lower()


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _refused(path: Path, line: int, problem: str) -> MigrationFilesError:
    message = ERR_BATCH.format(path=path, line=line, problem=problem)
    return MigrationFilesError(message, file=str(path), line=line)
