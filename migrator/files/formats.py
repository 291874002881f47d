"""Folder formats: one small reader per tool turns its files into the same Migration objects.

Planning, applying and locking never ask which tool wrote a file: a reader decides here what
runs on ``migrate`` (the up part), what runs on ``rollback`` (the down part), the order, the
transaction mode and the checksum (of what runs). golang-migrate's split between a source
of migrations and the driver that applies them is the model.

>>> folder_format, found = read_folder(sorted(Path("migrations").glob("*.sql")))
>>> folder_format, [m.version for m in found][:3]
('runner', ['000_init_database', '001_initial_production_schema', '002_security_invariants'])
"""

from __future__ import annotations

import bisect
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.errors import MigrationFilesError
from migrator.files.batch import BATCH_LINE, batch_of
from migrator.files.migration import (
    BOOTSTRAP_NUMBER,
    ERR_BAD_NAME,
    ERR_PHASE_BOOTSTRAP,
    ERR_UNREADABLE,
    FILE_NAME_PATTERN,
    MAY_HOLD_DIRECTIVE,
    PHASE_LINE,
    POST,
    REPLACES_CHECKSUM,
    Migration,
    checksum_of,
    decode,
    parse_file_name,
    phase_of,
)

if TYPE_CHECKING:
    from migrator.files.sql import Statement

BYTE_ORDER_MARK = b"\xef\xbb\xbf"

RUNNER, DBMATE, GOLANG_MIGRATE, GOOSE, FLYWAY = (
    "runner",
    "dbmate",
    "golang-migrate",
    "goose",
    "flyway",
)
# The runner's own format reads dbmate's markers: a dbmate file may join a runner folder.
NAMING = {
    RUNNER: "<number>_<name>.sql",
    DBMATE: "<number>_<name>.sql with -- migrate:up",
    GOLANG_MIGRATE: "<version>_<title>.up.sql",
    GOOSE: "<number>_<name>.sql with -- +goose Up",
    FLYWAY: "V<version>__<description>.sql",
}
FAMILY = {RUNNER: RUNNER, DBMATE: RUNNER, GOLANG_MIGRATE: GOLANG_MIGRATE, GOOSE: GOOSE}

GOLANG_NAME = re.compile(r"^(?P<number>\d+)_(?P<title>.+)\.(?P<direction>up|down)\.sql$")
FLYWAY_NAME = re.compile(r"^(?P<prefix>[VUR])(?P<version>\d+(?:[._]\d+)*)?__(?P<title>.+)\.sql$")
DOWN_COMPANION_SUFFIX = ".down.sql"
# dbmate's own expressions (pkg/dbmate/migration.go): markers start a line.
DBMATE_UP = re.compile(r"^--\s*migrate:up(?:[ \t]*$|\s+\S+)", re.MULTILINE)
DBMATE_DOWN = re.compile(r"^--\s*migrate:down(?:[ \t]*$|\s+\S+)", re.MULTILINE)
MIGRATE_MARKER = re.compile(
    r"^[ \t]*--\s*migrate\s*:\s*(?P<name>\S*)(?P<options>.*)$", re.MULTILINE
)
# allow: a hazard waiver that `lint` reads (-- migrate:allow <kind> <relation>: <reason>).
# phase: pre or post, when the file runs in a release (migrator/files/migration.py, phase_of).
# batch: a post file run once per batch of a table's key (migrator/files/batch.py, batch_of).
KNOWN_MARKERS = frozenset(
    {"up", "down", "no-transaction", "allow", "replaces-checksum", "phase", "batch"}
)
GOOSE_MARKER = re.compile(r"^[ \t]*--.*\+goose", re.MULTILINE)
FLYWAY_PLACEHOLDER = re.compile(r"\$\{[^}\n]*\}")

