"""Where a migration failed, as the user reads it: file, line and column from the server's
error position, mapped back through the round trip's envelope into the file (also inside
multi-statement parts, blocks of statements sent as one, and COPY data), SQLSTATE, message,
detail and hint. The applier and the lint report failures through it; the runner's own
statements are never named as the file's.
For example, with the ``StatementFailed`` a round trip raised::

    migration_failed(migration, failure, None, 0).message
    # 'migrations/002_add_feature.sql:3:8: 42P01 relation "acounts" does not exist'
"""

from __future__ import annotations

import re

from migrator.apply.transport import StatementFailed
from migrator.errors import MigrationFailedError
from migrator.files.migration import Migration
from migrator.files.sql import (
    Statement,
    inner_statements,
    position_to_line_column,
    server_statements,
    statement_at,
)

STATEMENT_EXCERPT_LENGTH = 200
ERR_FAILED = "{file}:{line}:{column}: {sqlstate} {message}"
ERR_AROUND_FILE = "{file}: {statement} failed after the file ran: {sqlstate} {message}"
ERR_BEFORE_FILE = "{file}: {statement} failed before the file ran: {sqlstate} {message}"
COPY_DATA_LINE_RE = re.compile(r"^COPY [^,]+, line (\d+)")


def migration_failed(
    migration: Migration,
    failure: StatementFailed,
    statement: Statement | None,
    index: int,
) -> MigrationFailedError:
    """The user's error: file, line and column from the server's position, SQLSTATE, message."""
    diag = failure.error.diag
    part, envelope = failure.part, failure.envelope
    if statement is None and part is not None and len(part.statements) == 1 and not envelope.after:
        statement = part.statements[0]  # a COPY, sent on its own
    if statement is not None:  # sent on its own: the server's position is the statement's
        statement, (line, column) = _locate_in_statement(migration, failure, statement)
        line = _copy_data_line(statement, diag.context) or line
    else:
        located = _locate_in_file(migration, failure)
        if located is None:
            return _failed_around_file(migration, failure)
        statement, (line, column) = located
    fields = {
        "file": str(migration.path),
        "version": migration.version,
        "line": line,
        "column": column,
        "sqlstate": diag.sqlstate,
        "server_message": diag.message_primary,
        "detail": diag.message_detail,
        "hint": diag.message_hint,
        "context": diag.context,
        "statement": statement.text[:STATEMENT_EXCERPT_LENGTH],
    }
    message = ERR_FAILED.format(
        file=migration.path,
        line=line,
        column=column,
        sqlstate=diag.sqlstate,
        message=diag.message_primary,
    )
    return MigrationFailedError(message, **{k: v for k, v in fields.items() if v is not None})


def _copy_data_line(statement: Statement, context: str | None) -> int | None:
    """The file line of the COPY data row the server names ("COPY t, line 3")."""
    match = COPY_DATA_LINE_RE.match(context or "")
    if statement.copy is None or match is None:
        return None
    return statement.copy.line + int(match[1]) - 1


def _locate_in_statement(
    migration: Migration, failure: StatementFailed, statement: Statement
) -> tuple[Statement, tuple[int, int]]:
    """The failing statement of ``statement`` sent on its own (itself, or one of its block's)
    and its line/column: from the server's position, counted from the start of what was sent
    (its SET LOCALs, if any, come first); without one, from the count of results before it."""
    inner = inner_statements(statement)
    position = failure.error.diag.statement_position
    if position:
        offset = statement.offset - len(failure.envelope.head) + int(position) - 1
        return statement_at(inner, offset), position_to_line_column(migration.sql, offset)
    index = min(max(failure.index - len(failure.envelope.before), 0), len(inner) - 1)
    return inner[index], position_to_line_column(migration.sql, inner[index].offset)


def _locate_in_file(
    migration: Migration, failure: StatementFailed
) -> tuple[Statement, tuple[int, int]] | None:
    """The failing statement of the file and its line/column, or None when it is not the file's.

    The server's position counts from the start of what was sent, envelope included; without
    one, the count of results before the error says which statement failed.
    """
    part = failure.part
    statements = server_statements(migration.statements if part is None else part.statements)
    if not statements:
        return None
    position = failure.error.diag.statement_position
    if position:
        offset = int(position) - 1 - len(failure.envelope.head)
        if part is not None:
            located = part.locate(offset) if offset >= 0 else None
            if located is not None:
                statement, offset = located
                return statement_at(inner_statements(statement), offset), (
                    position_to_line_column(migration.sql, offset)
                )
        elif 0 <= offset < len(migration.sql):
            return statement_at(statements, offset), position_to_line_column(migration.sql, offset)
    file_index = failure.index - len(failure.envelope.before)
    if 0 <= file_index < len(statements):
        statement = statements[file_index]
        return statement, position_to_line_column(migration.sql, statement.offset)
    return None


def _failed_around_file(migration: Migration, failure: StatementFailed) -> MigrationFailedError:
    """A statement of the envelope failed: the history row, or the COMMIT (deferred checks);
    the file's own statements all ran (or, before them, none did)."""
    envelope = failure.envelope
    statements = migration.statements if failure.part is None else failure.part.statements
    sent = [*envelope.before, *(s.text for s in server_statements(statements)), *envelope.after]
    statement = sent[min(failure.index, len(sent) - 1)]
    diag = failure.error.diag
    template = ERR_BEFORE_FILE if failure.index < len(envelope.before) else ERR_AROUND_FILE
    message = template.format(
        file=migration.path,
        statement=" ".join(statement.split()[:4]),
        sqlstate=diag.sqlstate,
        message=diag.message_primary,
    )
    return MigrationFailedError(
        message,
        file=str(migration.path),
        version=migration.version,
        sqlstate=diag.sqlstate,
        server_message=diag.message_primary,
        detail=diag.message_detail,
        statement=statement[:STATEMENT_EXCERPT_LENGTH],
    )
