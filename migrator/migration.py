"""One migration file: its version, checksum, SQL text, statements and transaction mode.

>>> m = read_migration(Path("migrations/002_add_feature.sql"))
>>> m.version, m.number, m.mode
('002_add_feature', 2, <TransactionMode.TRANSACTION: 'transaction'>)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.errors import MigrationFilesError

# The lexer (migrator.sql) is imported when a file is first parsed: a start with nothing
# pending reads and checksums every file but parses none.
if TYPE_CHECKING:
    from migrator.sql import ModeDecision, Script, Statement

FILE_NAME_PATTERN = re.compile(r"^(?P<number>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)\.sql$")
DESCRIPTION_PATTERN = re.compile(r"^--\s*Description:\s*(?P<text>.+?)\s*$", re.MULTILINE)
BOOTSTRAP_NUMBER = 0  # 000_init_database.sql: run by the superuser, repeatable
SHA256_HEX_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
# Most files hold no "-- migrate:" line at all: only the others are lexed for their header.
MAY_HOLD_DIRECTIVE = re.compile(r"--\s*migrate\s*:", re.IGNORECASE)

ERR_BAD_NAME = "{path}: file name does not match <number>_<name>.sql (e.g. 002_add_feature.sql)"
ERR_NOT_UTF8 = "{path}: line {line}: not valid UTF-8 (byte 0x{byte:02x} at offset {offset})"
ERR_NUL = "{path}: line {line}: contains a NUL byte (libpq would send the file only up to it)"
ERR_UNKNOWN_DIRECTIVE = (
    "{path}: line {line}: unknown directive {directive!r} "
    "(known: -- migrate:no-transaction, -- migrate:up)"
)
ERR_UNREADABLE = "{path}: cannot be read ({reason})"
ERR_REFUSED = "{path}: line {line}: {reason}; nothing of it was run"


@dataclass(frozen=True)
class Migration:
    """A parsed migration file. ``sql`` is the text exactly as sent to the server."""

    path: Path
    number: int
    version: str
    sql: str
    checksum: str

    @property
    def is_bootstrap(self) -> bool:
        return self.number == BOOTSTRAP_NUMBER

    @property
    def description(self) -> str:
        """The ``-- Description:`` header when present, else the name in words."""
        match = DESCRIPTION_PATTERN.search(self.sql)
        if match:
            return match["text"]
        return self.version.split("_", 1)[1].replace("_", " ")

    @cached_property
    def script(self) -> Script:
        """The file read as ``psql -f`` reads it (statements, COPY data, meta-commands)."""
        from migrator.sql import read_script

        return read_script(self.sql)

    @cached_property
    def statements(self) -> list[Statement]:
        return self.script.statements

    @cached_property
    def needs_reading(self) -> bool:
        """True when the file cannot be sent whole (COPY data, meta-commands, a setting that
        changes how later strings read); most files are sent as they are, never lexed."""
        from migrator.sql import needs_reading

        return needs_reading(self.sql)

    def refuse_unsupported(self) -> None:
        """Raise MigrationFilesError (exit 65) for what the runner will not run, naming the line:
        a psql meta-command other than pg_dump's ``\\restrict``, ``PREPARE TRANSACTION``, a
        variable psql defines, a ``BEGIN`` the file leaves open."""
        from migrator.sql import TransactionMode, refusal, unterminated_transaction

        found = refusal(self.script) if self.needs_reading else None
        if found is None and self.mode_decision.mode is TransactionMode.NO_TRANSACTION:
            found = unterminated_transaction(self.statements)
        if found is not None:
            line, reason = found
            raise MigrationFilesError(
                ERR_REFUSED.format(path=self.path, line=line, reason=reason),
                file=str(self.path),
                line=line,
            )

    @cached_property
    def mode_decision(self) -> ModeDecision:
        from migrator.sql import (
            DEFAULT_REASON,
            ModeDecision,
            TransactionMode,
            may_leave_default_mode,
            transaction_mode,
        )

        if not may_leave_default_mode(self.sql):  # most files: no need to lex them
            return ModeDecision(TransactionMode.TRANSACTION, DEFAULT_REASON)
        return transaction_mode(self.sql, self.statements)

    def changed_since(self, recorded_checksum: str | None) -> bool:
        """Drift: the file differs from what was applied (the repeatable bootstrap never drifts)."""
        return (
            not self.is_bootstrap
            and looks_like_checksum(recorded_checksum)
            and recorded_checksum != self.checksum
        )

    @property
    def is_empty(self) -> bool:
        return not self.statements


def parse_file_name(path: Path) -> tuple[int, str] | None:
    """(number, version) for ``<number>_<name>.sql``, None when the name does not match."""
    match = FILE_NAME_PATTERN.match(path.name)
    if not match:
        return None
    return int(match["number"]), path.name.removesuffix(".sql")


def checksum_of(content: bytes) -> str:
    """SHA-256 of the file's bytes, hex, as stored in schema_migrations.checksum."""
    return hashlib.sha256(content).hexdigest()


def looks_like_checksum(value: str | None) -> bool:
    """Rows inserted by hand (SEED.md's 'checksum_here') carry no verifiable checksum."""
    return value is not None and SHA256_HEX_PATTERN.fullmatch(value) is not None


def read_migration(path: Path) -> Migration:
    """Read and parse one file, or raise MigrationFilesError naming it."""
    parsed = parse_file_name(path)
    if parsed is None:
        raise MigrationFilesError(ERR_BAD_NAME.format(path=path), file=str(path))
    number, version = parsed
    try:
        content = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise MigrationFilesError(
            ERR_UNREADABLE.format(path=path, reason=reason), file=str(path)
        ) from None
    migration = Migration(path, number, version, _decode(path, content), checksum_of(content))
    if MAY_HOLD_DIRECTIVE.search(migration.sql):
        refuse_unknown_directive(migration)
    return migration


def refuse_unknown_directive(migration: Migration) -> None:
    """A ``-- migrate:`` header the runner does not know is a typo, not a comment."""
    from migrator.sql import unknown_directive

    directive = unknown_directive(migration.sql)
    if directive is not None:
        line, text = directive
        raise MigrationFilesError(
            ERR_UNKNOWN_DIRECTIVE.format(path=migration.path, line=line, directive=text),
            file=str(migration.path),
            line=line,
        )


def _decode(path: Path, content: bytes) -> str:
    nul = content.find(b"\0")
    if nul >= 0:
        line = content.count(b"\n", 0, nul) + 1
        raise MigrationFilesError(ERR_NUL.format(path=path, line=line), file=str(path), line=line)
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        message = ERR_NOT_UTF8.format(
            path=path, line=line, byte=content[error.start], offset=error.start
        )
        raise MigrationFilesError(message, file=str(path), line=line) from None