ERR_MIXED = (
    "{first} ({first_format}: {first_naming}) and {second} ({second_format}: {second_naming}) "
    "are of different formats: a folder holds the files of one tool"
)
ERR_MARKER = "{path}: line {line}: {problem}"
ERR_DUPLICATE_VERSION = "{first} and {second} have the same version {version}"
ERR_PHASE_OTHER_FORMAT = (
    "-- migrate:phase is read in the runner's own format only: {tool} files all run before the "
    "release (phase pre)"
)
ERR_BATCH_OTHER_FORMAT = (
    "-- migrate:batch is read in the runner's own format only: {tool} files run whole"
)
ERR_DOWN_TWICE = "{path} has a -- migrate:down section and a companion {companion}: keep one"
ERR_ORPHAN_DOWN = "{path} is a down part without its up file {expected}"
DBMATE_BEFORE_UP = "statements before -- migrate:up (dbmate refuses them too)"
DBMATE_TWO_SECTIONS = "a second {marker} marker: one up and one down section per file"
DBMATE_DOWN_FIRST = "-- migrate:down before -- migrate:up"
UNKNOWN_OPTION = (
    "unknown option {option!r} on {marker} (known: transaction:false, transaction:true)"
)
UNKNOWN_MARKER = "unknown marker {marker!r} (known: -- migrate:up, -- migrate:down, " + (
    "-- migrate:no-transaction, -- migrate:allow, -- migrate:replaces-checksum, -- migrate:phase, "
    "-- migrate:batch)"
)
BAD_REPLACES_CHECKSUM = (
    "{marker!r} needs the SHA-256 (64 hex digits) of the file's earlier text, then why the new "
    "text does the same: -- migrate:replaces-checksum <sha256> <why>"
)
GOOSE_UNKNOWN = (
    "{annotation!r} is not understood (known: Up, Down, StatementBegin, StatementEnd, "
    "NO TRANSACTION)"
)
GOOSE_ORDER = "{annotation!r} is out of place ({why})"
GOOSE_UNFINISHED = "the statement starting here does not end with a semicolon (goose refuses it)"
GOOSE_NO_END = "-- +goose StatementBegin without StatementEnd (goose refuses it)"
GOOSE_NO_UP = "no -- +goose Up annotation (goose refuses the file too)"
FLYWAY_PLACEHOLDER_FOUND = (
    "Flyway placeholder {placeholder} is not replaced by this runner: write the value"
)
FLYWAY_UNDO_ALONE = "{path} undoes version {version}, which has no V file"

FLYWAY_CONF_SUFFIX = ".conf"  # a script configuration file beside V1__x.sql: V1__x.sql.conf
FLYWAY_CONF_UNKNOWN = (
    "{path}: line {line}: {setting!r} is not understood (known: executeInTransaction=true|false)"
)
FLYWAY_NO_TRANSACTION = "Flyway: executeInTransaction=false in {name}"
DBMATE_NO_TRANSACTION = "dbmate: transaction:false on {marker}"
GOOSE_NO_TRANSACTION = "goose: -- +goose NO TRANSACTION"


