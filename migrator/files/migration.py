"""One migration file: its version, checksum, SQL text, statements and transaction mode.

>>> from migrator.files.formats import read_migration
>>> m = read_migration(Path("migrations/002_security_invariants.sql"))
>>> m.version, m.sort_key, m.mode_decision.mode
('002_security_invariants', (2,), <TransactionMode.TRANSACTION: 'transaction'>)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.errors import MigrationFilesError

# The header's own reading (phases, the end of the header) lives apart, so that the batch
# header's reader (migrator/files/batch.py) needs nothing of this module.
from migrator.files.header import ALL as ALL
from migrator.files.header import PHASE_LINE as PHASE_LINE
from migrator.files.header import PHASES as PHASES
from migrator.files.header import POST as POST
from migrator.files.header import PRE as PRE
from migrator.files.header import RUN_PHASES as RUN_PHASES
from migrator.files.header import header_end as header_end

# The lexer (migrator.files.sql) is imported when a file is first parsed: a start with nothing
# pending reads and checksums every file but parses none.
if TYPE_CHECKING:
    from migrator.files.batch import BatchSpec
    from migrator.files.sql import ModeDecision, Script, Statement

FILE_NAME_PATTERN = re.compile(r"^(?P<number>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)\.sql$")
DESCRIPTION_PATTERN = re.compile(r"^--\s*Description:\s*(?P<text>.+?)\s*$", re.MULTILINE)
BOOTSTRAP_NUMBER = 0  # 000_init_database.sql: run by the superuser, repeatable
SHA256_HEX_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
# Most files hold no "-- migrate:" line at all: only the others are lexed for their header.
MAY_HOLD_DIRECTIVE = re.compile(r"--\s*migrate\s*:", re.IGNORECASE)
# Only a file that may waive a hazard (-- migrate:allow) needs the lint's waiver reader.
MAY_HOLD_WAIVER = re.compile(r"--\s*migrate\s*:\s*allow\b", re.IGNORECASE)
# A file fixed after it was applied names the checksum its earlier text had (Liquibase's
# validCheckSum): a database that recorded that one is not drift. One line each, with why:
#   -- migrate:replaces-checksum <sha256 hex> <why the new text does the same>
REPLACES_CHECKSUM = re.compile(
    r"^[ \t]*--\s*migrate\s*:\s*replaces-checksum\s+(?P<checksum>[0-9a-fA-F]{64})\b",
    re.MULTILINE | re.IGNORECASE,
)

ERR_BAD_NAME = "{path}: file name does not match <number>_<name>.sql (e.g. 002_add_feature.sql)"
ERR_NOT_UTF8 = "{path}: line {line}: not valid UTF-8 (byte 0x{byte:02x} at offset {offset})"
ERR_NUL = "{path}: line {line}: contains a NUL byte (libpq would send the file only up to it)"
ERR_UNREADABLE = "{path}: cannot be read ({reason})"
ERR_REFUSED = "{path}: line {line}: {reason}; nothing of it was run"
ERR_PHASE_VALUE = (
    "{path}: line {line}: -- migrate:phase must be followed by pre or post, got {value!r}"
)
ERR_PHASE_TWICE = "{path}: line {line}: a second -- migrate:phase line: a file has one phase"
ERR_PHASE_NOT_IN_HEADER = (
    "{path}: line {line}: -- migrate:phase must be in the header, the comment lines before the "
    "file's first statement"
)
ERR_PHASE_BOOTSTRAP = (
    "{path}: line {line}: the bootstrap script runs before every phase: it takes no "
    "-- migrate:phase"
)


@dataclass(frozen=True)
class Migration:
    """A parsed migration file. ``sql`` is the text exactly as sent to the server."""

    path: Path
    number: int
    version: str
    sql: str  # the up part: what ``migrate`` runs
    checksum: str  # SHA-256 of what runs (for a file without a down section: the file's bytes)
    down: Migration | None = None  # the down part, run by ``rollback``; None when there is none
    # How the format orders versions (Flyway's 1.2.3 -> (1, 2, 3)); empty: by ``number``.
    order: tuple[int, ...] = ()
    title: str | None = None  # the description the format's file name gives
    forced_reason: str | None = None  # the format's marker asks for no transaction: why
    given_statements: tuple[Statement, ...] | None = None  # the format groups statements itself
    repeatable: bool = False  # re-applied when its checksum changes (Flyway's R__ files)
    key: str = ""  # the version as the tool that wrote the file records it in its history
    phase: str = PRE  # its -- migrate:phase header: pre (the default) or post
    # Its -- migrate:batch header: run once per batch of the key (migrator/files/batch.py).
    batch: BatchSpec | None = None

    @property
    def is_bootstrap(self) -> bool:
        return self.number == BOOTSTRAP_NUMBER and not self.order and not self.repeatable

    @property
    def sort_key(self) -> tuple[int, ...]:
        return self.order or (self.number,)

    @property
    def description(self) -> str:
        """The ``-- Description:`` header when present, else the name in words."""
        match = DESCRIPTION_PATTERN.search(self.sql)
        if match:
            return match["text"]
        if self.title is not None:
            return self.title
        return self.version.split("_", 1)[1].replace("_", " ")

    @cached_property
    def script(self) -> Script:
        """The file read as ``psql -f`` reads it (statements, COPY data, meta-commands)."""
        from migrator.files.sql import read_script

        return read_script(self.sql)

    @cached_property
    def statements(self) -> list[Statement]:
        # A format that groups statements itself (goose's StatementBegin/End) supplies them.
        if self.given_statements is not None:
            return list(self.given_statements)
        return self.script.statements

    @cached_property
    def needs_reading(self) -> bool:
        """True when the file cannot be sent whole (COPY data, meta-commands, a setting that
        changes how later strings read); most files are sent as they are, never lexed."""
        from migrator.files.sql import needs_reading

        return needs_reading(self.sql)

    def refuse_unsupported(self) -> None:
        """Raise MigrationFilesError (exit 65) for what the runner will not run, naming the line:
        a psql meta-command other than pg_dump's ``\\restrict``, ``PREPARE TRANSACTION``, a
        variable psql defines, a ``BEGIN`` the file leaves open; a batch file whose statement
        is not one bounded data statement (migrator/files/batch.py, validate_batch)."""
        from migrator.files.sql import TransactionMode, refusal, unterminated_transaction

        if self.batch is not None:
            from migrator.files.batch import validate_batch

            validate_batch(self)
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
        from migrator.files.sql import (
            DEFAULT_REASON,
            ModeDecision,
            TransactionMode,
            may_leave_default_mode,
            transaction_mode,
        )

        if self.forced_reason is not None:
            return ModeDecision(TransactionMode.NO_TRANSACTION, self.forced_reason)
        if not may_leave_default_mode(self.sql):  # most files: no need to lex them
            return ModeDecision(TransactionMode.TRANSACTION, DEFAULT_REASON)
        return transaction_mode(self.sql, self.statements)

    def changed_since(self, recorded_checksum: str | None) -> bool:
        """Drift: the file differs from what was applied (the repeatable bootstrap never drifts)."""
        return (
            not self.is_bootstrap
            and not self.repeatable
            and looks_like_checksum(recorded_checksum)
            and recorded_checksum != self.checksum
            and str(recorded_checksum).lower() not in self.replaced_checksums
        )

    @property
    def replaced_checksums(self) -> frozenset[str]:
        """The checksums of this file's earlier texts that it declares equivalent, from its
        ``-- migrate:replaces-checksum`` lines (read only when a recorded checksum differs).

        >>> old = "a" * 64
        >>> text = f"-- migrate:replaces-checksum {old} a typo fixed\\nSELECT 1;\\n"
        >>> m = Migration(Path("001_x.sql"), 1, "001_x", text, "b" * 64)
        >>> m.changed_since(old), m.changed_since("c" * 64)
        (False, True)
        """
        return frozenset(m["checksum"].lower() for m in REPLACES_CHECKSUM.finditer(self.sql))

    @property
    def is_empty(self) -> bool:
        return not self.statements


def parse_file_name(path: Path) -> tuple[int, str] | None:
    """(number, version) for ``<number>_<name>.sql``, None when the name does not match."""
    match = FILE_NAME_PATTERN.match(path.name)
    if not match:
        return None
    return int(match["number"]), path.name.removesuffix(".sql")


def phase_of(path: Path, text: str) -> str:
    """The file's ``-- migrate:phase`` header (pre or post), PRE without one; MigrationFilesError
    (exit 65, naming the line) for another value, a second line, or one after the header.

    Only the header is read in any letter case (most files: a few lines); the rest of the
    file only when it holds "migrate" at all, as the other markers are found.

    >>> phase_of(Path("004_drop_x.sql"), "-- Description: drop x\\n-- migrate:phase post\\nDROP x;")
    'post'
    >>> phase_of(Path("004_drop_x.sql"), "-- migrate:phase later\\n")
    Traceback (most recent call last):
    migrator.errors.MigrationFilesError: 004_drop_x.sql: line 1: -- migrate:phase must be ...
    """
    end = header_end(text)
    found = list(PHASE_LINE.finditer(text, 0, end))
    later = PHASE_LINE.search(text, end) if text.find("migrate", end) >= 0 else None
    if later is not None:
        line = text.count("\n", 0, later.start()) + 1
        error = ERR_PHASE_TWICE if found else ERR_PHASE_NOT_IN_HEADER
        raise MigrationFilesError(error.format(path=path, line=line), file=str(path), line=line)
    if not found:
        return PRE
    first = found[0]
    line = text.count("\n", 0, first.start()) + 1
    if len(found) > 1:
        second = text.count("\n", 0, found[1].start()) + 1
        raise MigrationFilesError(
            ERR_PHASE_TWICE.format(path=path, line=second), file=str(path), line=second
        )
    value = first["value"].strip().lower()
    if value not in PHASES:
        raise MigrationFilesError(
            ERR_PHASE_VALUE.format(path=path, line=line, value=first["value"].strip()),
            file=str(path),
            line=line,
        )
    return value


def checksum_of(content: bytes) -> str:
    """SHA-256 of the file's bytes, hex, as stored in schema_migrations.checksum."""
    return hashlib.sha256(content).hexdigest()


def looks_like_checksum(value: str | None) -> bool:
    """Rows inserted by hand (SEED.md's 'checksum_here') carry no verifiable checksum."""
    return value is not None and SHA256_HEX_PATTERN.fullmatch(value) is not None


def decode(path: Path, content: bytes) -> str:
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