@dataclass(frozen=True)
class SourceFile:
    """A file of the folder, read and decoded once."""

    path: Path
    content: bytes
    text: str

    @cached_property
    def may_be_goose(self) -> bool:
        # Plain substring tests first, once each: a multi-line regex over a 50 MB file costs
        # seconds, these 0.1 s.
        return "+goose" in self.text

    @cached_property
    def may_hold_migrate_marker(self) -> bool:
        return "migrate" in self.text

    def line_of(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    def refuse(self, offset: int, problem: str) -> MigrationFilesError:
        line = self.line_of(offset)
        message = ERR_MARKER.format(path=self.path, line=line, problem=problem)
        return MigrationFilesError(message, file=str(self.path), line=line)

    def checksum_of_prefix(self, end: int) -> str:
        """SHA-256 of the file's bytes up to character ``end``: the up part before a down marker."""
        if end >= len(self.text):
            return checksum_of(self.content)
        bom = len(BYTE_ORDER_MARK) if self.content.startswith(BYTE_ORDER_MARK) else 0
        head = self.content[: bom + len(self.text[:end].encode("utf-8"))]
        return checksum_of(head)


def read_source(path: Path) -> SourceFile:
    try:
        content = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise MigrationFilesError(
            ERR_UNREADABLE.format(path=path, reason=reason), file=str(path)
        ) from None
    return SourceFile(path, content, decode(path, content))


def blank_outside(text: str, start: int, end: int) -> str:
    """``text[start:end]`` with every line before it kept as an empty line.

    Errors then name the file's own line and column, whatever part of the file runs.
    """
    return "\n" * text.count("\n", 0, start) + text[start:end]


# --- which tool wrote a file -------------------------------------------------------------------


def format_of(source: SourceFile, names: set[str]) -> str:
    """The tool whose file this is, from its name and, for ``<number>_<name>.sql``, its markers."""
    name = source.path.name
    if FLYWAY_NAME.match(name):
        return FLYWAY
    golang = GOLANG_NAME.match(name)
    if golang and not (
        golang["direction"] == "down" and name.removesuffix(DOWN_COMPANION_SUFFIX) + ".sql" in names
    ):
        return GOLANG_MIGRATE
    if FILE_NAME_PATTERN.match(name):
        if source.may_be_goose and GOOSE_MARKER.search(source.text):
            return GOOSE
        if source.may_hold_migrate_marker and DBMATE_UP.search(source.text):
            return DBMATE
        return RUNNER
    raise MigrationFilesError(ERR_BAD_NAME.format(path=source.path), file=str(source.path))


def refuse_mixed(formats: dict[Path, str]) -> str:
    """The folder's format; two files of different tools are refused, both named."""
    seen: dict[str, Path] = {}
    for path, name in sorted(formats.items()):
        seen.setdefault(FAMILY.get(name, name), path)
    if len(seen) > 1:
        first, second = list(seen.values())[:2]
        raise MigrationFilesError(
            ERR_MIXED.format(
                first=first,
                first_format=formats[first],
                first_naming=NAMING[formats[first]],
                second=second,
                second_format=formats[second],
                second_naming=NAMING[formats[second]],
            ),
            file=str(second),
        )
    return next(iter(seen), RUNNER)


def read_folder(paths: Sequence[Path]) -> tuple[str, list[Migration]]:
    """The folder's format and its migrations (unordered), each file read once."""
    sources = [read_source(path) for path in paths]
    names = {source.path.name for source in sources}
    formats = {source.path: format_of(source, names) for source in sources}
    folder_format = refuse_mixed(formats)
    if folder_format != RUNNER:
        refuse_phase_lines(sources, folder_format)
    reader = READERS[folder_format]
    return (
        DBMATE if DBMATE in formats.values() else folder_format,
        reader(sources),
    )


def refuse_phase_lines(sources: Sequence[SourceFile], tool: str) -> None:
    """Another tool's file with a ``-- migrate:phase`` line: refused rather than applied in a
    phase it does not ask for (exit 65); with a ``-- migrate:batch`` line, rather than run
    whole."""
    for source in sources:
        found = PHASE_LINE.search(source.text) if source.may_hold_migrate_marker else None
        if found:
            raise source.refuse(found.start(), ERR_PHASE_OTHER_FORMAT.format(tool=tool))
        batch = BATCH_LINE.search(source.text) if source.may_hold_migrate_marker else None
        if batch:
            raise source.refuse(batch.start(), ERR_BATCH_OTHER_FORMAT.format(tool=tool))


# --- the runner's own files, and dbmate's ------------------------------------------------------


def read_migration(path: Path) -> Migration:
    """Read one file of the runner's format (and its ``.down.sql`` companion), or raise
    MigrationFilesError naming it. Folders of other tools' files: read_folder."""
    parsed = parse_file_name(path)
    if parsed is None:
        raise MigrationFilesError(ERR_BAD_NAME.format(path=path), file=str(path))
    _, version = parsed

    companion = path.with_name(version + ".down.sql")
    return read_runner_file(
        read_source(path), read_source(companion) if companion.exists() else None
    )


def read_runner_files(sources: Sequence[SourceFile]) -> list[Migration]:
    """``<number>_<name>.sql``, an optional down section or ``<number>_<name>.down.sql``."""
    by_name = {source.path.name: source for source in sources}
    migrations = []
    for source in sources:
        if source.path.name.endswith(DOWN_COMPANION_SUFFIX) and is_companion(source, by_name):
            continue
        companion_name = source.path.name.removesuffix(".sql") + DOWN_COMPANION_SUFFIX
        migrations.append(read_runner_file(source, by_name.get(companion_name)))
    return migrations


def is_companion(source: SourceFile, by_name: dict[str, SourceFile]) -> bool:
    return source.path.name.removesuffix(DOWN_COMPANION_SUFFIX) + ".sql" in by_name


def read_runner_file(source: SourceFile, companion: SourceFile | None) -> Migration:
    """One file of the runner's format (dbmate's markers included).

    >>> text = "-- migrate:up\\nA;\\n-- migrate:down\\nB;"
    >>> read_runner_file(SourceFile(Path("1_a.sql"), text.encode(), text), None).sql
    '-- migrate:up\\nA;\\n'
    """
    match = FILE_NAME_PATTERN.match(source.path.name)
    assert match is not None  # format_of checked the name
    up = down = None
    if source.may_hold_migrate_marker and MAY_HOLD_DIRECTIVE.search(source.text):
        check_markers(source)
        up = DBMATE_UP.search(source.text)
        down = DBMATE_DOWN.search(source.text)
    phase = phase_of(source.path, source.text)
    if phase == POST and int(match["number"]) == BOOTSTRAP_NUMBER:
        found = PHASE_LINE.search(source.text)
        assert found is not None
        line = source.line_of(found.start())
        raise MigrationFilesError(
            ERR_PHASE_BOOTSTRAP.format(path=source.path, line=line),
            file=str(source.path),
            line=line,
        )
    end = down.start() if down else len(source.text)
    migration = Migration(
        path=source.path,
        number=int(match["number"]),
        version=source.path.name.removesuffix(".sql"),
        sql=source.text[:end],
        checksum=source.checksum_of_prefix(end),
        forced_reason=no_transaction_reason(source, up),
        key=match["number"],
        phase=phase,
        batch=batch_of(source.path, source.text) if source.may_hold_migrate_marker else None,
    )
    if down is not None and companion is not None:
        raise MigrationFilesError(
            ERR_DOWN_TWICE.format(path=source.path, companion=companion.path),
            file=str(source.path),
        )
    if down is not None:
        down_sql = blank_outside(source.text, down.start(), len(source.text))
        return with_down(migration, source.path, down_sql, no_transaction_reason(source, down))
    if companion is not None:
        return with_down(migration, companion.path, companion.text, None)
    return migration


def with_down(
    migration: Migration,
    path: Path,
    sql: str,
    forced_reason: str | None,
    given_statements: tuple[Statement, ...] | None = None,
) -> Migration:
    """``migration`` with its down part, itself a Migration that ``rollback`` applies."""
    down = replace(
        migration,
        path=path,
        version=migration.version + ".down",
        sql=sql,
        checksum=checksum_of(sql.encode("utf-8")),
        forced_reason=forced_reason,
        given_statements=given_statements,
        batch=None,  # a down part runs whole, even the down part of a batch file
    )
    return replace(migration, down=down)


def check_markers(source: SourceFile) -> None:
    """Every ``-- migrate:`` line must be understood (a typo is not a comment); dbmate's rules
    for its own markers."""
    for marker in MIGRATE_MARKER.finditer(source.text):
        name = marker["name"].lower()
        if name not in KNOWN_MARKERS:
            raise source.refuse(marker.start(), UNKNOWN_MARKER.format(marker=marker[0].strip()))
        if name == "replaces-checksum" and not REPLACES_CHECKSUM.match(marker[0].strip()):
            raise source.refuse(
                marker.start(), BAD_REPLACES_CHECKSUM.format(marker=marker[0].strip())
            )
    ups = list(DBMATE_UP.finditer(source.text))
    downs = list(DBMATE_DOWN.finditer(source.text))
    for found, name in ((ups, "-- migrate:up"), (downs, "-- migrate:down")):
        if len(found) > 1:
            raise source.refuse(found[1].start(), DBMATE_TWO_SECTIONS.format(marker=name))
    if ups and downs and downs[0].start() < ups[0].start():
        raise source.refuse(downs[0].start(), DBMATE_DOWN_FIRST)
    if ups and any(
        line.strip() and not line.lstrip().startswith("--")
        for line in source.text[: ups[0].start()].splitlines()
    ):
        raise source.refuse(0, DBMATE_BEFORE_UP)


def no_transaction_reason(source: SourceFile, marker: re.Match[str] | None) -> str | None:
    """dbmate's ``transaction:false`` on a marker line; other options are refused."""
    if marker is None:
        return None
    line_end = source.text.find("\n", marker.start())
    line = source.text[marker.start() : line_end if line_end >= 0 else len(source.text)]
    name, _, options = line.partition(":")[2].partition(" ")
    reason = None
    for option in options.split():
        if option.lower() == "transaction:false":
            reason = DBMATE_NO_TRANSACTION.format(marker=f"-- migrate:{name.strip()}")
        elif option.lower() != "transaction:true":
            problem = UNKNOWN_OPTION.format(option=option, marker=f"-- migrate:{name.strip()}")
            raise source.refuse(marker.start(), problem)
    return reason


# --- golang-migrate ----------------------------------------------------------------------------


def read_golang_migrate(sources: Sequence[SourceFile]) -> list[Migration]:
    """``<version>_<title>.up.sql`` and ``.down.sql``: each file runs whole, as its driver does."""
    ups: dict[str, SourceFile] = {}
    downs: dict[str, SourceFile] = {}
    for source in sources:
        match = GOLANG_NAME.match(source.path.name)
        assert match is not None
        stem = source.path.name.rsplit(".", 2)[0]
        (ups if match["direction"] == "up" else downs)[stem] = source
    for stem, down in downs.items():
        if stem not in ups:
            expected = down.path.with_name(stem + ".up.sql")
            raise MigrationFilesError(
                ERR_ORPHAN_DOWN.format(path=down.path, expected=expected), file=str(down.path)
            )
    migrations = []
    for stem, up in ups.items():
        number, _, title = stem.partition("_")
        migration = Migration(
            path=up.path,
            number=int(number),
            version=stem,
            sql=up.text,
            checksum=checksum_of(up.content),
            order=(int(number),),
            title=title.replace("_", " "),
            key=str(int(number)),
        )
        if stem in downs:
            migration = with_down(migration, downs[stem].path, downs[stem].text, None)
        migrations.append(migration)
    return migrations


# --- goose -------------------------------------------------------------------------------------


def goose_annotation(line: str) -> str:
    return line.replace("--", "").replace("+goose", "", 1).strip()


GOOSE_ANNOTATIONS = {"up", "down", "statementbegin", "statementend", "no transaction"}


def parse_goose(source: SourceFile) -> tuple[list[tuple[int, int]], list[tuple[int, int]], bool]:
    """The up and down statements ((start, end) offsets) and whether to use a transaction.

    Follows goose's own parser (internal/sqlparser/parser.go): a statement ends on a line
    whose last word before a comment ends with ';', unless inside StatementBegin/StatementEnd.
    """
    sections: dict[str, list[tuple[int, int]]] = {"up": [], "down": []}
    section: str | None = None
    in_block = False
    block_start = 0
    start: int | None = None
    use_transaction = True
    for offset, line in _lines(source.text):
        stripped = line.strip()
        if stripped.startswith("--") and "+goose" in line:
            annotation = goose_annotation(line).lower()
            if annotation not in GOOSE_ANNOTATIONS or line[:1] in (" ", "\t"):
                problem = GOOSE_UNKNOWN.format(annotation=line.strip())
                raise source.refuse(offset, problem)
            if annotation == "no transaction":
                use_transaction = False
                continue
            problem = _goose_misplaced(annotation, section, in_block, start)
            if problem:
                raise source.refuse(offset, GOOSE_ORDER.format(annotation=stripped, why=problem))
            if annotation in ("up", "down"):
                section = annotation
            elif annotation == "statementbegin":
                in_block, block_start = True, offset
            else:
                in_block = False
                assert section is not None
                if start is not None:
                    sections[section].append((start, offset))
                start = None
            continue
        if start is None and (stripped.startswith("--") or not stripped):
            continue
        if section is None:
            raise source.refuse(offset, GOOSE_NO_UP)
        if start is None:
            start = offset
        if not in_block and _goose_ends_statement(line):
            sections[section].append((start, offset + len(line)))
            start = None
    if section is None:
        raise source.refuse(0, GOOSE_NO_UP)
    if in_block:
        raise source.refuse(block_start, GOOSE_NO_END)
    if start is not None and source.text[start:].strip():
        raise source.refuse(start, GOOSE_UNFINISHED)
    return sections["up"], sections["down"], use_transaction


def _goose_misplaced(
    annotation: str, section: str | None, in_block: bool, start: int | None
) -> str:
    if annotation == "up" and section is not None:
        return "a second Up"
    if annotation == "down" and (section != "up" or in_block):
        return "Down must follow Up, outside a StatementBegin block"
    if annotation == "down" and start is not None:
        return "the statement before it does not end with a semicolon"
    if annotation == "statementbegin" and (section is None or in_block):
        return "StatementBegin must follow Up or Down, outside another block"
    if annotation == "statementend" and not in_block:
        return "StatementEnd without StatementBegin"
    return ""


def _goose_ends_statement(line: str) -> bool:
    previous = ""
    for word in line.split():
        if word.startswith("--"):
            break
        previous = word
    return previous.endswith(";")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Each line with its offset. A CRLF line keeps its carriage return: every use of the line
    strips or splits it, and the text that runs keeps the file's line endings anyway."""
    offset = 0
    for line in text.split("\n"):
        yield offset, line
        offset += len(line) + 1


def goose_part(
    source: SourceFile, spans: list[tuple[int, int]]
) -> tuple[str, tuple[Statement, ...]]:
    """The text that runs (other lines left empty, so lines keep their numbers) and its
    statements, one per goose statement however many semicolons a StatementBegin block has.

    Each statement's text and offset are those of the text that runs: an error position the
    server gives, inside a block too, is then a place in it (inner_statements).
    """
    from migrator.files.sql import Statement

    chars = [c if c in "\r\n" else " " for c in source.text]
    for start, end in spans:
        chars[start:end] = source.text[start:end]
    # Trailing spaces of blanked lines are dropped: the text sent stays close to the file's.
    lines = [line.rstrip() for line in "".join(chars).split("\n")]
    sql = "\n".join(lines)
    # Lines correspond one to one; only their ends moved. Where each line starts, in both.
    file_starts = list(accumulate((len(line) + 1 for line in source.text.split("\n")), initial=0))
    sql_starts = list(accumulate((len(line) + 1 for line in lines), initial=0))

    def in_sql(offset: int) -> int:
        line = bisect.bisect_right(file_starts, offset) - 1
        return sql_starts[line] + min(offset - file_starts[line], len(lines[line]))

    statements = []
    for start, end in spans:
        raw = sql[in_sql(start) : in_sql(end)]
        offset = in_sql(start) + len(raw) - len(raw.lstrip())
        text = raw.strip().removesuffix(";").rstrip()
        statements.append(Statement(text, offset, bisect.bisect_right(sql_starts, offset)))
    return sql, tuple(statements)


def read_goose(sources: Sequence[SourceFile]) -> list[Migration]:
    """goose SQL files: ``-- +goose Up``/``Down``, StatementBegin/End, NO TRANSACTION."""
    migrations = []
    for source in sources:
        match = FILE_NAME_PATTERN.match(source.path.name)
        assert match is not None
        up, down, use_transaction = parse_goose(source)
        forced = None if use_transaction else GOOSE_NO_TRANSACTION
        sql, statements = goose_part(source, up)
        migration = Migration(
            path=source.path,
            number=int(match["number"]),
            version=source.path.name.removesuffix(".sql"),
            sql=sql,
            checksum=checksum_of(sql.encode("utf-8")),
            order=(int(match["number"]),),
            title=match["name"].replace("_", " "),
            forced_reason=forced,
            given_statements=statements,
            key=str(int(match["number"])),
        )
        if down:
            down_sql, down_statements = goose_part(source, down)
            migration = with_down(
                migration, source.path, down_sql, forced, given_statements=down_statements
            )
        migrations.append(migration)
    return migrations


# --- Flyway ------------------------------------------------------------------------------------


def flyway_order(version: str) -> tuple[int, ...]:
    """Flyway compares versions part by part as numbers, trailing zeros ignored: 1.2 == 1.2.0.

    >>> flyway_order("1_2_0"), flyway_order("1.10") > flyway_order("1.9")
    ((1, 2), True)
    """
    parts = [int(part) for part in re.split(r"[._]", version)]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def flyway_checksum(source: SourceFile) -> int:
    """Flyway's checksum: CRC32 over the UTF-8 bytes of each line without its line ending,
    the BOM left out (decoding dropped it, as Flyway drops one), as a signed 32-bit integer
    (ChecksumCalculator / LoadableResource)."""
    crc = 0
    for line in re.split(r"\r\n|\r|\n", source.text):
        crc = zlib.crc32(line.encode("utf-8"), crc)  # an empty last line adds nothing
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def read_flyway(sources: Sequence[SourceFile]) -> list[Migration]:
    """``V<version>__<description>.sql``, ``U<version>__*.sql`` undo, ``R__<description>.sql``."""
    versioned: dict[tuple[int, ...], Migration] = {}
    undo: dict[tuple[int, ...], SourceFile] = {}
    repeatable: list[Migration] = []
    for source in sources:
        match = FLYWAY_NAME.match(source.path.name)
        assert match is not None
        refuse_placeholders(source)
        prefix, version, title = match["prefix"], match["version"], match["title"]
        stem = source.path.name.removesuffix(".sql")
        if (prefix == "R") != (version is None):
            raise MigrationFilesError(ERR_BAD_NAME.format(path=source.path), file=str(source.path))
        if prefix == "R":
            repeatable.append(flyway_migration(source, stem, (), title, repeatable=True))
            continue
        order = flyway_order(version)
        twin = (undo if prefix == "U" else versioned).get(order)
        if twin is not None:
            raise MigrationFilesError(
                ERR_DUPLICATE_VERSION.format(first=twin.path, second=source.path, version=version),
                file=str(source.path),
            )
        if prefix == "U":
            undo[order] = source
        else:
            versioned[order] = flyway_migration(source, stem, order, title)
    for order, source in undo.items():
        if order not in versioned:
            raise MigrationFilesError(
                FLYWAY_UNDO_ALONE.format(path=source.path, version=".".join(map(str, order))),
                file=str(source.path),
            )
        forced = flyway_script_config(source)
        versioned[order] = with_down(versioned[order], source.path, source.text, forced)
    return [*versioned.values(), *repeatable]


def flyway_script_config(source: SourceFile) -> str | None:
    """The forced reason from ``<script>.conf`` (Flyway's per-script settings), if any; a
    setting the runner does not apply is refused rather than ignored."""
    conf = source.path.with_name(source.path.name + FLYWAY_CONF_SUFFIX)
    if not conf.exists():
        return None
    reason = None
    for number, line in enumerate(read_source(conf).text.splitlines(), start=1):
        setting = line.strip()
        if not setting or setting.startswith("#"):
            continue
        key, _, value = (part.strip() for part in setting.partition("="))
        if key == "executeInTransaction" and value.lower() in ("true", "false"):
            false = value.lower() == "false"  # Flyway reads booleans in any case
            reason = FLYWAY_NO_TRANSACTION.format(name=conf.name) if false else None
            continue
        message = FLYWAY_CONF_UNKNOWN.format(path=conf, line=number, setting=setting)
        raise MigrationFilesError(message, file=str(conf), line=number)
    return reason


def flyway_migration(
    source: SourceFile, stem: str, order: tuple[int, ...], title: str, repeatable: bool = False
) -> Migration:
    description = title.replace("_", " ")
    return Migration(
        path=source.path,
        number=order[0] if order else 0,
        version=stem,
        sql=source.text,
        checksum=checksum_of(source.content),
        order=order,
        title=description,
        forced_reason=flyway_script_config(source),
        repeatable=repeatable,
        key=description if repeatable else ".".join(map(str, order)),
    )


def refuse_placeholders(source: SourceFile) -> None:
    placeholder = FLYWAY_PLACEHOLDER.search(source.text)
    if placeholder:
        problem = FLYWAY_PLACEHOLDER_FOUND.format(placeholder=placeholder[0])
        raise source.refuse(placeholder.start(), problem)


READERS: dict[str, Callable[[Sequence[SourceFile]], list[Migration]]] = {
    RUNNER: read_runner_files,
    GOLANG_MIGRATE: read_golang_migrate,
    GOOSE: read_goose,
    FLYWAY: read_flyway,
}
