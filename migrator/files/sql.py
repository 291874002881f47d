"""Split a migration file into PostgreSQL statements and decide whether it can run in a transaction.

The lexer follows psql's own (``src/fe_utils/psqlscan.l``), so a file is cut into
exactly the statements ``psql -f`` would send: semicolons count only outside
strings, quoted identifiers, dollar quotes, comments, parentheses and the
``BEGIN ATOMIC ... END`` body of a SQL-standard function.  Like psql it follows
``standard_conforming_strings`` (on by default since PostgreSQL 9.1: backslashes escape
only inside ``E'...'``; a ``SET standard_conforming_strings = off`` in the file makes
later ``'...'`` strings escape strings too), reads the inline data of ``COPY ... FROM
stdin`` up to its ``\\.`` line, and sees psql's backslash meta-commands.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

__all__ = [
    "DEFAULT_REASON",
    "ConcurrentIndex",
    "CopyData",
    "MetaCommand",
    "ModeDecision",
    "Script",
    "Statement",
    "TransactionMode",
    "concurrent_index",
    "copy_direction",
    "inner_statements",
    "may_leave_default_mode",
    "may_run_in_transaction_block",
    "mentions_standard_strings",
    "needs_reading",
    "position_to_line_column",
    "read_script",
    "redact_literals",
    "refusal",
    "server_statements",
    "split_statements",
    "standard_strings_after",
    "statement_at",
    "strip_comments",
    "transaction_mode",
    "unterminated_transaction",
]


# --- tokens -----------------------------------------------------------------------------------


class _Kind(Enum):
    WORD = "word"  # unquoted identifier or keyword
    QUOTED_IDENT = "quoted identifier"
    STRING = "string"  # '...', E'...', U&'...', B'...', X'...', N'...'
    DOLLAR = "dollar-quoted string"
    PARAM = "parameter"  # $1
    NUMBER = "number"
    LPAREN = "("
    RPAREN = ")"
    SEMICOLON = ";"
    OTHER = "other"  # operators and punctuation
    LINE_COMMENT = "line comment"
    BLOCK_COMMENT = "block comment"
    META = "psql meta-command"  # a backslash outside quotes: psql's, up to the end of the line

    # Members are singletons: hashed by identity, ``kind in COMMENT_KINDS`` (once per token)
    # costs no call into Enum.__hash__, which hashes the name in Python.
    __hash__ = object.__hash__


COMMENT_KINDS = frozenset({_Kind.LINE_COMMENT, _Kind.BLOCK_COMMENT})


class _Token(NamedTuple):
    # A tuple: millions are made for a big data file, and a tuple is made fastest.
    kind: _Kind
    start: int
    end: int


# Characters as psql's lexer classes them; every non-ASCII character counts as a letter,
# as psql's [\200-\377] byte class does for UTF-8 text.  Written as complements of ASCII
# ranges: a class spelled with the range \u0080-\U0010ffff takes ~7 ms to compile, which
# every start of the runner would pay.
IDENT_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Z a-z _ and non-ASCII
IDENT_CONT = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also 0-9 and $
DOLLAR_TAG_CONT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also 0-9, never $

WHITESPACE_RE = re.compile(r"[ \t\n\r\f]+")
# The line that ends the inline data of COPY ... FROM stdin, as psql reads it.
COPY_DATA_END_RE = re.compile(r"^\\\.\r?(?:\n|\Z)", re.MULTILINE)
BLOCK_COMMENT_EDGE_RE = re.compile(r"/\*|\*/")

# The token patterns, joined below into one that the ``re`` engine scans token after token.
# Digits, then (PostgreSQL 15+ "junk" or older "number then identifier") any identifier
# glued to them: either way a "$" right after is part of that token, never a dollar quote.
NUMBER = rf"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:{IDENT_START}{IDENT_CONT}*)?"
# Bodies after the opening quote, written as "unrolled loops" so that an unterminated
# literal fails in linear time instead of backtracking exponentially; when the body does not
# close, the literal runs to the end of the text (``.*``, the pattern is DOTALL).
STANDARD_STRING_BODY = r"(?:[^']*(?:''[^']*)*'|.*)"
ESCAPE_STRING_BODY = r"(?:[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|.*)"
QUOTED_IDENT_BODY = r'(?:[^"]*(?:""[^"]*)*"|.*)'
# SQL continues a string literal across whitespace that contains a newline:
# E'a\'b'  <newline>  'c\'d' is one E'' literal, so the second part keeps backslash escapes.
STRING_CONTINUATION = r"(?:[ \t\f]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f]|--[^\n\r]*[\n\r])*'"
ESCAPE_STRING = rf"{ESCAPE_STRING_BODY}(?:{STRING_CONTINUATION}{ESCAPE_STRING_BODY})*"


def _token_pattern(escape_string_start: str) -> re.Pattern[str]:
    """Blanks, then one token; each alternative is a named group, tried in psql's order at
    the same place.  Two need a look beyond a pattern: a block comment with another inside
    (``nested_comment``: PostgreSQL nests them) and a dollar quote's body (``dollar``: it
    ends at the same tag); the lexer finds their ends itself."""
    return re.compile(
        rf"""[ \t\n\r\f]*+(?:
        (?P<line_comment>--[^\n\r]*)
        |(?P<block_comment>/\*(?:[^/*]++|/(?!\*)|\*(?!/))*+\*/)
        |(?P<nested_comment>/\*)
        |(?P<escape_string>{escape_string_start}'{ESCAPE_STRING})
        |(?P<string>(?:[uU]&|[bBxXnN])?'{STANDARD_STRING_BODY})
        |(?P<quoted_ident>(?:[uU]&)?"{QUOTED_IDENT_BODY})
        |(?P<meta>\\[^\n\r]*)
        |(?P<param>\$\d+)
        |(?P<dollar>\$(?:{IDENT_START}{DOLLAR_TAG_CONT}*)?\$)
        |(?P<word>{IDENT_START}{IDENT_CONT}*)
        |(?P<number>{NUMBER})
        |(?P<lparen>\()
        |(?P<rparen>\))
        |(?P<semicolon>;)
        |(?P<other>.)
        )""",
        re.DOTALL | re.VERBOSE,
    )


# psql's xestart: E'...' always; with standard_conforming_strings off, '...' and N'...' too.
STANDARD_TOKEN_RE = _token_pattern("[eE]")
ESCAPING_TOKEN_RE = _token_pattern("[eEnN]?")
GROUP_KINDS: dict[str, _Kind] = {
    "line_comment": _Kind.LINE_COMMENT,
    "block_comment": _Kind.BLOCK_COMMENT,
    "nested_comment": _Kind.BLOCK_COMMENT,
    "escape_string": _Kind.STRING,
    "string": _Kind.STRING,
    "quoted_ident": _Kind.QUOTED_IDENT,
    "meta": _Kind.META,
    "param": _Kind.PARAM,
    "dollar": _Kind.DOLLAR,
    "word": _Kind.WORD,
    "number": _Kind.NUMBER,
    "lparen": _Kind.LPAREN,
    "rparen": _Kind.RPAREN,
    "semicolon": _Kind.SEMICOLON,
    "other": _Kind.OTHER,
}
# Both patterns number their groups alike: a token's kind by its group's number.
KIND_BY_GROUP = {index: GROUP_KINDS[name] for name, index in STANDARD_TOKEN_RE.groupindex.items()}
NESTED_COMMENT_GROUP = STANDARD_TOKEN_RE.groupindex["nested_comment"]
DOLLAR_GROUP = STANDARD_TOKEN_RE.groupindex["dollar"]
OPAQUE_GROUPS = (NESTED_COMMENT_GROUP, DOLLAR_GROUP)
# _Token(kind, start, end) without the Python-level __new__ a NamedTuple has.
new_token = tuple.__new__
BYTE_ORDER_MARK = "\ufeff"


class _Lexer:
    """Turns SQL text into tokens, comments included; never fails (unterminated runs to the end).

    ``standard_strings`` is psql's view of ``standard_conforming_strings``; the splitter
    changes it between statements.  ``skip`` is a region (COPY data) the lexer jumps over.
    The ``re`` engine finds the tokens, one compiled pattern for all of them; the lexer starts
    it again only where its state changes (a setting, COPY data) or where a token's end is
    beyond a pattern (a nested comment, a dollar quote's body).
    """

    def __init__(self, sql: str, pos: int = 0, standard_strings: bool = True) -> None:
        self.sql = sql
        self.pos = pos
        self.standard_strings = standard_strings
        self.skip: tuple[int, int] | None = None

    def tokens(self) -> Iterator[_Token]:
        sql, size = self.sql, len(self.sql)
        if self.pos == 0 and sql.startswith(BYTE_ORDER_MARK):
            self.pos = len(BYTE_ORDER_MARK)  # editors add it; it is not SQL
        while self.pos < size:
            if self.skip is not None and self._skip_copy_data():
                continue
            standard = self.standard_strings
            pattern = STANDARD_TOKEN_RE if standard else ESCAPING_TOKEN_RE
            for match in pattern.finditer(sql, self.pos):
                group = match.lastindex or 0
                start, end = match.span(group)  # the token ends its match
                opaque = group in OPAQUE_GROUPS
                if opaque:
                    end = self._opaque_end(group, start, end)
                self.pos = end
                yield new_token(_Token, (KIND_BY_GROUP[group], start, end))
                # Start the scan again when it is behind, or when the state changed (next to
                # COPY data token by token: blanks must not run into the data unseen).
                if opaque or self.skip is not None or self.standard_strings != standard:
                    break
            else:
                self.pos = size  # only blanks were left

    def _skip_copy_data(self) -> bool:
        """Jump over the COPY data once it is reached, blanks first; False at a token."""
        assert self.skip is not None
        if self.pos >= self.skip[0]:
            self.pos = max(self.pos, self.skip[1])
            self.skip = None
            return True
        blank = WHITESPACE_RE.match(self.sql, self.pos)
        if blank:  # blanks that run into COPY data are skipped with it just above
            self.pos = blank.end()
            return True
        return False

    def _opaque_end(self, group: int, start: int, end: int) -> int:
        """The end of a nested comment or of a dollar quote's body, from its opening."""
        if group == NESTED_COMMENT_GROUP:
            return self._block_comment_end(start)
        return self._dollar_end(start, end)

    def _block_comment_end(self, start: int) -> int:
        # PostgreSQL nests block comments: /* a /* b */ c */ is one comment.
        depth = 0
        for edge in BLOCK_COMMENT_EDGE_RE.finditer(self.sql, start):
            depth += 1 if edge.group() == "/*" else -1
            if depth == 0:
                return edge.end()
        return len(self.sql)

    def _dollar_end(self, start: int, body_start: int) -> int:
        # The body is opaque and ends at the first identical delimiter, so $a$ inside $fn$ is text.
        delimiter = self.sql[start:body_start]
        close = self.sql.find(delimiter, body_start)
        return len(self.sql) if close == -1 else close + len(delimiter)


def _significant_tokens(sql: str) -> list[_Token]:
    return list(_iter_significant_tokens(sql))


def _iter_significant_tokens(sql: str) -> Iterator[_Token]:
    """Tokens one at a time: a 50 MB data file has millions, which a list would hold at once."""
    return (token for token in _Lexer(sql).tokens() if token.kind not in COMMENT_KINDS)


# --- secrets in statements shown to people ------------------------------------------------------

# The keyword whose string literal is a password (ALTER ROLE ... PASSWORD, OPTIONS (password ...)).
SECRET_KEYWORD = "PASSWORD"
# A connection string inside a literal (dblink_connect('host=h password=x')).
CONNINFO_PASSWORD_RE = re.compile(r"(?i)\bpassword\s*=")
REDACTED_LITERAL = "'***'"


def redact_literals(sql: str) -> str:
    """``sql`` with every string literal that holds a password replaced by ``'***'``: the one
    after the word PASSWORD, in any quoting ('', E'', U&'', $$, $tag$), and any literal that
    carries a connection string's ``password=``. Lexed as psql would, so a quote inside a
    literal neither hides the secret nor swallows the text after it.

    >>> redact_literals("ALTER ROLE a PASSWORD $p$s3cret$p$; SELECT f(E'password=x y')")
    "ALTER ROLE a PASSWORD '***'; SELECT f('***')"
    """
    pieces: list[str] = []
    last = 0
    after_keyword = False
    for token in _Lexer(sql).tokens():
        if token.kind in COMMENT_KINDS:
            continue
        if token.kind in (_Kind.STRING, _Kind.DOLLAR):
            literal = sql[token.start : token.end]
            if after_keyword or CONNINFO_PASSWORD_RE.search(literal):
                pieces += [sql[last : token.start], REDACTED_LITERAL]
                last = token.end
        word = sql[token.start : token.end] if token.kind is _Kind.WORD else ""
        after_keyword = word.upper() == SECRET_KEYWORD
    return "".join(pieces) + sql[last:] if pieces else sql


# --- splitting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyData:
    """The inline data of ``COPY ... FROM stdin``: the lines after the statement, up to ``\\.``."""

    text: str
    line: int  # 1-based line of its first row


@dataclass(frozen=True)
class Statement:
    """One statement of a file: its text (no trailing semicolon) and where it starts.

    The other fields do not take part in comparisons: ``end`` is where the next statement's
    text may begin (after the semicolon, or after the COPY data that follows it),
    ``standard_strings`` the ``standard_conforming_strings`` it was read with, ``copy`` the
    data of a ``COPY ... FROM stdin``.
    """

    text: str
    offset: int  # 0-based character offset of ``text`` in the file
    line: int  # 1-based line where ``text`` starts
    end: int = field(default=-1, compare=False, repr=False)
    standard_strings: bool = field(default=True, compare=False, repr=False)
    copy: CopyData | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class MetaCommand:
    """A psql backslash command found in a file (never sent to the server)."""

    line: int
    command: str  # e.g. "\\connect"
    inside_statement: bool


@dataclass(frozen=True)
class Script:
    """A file read as ``psql -f`` reads it."""

    statements: list[Statement]
    meta_commands: list[MetaCommand]
    # (line, reference) of psql variables psql itself defines (:DBNAME, :'LAST_ERROR_MESSAGE'):
    # psql replaces them with their value, the server would see the colon.
    psql_variables: list[tuple[int, str]] = field(default_factory=list)


# psql remembers the first letters of the first few words to recognise
# CREATE [OR REPLACE] FUNCTION|PROCEDURE (psqlscan_int.h: identifiers[4]).
ROUTINE_WORD_LETTERS = {"create": "c", "function": "f", "procedure": "p", "or": "o", "replace": "r"}
REMEMBERED_WORDS = 4
ROUTINE_HEADS = ("cf", "cp", "corf", "corp")


class _AtomicBodyTracker:
    """psql's heuristic for SQL-standard bodies: inside CREATE FUNCTION ... BEGIN ATOMIC,
    count BEGIN/CASE against END so the body's semicolons do not end the statement."""

    def __init__(self) -> None:
        self.letters: list[str] = []
        self.word_count = 0
        self.depth = 0
        self.routine = False  # the remembered words start CREATE [OR REPLACE] FUNCTION|PROCEDURE

    def reset(self) -> None:
        self.letters = []
        self.word_count = 0  # ``routine`` is decided again at the next word

    def wants(self) -> bool:
        """Whether the next word can matter: most statements' words after the fourth do not."""
        return self.routine or self.word_count < REMEMBERED_WORDS

    def see_word(self, word: str, paren_depth: int) -> None:
        lowered = word.lower()
        if self.word_count < REMEMBERED_WORDS:
            self.letters.append(ROUTINE_WORD_LETTERS.get(lowered, "-"))
            self.routine = "".join(self.letters).startswith(ROUTINE_HEADS)
        self.word_count += 1
        if paren_depth > 0 or not self.routine:
            return
        if lowered == "begin":
            self.depth += 1
        elif lowered == "case" and self.depth >= 1:
            self.depth += 1  # CASE also closes with END; it only matters inside a body
        elif lowered == "end" and self.depth > 0:
            self.depth -= 1


class _LineIndex:
    """Maps character offsets to 1-based line and column numbers."""

    def __init__(self, sql: str) -> None:
        self.line_starts = [0] + [match.end() for match in re.finditer("\n", sql)]

    def locate(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1


def split_statements(sql: str) -> list[Statement]:
    """Split SQL text into statements the way ``psql -f`` does.

    Comments and whitespace around a statement are left out of its text;
    statements that are empty or only comments are dropped.

        >>> split_statements("CREATE TABLE t (a text);\\n-- done\\nINSERT INTO t VALUES (';')")
        [Statement(text='CREATE TABLE t (a text)', offset=0, line=1),
         Statement(text="INSERT INTO t VALUES (';')", offset=33, line=3)]
    """
    return read_script(sql).statements


# The variables psql defines by itself (an undefined :name is left as it is, by psql too).
PSQL_VARIABLES = frozenset(
    [
        "AUTOCOMMIT",
        "COMP_KEYWORD_CASE",
        "DBNAME",
        "ECHO",
        "ECHO_HIDDEN",
        "ENCODING",
        "ERROR",
        "FETCH_COUNT",
        "HIDE_TABLEAM",
        "HIDE_TOAST_COMPRESSION",
        "HISTCONTROL",
        "HISTFILE",
        "HISTSIZE",
        "HOST",
        "IGNOREEOF",
        "LASTOID",
        "LAST_ERROR_MESSAGE",
        "LAST_ERROR_SQLSTATE",
        "ON_ERROR_ROLLBACK",
        "ON_ERROR_STOP",
        "PORT",
        "PROMPT1",
        "PROMPT2",
        "PROMPT3",
        "QUIET",
        "ROW_COUNT",
        "SERVER_VERSION_NAME",
        "SERVER_VERSION_NUM",
        "SHELL_ERROR",
        "SHELL_EXIT_CODE",
        "SHOW_ALL_RESULTS",
        "SHOW_CONTEXT",
        "SINGLELINE",
        "SINGLESTEP",
        "SQLSTATE",
        "USER",
        "VERBOSITY",
        "VERSION",
        "VERSION_NAME",
        "VERSION_NUM",
        "WATCH_INTERVAL",
    ]
)
VARIABLE_KINDS = frozenset({_Kind.WORD, _Kind.STRING, _Kind.QUOTED_IDENT})
PSQL_VARIABLE_RE = re.compile(rf":(?:{'|'.join(sorted(PSQL_VARIABLES))})(?![\w$])")

# psql's pg_dump-only commands: \restrict puts psql in a mode that refuses other meta-commands.
HARMLESS_META_COMMANDS = frozenset({"\\restrict", "\\unrestrict"})
META_NAME_RE = re.compile(r"\\[^\s\\]*")


def read_script(sql: str, start: int = 0, standard_strings: bool = True) -> Script:
    """Read ``sql`` from offset ``start`` as ``psql -f`` would, with ``standard_conforming_strings``
    as given at that point.

        >>> read_script("SET standard_conforming_strings = off;\\nSELECT 'a\\\\';b';").statements[1]
        Statement(text="SELECT 'a\\\\';b'", offset=39, line=2)
    """
    return _ScriptReader(sql, start, standard_strings).read()


class _ScriptReader:
    """The splitter's state: the current statement, its nesting, the lexer it steers."""

    def __init__(self, sql: str, start: int, standard_strings: bool) -> None:
        self.sql = sql
        self.lines = _LineIndex(sql)
        self.lexer = _Lexer(sql, start, standard_strings)
        self.statements: list[Statement] = []
        self.meta: list[MetaCommand] = []
        self.variables: list[tuple[int, str]] = []
        self.first: _Token | None = None
        self.last: _Token | None = None

    def read(self) -> Script:
        atomic = _AtomicBodyTracker()
        paren_depth = 0
        sql = self.sql
        for token in self.lexer.tokens():
            kind = token.kind
            if kind in COMMENT_KINDS:
                continue
            if kind is _Kind.META:
                self._see_meta(token)
                continue
            if kind is _Kind.SEMICOLON and paren_depth == 0 and atomic.depth == 0:
                self._end_statement(token.end)
                atomic.reset()
                continue
            if kind is _Kind.LPAREN:
                paren_depth += 1
            elif kind is _Kind.RPAREN and paren_depth > 0:
                paren_depth -= 1
            elif kind is _Kind.WORD and atomic.wants():
                atomic.see_word(sql[token.start : token.end], paren_depth)
            # A variable is glued to a colon: most tokens are not, and are passed over here.
            if kind in VARIABLE_KINDS and sql[token.start - 1] == ":" and self.last is not None:
                self._see_variable(self.last, token)
            if self.first is None:
                self.first = token
            self.last = token
        self._end_statement(len(sql))
        return Script(self.statements, self.meta, self.variables)

    def _see_variable(self, before: _Token, token: _Token) -> None:
        """``:NAME``, ``:'NAME'``, ``:"NAME"`` glued to a lone colon (``::`` is a cast)."""
        sql = self.sql
        if before.end != token.start or sql[before.start : before.end] != ":":
            return
        if sql[before.start - 1 : before.start] == ":":  # the second colon of a cast
            return
        text = sql[token.start : token.end]
        name = text[1:-1] if token.kind is not _Kind.WORD else text
        if name in PSQL_VARIABLES:
            self.variables.append((self.lines.locate(before.start)[0], ":" + text))

    def _see_meta(self, token: _Token) -> None:
        text = self.sql[token.start : token.end]
        name_match = META_NAME_RE.match(text)
        name = name_match.group() if name_match else text
        inside = self.first is not None
        if name in HARMLESS_META_COMMANDS and not inside:
            return
        line = self.lines.locate(token.start)[0]
        self.meta.append(MetaCommand(line, name, inside))

    def _end_statement(self, end: int) -> None:
        first, last = self.first, self.last
        self.first = self.last = None
        if first is None or last is None:
            return
        text = self.sql[first.start : last.end]
        reading_with = self.lexer.standard_strings
        copy = None
        if _reads_copy_data(text):
            copy, end = self._copy_data(end)
        changed = standard_strings_after(text)
        if changed is not None:
            self.lexer.standard_strings = changed
        line = self.lines.locate(first.start)[0]
        self.statements.append(Statement(text, first.start, line, end, reading_with, copy))

    def _copy_data(self, after_semicolon: int) -> tuple[CopyData, int]:
        """psql sends the statement, then reads the data from the file's next line on."""
        sql = self.sql
        newline = sql.find("\n", after_semicolon)
        start = len(sql) if newline == -1 else newline + 1
        terminator = COPY_DATA_END_RE.search(sql, start)
        data_end, resume = (
            (terminator.start(), terminator.end()) if terminator else (len(sql), len(sql))
        )
        self.lexer.skip = (start, resume)  # the rest of the statement's line is still SQL
        line = self.lines.locate(start)[0]
        return CopyData(sql[start:data_end], line), resume


COPY_HEAD_RE = re.compile(r"\s*copy\b", re.IGNORECASE)


def _reads_copy_data(text: str) -> bool:
    """``COPY ... FROM STDIN`` (the server then asks the client for the data)."""
    if not COPY_HEAD_RE.match(text):
        return False
    return ("FROM", "STDIN") in _top_level_pairs(text)


def copy_direction(text: str) -> str | None:
    """ "in" for COPY ... FROM STDIN, "out" for COPY ... TO STDOUT, None for other statements.

    >>> copy_direction("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)")
    'out'
    """
    if not COPY_HEAD_RE.match(text):
        return None
    pairs = _top_level_pairs(text)
    if ("FROM", "STDIN") in pairs:
        return "in"
    if ("TO", "STDOUT") in pairs:
        return "out"
    return None


def _top_level_pairs(text: str) -> set[tuple[str, str]]:
    words, depth = [], 0
    for word in _words(text):
        depth += {"(": 1, ")": -1}.get(word, 0)
        if depth == 0:
            words.append(word)
    return set(itertools.pairwise(words))


# SET [SESSION] standard_conforming_strings { TO | = } value, RESET ..., and set_config().
SCS_NAME = "standard_conforming_strings"
SCS_SET_RE = re.compile(
    r"set\s+(?:session\s+)?standard_conforming_strings\s*(?:to|=)\s*'?(?P<value>\w+)'?\s*\Z",
    re.IGNORECASE,
)
SCS_RESET_RE = re.compile(r"reset\s+(?:standard_conforming_strings|all)\s*\Z", re.IGNORECASE)
SCS_SET_CONFIG_RE = re.compile(
    r"\bset_config\s*\(\s*'standard_conforming_strings'\s*,\s*'(?P<value>\w+)'\s*,\s*false\s*\)",
    re.IGNORECASE,
)
ON_WORDS = frozenset({"on", "true", "yes", "1", "default"})
OFF_WORDS = frozenset({"off", "false", "no", "0"})


def mentions_standard_strings(text: str) -> bool:
    """A statement that may change ``standard_conforming_strings`` (the server parses a
    multi-statement round trip with the value it had at its start, so such a statement
    ends one)."""
    return SCS_NAME in text.lower() or SCS_RESET_RE.match(text) is not None


def standard_strings_after(text: str) -> bool | None:
    """The value psql would see after ``text`` ran, when the text alone tells; None otherwise.

    The server's default is assumed on (the runner checks it when it runs the file).

        >>> standard_strings_after("SET standard_conforming_strings = off")
        False
    """
    if not mentions_standard_strings(text):
        return None
    if SCS_RESET_RE.match(text):
        return True
    match = SCS_SET_RE.match(text) or SCS_SET_CONFIG_RE.search(text)
    if match is None:
        return None
    value = match["value"].lower()
    if value in ON_WORDS:
        return True
    return False if value in OFF_WORDS else None


def position_to_line_column(sql: str, offset: int) -> tuple[int, int]:
    """Turn a 0-based character offset into a 1-based (line, column).

    For a server error position P (1-based, in characters) in a statement sent
    on its own, the file offset is ``statement.offset + P - 1``.

        >>> position_to_line_column("SELECT 1;\\nSELEC 2;", 10)
        (2, 1)
    """
    return _LineIndex(sql).locate(offset)


# --- the statements of a block -----------------------------------------------------------------


def inner_statements(statement: Statement) -> list[Statement]:
    """The statements the server runs for ``statement``, each with its own place in the file.

    A format may group several statements into one, sent as one text (goose's StatementBegin
    and StatementEnd): the server runs, counts and positions them one by one, and an error or
    a lint finding names the one it is about. Any other statement is itself alone. Needs a
    ``statement`` whose text is written at its offset in the text that runs.

        >>> block = Statement("CREATE TABLE a (id int);\\nALTER TABLE nope ADD x int", 40, 3)
        >>> inner_statements(block)[1]
        Statement(text='ALTER TABLE nope ADD x int', offset=65, line=4)
    """
    if ";" not in statement.text:  # most statements: nothing to read again
        return [statement]
    inner = read_script(statement.text, standard_strings=statement.standard_strings).statements
    if len(inner) < 2:
        return [statement]
    return [
        Statement(
            each.text,
            statement.offset + each.offset,
            statement.line + each.line - 1,
            statement.offset + each.end,
            each.standard_strings,
            None
            if each.copy is None
            else CopyData(each.copy.text, statement.line + each.copy.line - 1),
        )
        for each in inner
    ]


def server_statements(statements: Iterable[Statement]) -> list[Statement]:
    """``statements`` with each block replaced by its statements: one per result the server
    returns when they are sent together, so that counting results finds the failing one."""
    return [each for statement in statements for each in inner_statements(statement)]


def statement_at(statements: Sequence[Statement], offset: int) -> Statement:
    """The statement of ``statements`` (in file order) that the file offset ``offset`` (an
    error's position) falls in: the last one starting at or before it.

        >>> block = Statement("SELECT 1;\\nSELECT * FROM nope", 0, 1)
        >>> statement_at(inner_statements(block), 24).text
        'SELECT * FROM nope'
    """
    starts = [statement.offset for statement in statements]
    return statements[max(bisect.bisect_right(starts, offset) - 1, 0)]


def strip_comments(text: str) -> str:
    """Replace each comment outside strings with one space (strings stay intact).

    >>> strip_comments("SELECT 1 /* one */ + 2; -- two")
    'SELECT 1   + 2;  '
    """
    pieces: list[str] = []
    done = 0
    for token in _Lexer(text).tokens():
        if token.kind in COMMENT_KINDS:
            pieces.append(text[done : token.start] + " ")
            done = token.end
    pieces.append(text[done:])
    return "".join(pieces)


# --- transaction mode ---------------------------------------------------------------------------


class TransactionMode(Enum):
    TRANSACTION = "transaction"
    NO_TRANSACTION = "no-transaction"


@dataclass(frozen=True)
class ModeDecision:
    """How a file must run, and a sentence saying why (for the plan and the log)."""

    mode: TransactionMode
    reason: str


NO_TRANSACTION_HEADER_RE = re.compile(r"--\s*migrate\s*:\s*no-transaction(?:\s.*)?", re.IGNORECASE)
HEADER_REASON = "-- migrate:no-transaction header"
DEFAULT_REASON = "default"
# Statements that open or close a transaction block; a file using them runs like psql -f does.
TRANSACTION_CONTROL = {
    ("BEGIN",): "BEGIN",
    ("START", "TRANSACTION"): "START TRANSACTION",
    ("COMMIT",): "COMMIT",
    ("END",): "END",
    ("ROLLBACK",): "ROLLBACK",
    ("ABORT",): "ABORT",
}
# Two-phase commit finishers that PostgreSQL refuses inside a transaction block.
TWO_PHASE_FINISHERS = (("COMMIT", "PREPARED"), ("ROLLBACK", "PREPARED"))
# Object kinds whose CREATE/DROP PostgreSQL refuses inside a transaction block.
CLUSTER_WIDE_OBJECTS = ("DATABASE", "TABLESPACE", "SUBSCRIPTION")
REINDEX_MANY_TABLES = ("SCHEMA", "SYSTEM", "DATABASE")
# Every word without which no statement leaves the default mode (the checks below need one).
MODE_WORDS = frozenset(
    {word for prefix in TRANSACTION_CONTROL for word in prefix}
    | {word for finisher in TWO_PHASE_FINISHERS for word in finisher}
    | set(CLUSTER_WIDE_OBJECTS)
    | set(REINDEX_MANY_TABLES)
    | {"VACUUM", "DISCARD", "CONCURRENTLY", "SYSTEM", "SUBSCRIPTION", "REINDEX", "CLUSTER"}
    | {"STANDARD_CONFORMING_STRINGS"}
)
# A keyword psql's lexer sees is never glued to a word character or "$", so this finds every
# one of them (and some inside strings and comments, which only costs the full check).
MODE_WORDS_RE = re.compile(
    rf"(?<![\w$])(?:{'|'.join(sorted(MODE_WORDS))})(?![\w$])|no-transaction", re.IGNORECASE
)
QUOTED = "<quoted>"  # stands for any non-word token, so it never matches a keyword


PUNCTUATION_KINDS = frozenset({_Kind.LPAREN, _Kind.RPAREN, _Kind.OTHER})


def _word(text: str, token: _Token) -> str:
    if token.kind is _Kind.WORD:
        return text[token.start : token.end].upper()
    if token.kind in PUNCTUATION_KINDS:
        return text[token.start : token.end]
    return QUOTED  # strings, quoted identifiers, numbers: never a keyword


def _words(text: str) -> list[str]:
    """The statement's tokens, comments dropped, keywords upper-cased, everything else masked."""
    return [_word(text, token) for token in _significant_tokens(text)]


def words(text: str) -> list[str]:
    """The statement's words as the runner's checks read them: comments dropped, keywords and
    plain identifiers upper-cased, punctuation kept, strings and quoted names masked.

    >>> words("update t set a = 'x' -- c\\n where id = $1")
    ['UPDATE', 'T', 'SET', 'A', '=', '<quoted>', 'WHERE', 'ID', '=', '<quoted>']
    """
    return _words(text)


def parameters(text: str) -> set[str]:
    """The ``$n`` parameters ``text`` uses; one inside a string, a comment or a dollar-quoted
    body does not count.

    >>> sorted(parameters("SELECT $1, '$2' /* $3 */, $fn$ $4 $fn$, $2"))
    ['$1', '$2']
    """
    return {
        text[token.start : token.end]
        for token in _iter_significant_tokens(text)
        if token.kind is _Kind.PARAM
    }


def _starts(words: list[str], *expected: str) -> bool:
    return tuple(words[: len(expected)]) == expected


def _skip_parenthesized(words: list[str], index: int) -> int:
    """Index after an optional ( ... ) group starting at ``index`` (e.g. REINDEX (VERBOSE))."""
    if index >= len(words) or words[index] != "(":
        return index
    depth = 0
    for position in range(index, len(words)):
        depth += {"(": 1, ")": -1}.get(words[position], 0)
        if depth == 0:
            return position + 1
    return len(words)


FALSE_WORDS = ("FALSE", "OFF")


def _option_off(words: list[str], name: str) -> bool:
    """``name = false`` / ``name false`` in an option list (``WITH (connect = false)``)."""
    for index, word in enumerate(words):
        if word == name:
            value = words[index + 2] if words[index + 1 : index + 2] == ["="] else None
            value = value or (words[index + 1] if index + 1 < len(words) else None)
            return value in FALSE_WORDS
    return False


def _create_refused(words: list[str]) -> str | None:
    unique = 1 if words[1:2] == ["UNIQUE"] else 0
    if words[1 + unique : 3 + unique] == ["INDEX", "CONCURRENTLY"]:
        return "CREATE UNIQUE INDEX CONCURRENTLY" if unique else "CREATE INDEX CONCURRENTLY"
    if words[1:2] == ["SUBSCRIPTION"] and (
        _option_off(words, "CONNECT") or _option_off(words, "CREATE_SLOT")
    ):
        return None  # no replication slot is created: PostgreSQL allows it in a transaction
    if len(words) > 1 and words[1] in CLUSTER_WIDE_OBJECTS:
        return f"CREATE {words[1]}"
    return None


def _drop_refused(words: list[str]) -> str | None:
    if _starts(words, "DROP", "INDEX", "CONCURRENTLY"):
        return "DROP INDEX CONCURRENTLY"
    if len(words) > 1 and words[1] in CLUSTER_WIDE_OBJECTS:
        return f"DROP {words[1]}"
    return None


def _alter_refused(words: list[str]) -> str | None:
    if words[1:2] in (["SYSTEM"], ["SUBSCRIPTION"]):
        return f"ALTER {words[1]}"
    pairs = list(itertools.pairwise(words))
    if words[1:2] == ["DATABASE"] and ("SET", "TABLESPACE") in pairs:
        return "ALTER DATABASE ... SET TABLESPACE"
    # CONCURRENTLY is reserved as a table name: it can only be DETACH's option.
    if words[1:2] == ["TABLE"] and ("DETACH", "PARTITION") in pairs and "CONCURRENTLY" in words:
        return "DETACH PARTITION ... CONCURRENTLY"
    return None


def _reindex_refused(words: list[str]) -> str | None:
    kind_index = _skip_parenthesized(words, 1)
    options = words[1:kind_index]
    if "CONCURRENTLY" in words[kind_index:] or (
        "CONCURRENTLY" in options and not _option_off(options, "CONCURRENTLY")
    ):
        return "REINDEX ... CONCURRENTLY"
    if kind_index < len(words) and words[kind_index] in REINDEX_MANY_TABLES:
        return f"REINDEX {words[kind_index]}"
    return None


def _cluster_refused(words: list[str]) -> str | None:
    rest = words[_skip_parenthesized(words, 1) :]
    if rest in ([], ["VERBOSE"]):
        return "CLUSTER without a table name"
    return None


def _refused_in_transaction(words: list[str]) -> str | None:
    """Name the construct if PostgreSQL refuses this statement inside a transaction block."""
    head = words[0]  # one of INTERESTING_HEADS
    if head == "VACUUM":
        return "VACUUM"
    if _starts(words, "DISCARD", "ALL"):
        return "DISCARD ALL"
    for finisher in TWO_PHASE_FINISHERS:
        if _starts(words, *finisher):
            return " ".join(finisher)
    checks = {
        "CREATE": _create_refused,
        "DROP": _drop_refused,
        "ALTER": _alter_refused,
        "REINDEX": _reindex_refused,
        "CLUSTER": _cluster_refused,
    }
    check = checks.get(head)
    return check(words) if check else None


# ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] s: a savepoint, inside the file's transaction.
SAVEPOINT_ROLLBACK_WORDS = 3


def _transaction_control(words: list[str]) -> str | None:
    if words[:1] == ["ROLLBACK"] and "TO" in words[1:SAVEPOINT_ROLLBACK_WORDS]:
        return None
    for prefix, name in TRANSACTION_CONTROL.items():
        if _starts(words, *prefix):
            return name
    return None


def _header_line_comments(sql: str) -> Iterator[_Token]:
    """The line comments before the first statement, where ``-- migrate:`` directives live."""
    for token in _Lexer(sql).tokens():
        if token.kind is _Kind.SEMICOLON:  # an empty statement does not end the header
            continue
        if token.kind not in COMMENT_KINDS:
            return
        if token.kind is _Kind.LINE_COMMENT:
            yield token


def _has_no_transaction_header(sql: str) -> bool:
    return any(
        NO_TRANSACTION_HEADER_RE.fullmatch(sql[token.start : token.end])
        for token in _header_line_comments(sql)
    )


# First words of the statements the two checks below look at; any other statement (the
# INSERTs of a data file) is passed over after its first token.
INTERESTING_HEADS = frozenset(
    {"VACUUM", "DISCARD", "COMMIT", "ROLLBACK", "CREATE", "DROP", "ALTER", "REINDEX", "CLUSTER"}
    | {prefix[0] for prefix in TRANSACTION_CONTROL}
    | {"SET"}
)
# psql -f runs it in autocommit, where it only warns: in the runner's transaction it would
# change how the rest of the file reads.
LOCAL_STANDARD_STRINGS = ["SET", "LOCAL", "STANDARD_CONFORMING_STRINGS"]
LOCAL_STANDARD_STRINGS_REASON = (
    "line {line}: SET LOCAL standard_conforming_strings has no effect outside a transaction "
    "block, as with psql -f"
)


# How many words decide a statement with this head (see _create_refused, _drop_refused).
WORDS_NEEDED = {"CREATE": 4, "DROP": 3}
SUBSCRIPTION_RE = re.compile(r"\s*create\s+subscription\b", re.IGNORECASE)


def _statement_reason(statement: Statement) -> str | None:
    tokens = _iter_significant_tokens(statement.text)  # lexed once, only as far as needed
    first = next(tokens, None)
    head = _word(statement.text, first) if first else None
    if head not in INTERESTING_HEADS:
        return None
    # CREATE and DROP are decided by their first words: a function body is not read again.
    needed = WORDS_NEEDED.get(head)
    if head == "CREATE" and SUBSCRIPTION_RE.match(statement.text):
        needed = None  # its options decide
    rest = itertools.islice(tokens, None if needed is None else needed - 1)
    words = [head, *(_word(statement.text, token) for token in rest)]
    refused = _refused_in_transaction(words)
    if refused:
        return f"line {statement.line}: {refused} cannot run inside a transaction block"
    control = _transaction_control(words)
    if control:
        return f"line {statement.line}: the file controls its own transactions ({control})"
    if words[:3] == LOCAL_STANDARD_STRINGS:
        return LOCAL_STANDARD_STRINGS_REASON.format(line=statement.line)
    return None


def may_run_in_transaction_block(statement: Statement) -> bool:
    """False for a statement PostgreSQL refuses in a transaction block, or a BEGIN/COMMIT.

    >>> may_run_in_transaction_block(split_statements("VACUUM accounts;")[0])
    False
    """
    return _statement_reason(statement) is None


def may_leave_default_mode(sql: str) -> bool:
    """False when no statement of ``sql`` can need a mode other than the default transaction.

    A cheap scan that spares most files the lexer, the runner's main per-file cost.

        >>> may_leave_default_mode("CREATE TABLE t (a int);")
        False
    """
    return MODE_WORDS_RE.search(sql) is not None


def transaction_mode(sql: str, statements: list[Statement]) -> ModeDecision:
    """Decide whether a file runs in one transaction or statement by statement in autocommit.

    ``statements`` is ``split_statements(sql)``.  Keywords are matched on the
    statements' tokens, so a string, comment or function body that mentions
    ``CREATE INDEX CONCURRENTLY`` does not count.

        >>> sql = "CREATE INDEX CONCURRENTLY i ON t (a);"
        >>> transaction_mode(sql, split_statements(sql))
        ModeDecision(mode=<TransactionMode.NO_TRANSACTION: 'no-transaction'>, reason='line 1: CREATE
        INDEX CONCURRENTLY cannot run inside a transaction block')
    """
    if _has_no_transaction_header(sql):
        return ModeDecision(TransactionMode.NO_TRANSACTION, HEADER_REASON)
    for statement in statements:
        reason = _statement_reason(statement)
        if reason:
            return ModeDecision(TransactionMode.NO_TRANSACTION, reason)
    return ModeDecision(TransactionMode.TRANSACTION, DEFAULT_REASON)


# --- what the runner refuses up front ----------------------------------------------------------

# Files without any of these need no reading before they are sent whole (most files). Plain
# substring searches: a regex with word boundaries takes seconds on a 50 MB data file.
NEEDS_READING_MARKS = ("\\", "copy", "prepare", "reset", "standard_conforming_strings")
VARIABLE_MARKS = (":'", ':"')
PREPARE_TRANSACTION_RE = re.compile(r"prepare\s+transaction\b", re.IGNORECASE)
REFUSED_META = "psql meta-command {command}: the runner sends SQL only, never psql's commands"
REFUSED_META_INSIDE = "psql meta-command {command} inside a statement: the runner sends SQL only"
REFUSED_PSQL_VARIABLE = (
    "psql variable {reference}: psql replaces it with its own value, the runner sends SQL as it is"
)
REFUSED_PREPARE_TRANSACTION = (
    "PREPARE TRANSACTION leaves the file's work uncommitted, so it could never be recorded"
)


REFUSED_OPEN_TRANSACTION = (
    "{control} here is not ended by COMMIT: psql would roll the file's work back when it ends, "
    "the runner will not record work it cannot commit"
)
OPENING = frozenset({"BEGIN", "START TRANSACTION"})
CLOSING = frozenset({"COMMIT", "END", "ROLLBACK", "ABORT"})


def unterminated_transaction(statements: list[Statement]) -> tuple[int, str] | None:
    """(line, why) when the file's own BEGIN is still open at its end; None otherwise.

    >>> unterminated_transaction(split_statements("BEGIN;\\nCREATE TABLE t ();"))
    (1, "BEGIN here is not ended by COMMIT: ...")
    """
    opened: tuple[int, str] | None = None  # line and statement of the open BEGIN
    for statement in statements:
        if not TRANSACTION_HEAD_RE.match(statement.text):
            continue
        words = _words(statement.text)
        found = _transaction_control(words)
        if found in OPENING:
            opened = statement.line, found
        elif found in CLOSING and "CHAIN" not in words:
            opened = None
    if opened is None:
        return None
    line, control = opened
    return line, REFUSED_OPEN_TRANSACTION.format(control=control)


TRANSACTION_HEAD_RE = re.compile(r"(?:begin|start|commit|end|rollback|abort)\b", re.IGNORECASE)


def needs_reading(sql: str) -> bool:
    """False when the file has no COPY, meta-command, PREPARE or setting the runner must follow.

    >>> needs_reading("CREATE TABLE t (a int);")
    False
    """
    lowered = sql.lower()
    if any(mark in lowered for mark in NEEDS_READING_MARKS):
        return True
    return any(mark in sql for mark in VARIABLE_MARKS) or PSQL_VARIABLE_RE.search(sql) is not None


def refusal(script: Script) -> tuple[int, str] | None:
    """(line, why) of the first thing in the file the runner will not run; None when none.

    >>> refusal(read_script("\\\\connect other\\nSELECT 1;"))
    (1, "psql meta-command \\\\connect: the runner sends SQL only, never psql's commands")
    """
    found: list[tuple[int, str]] = []
    for meta in script.meta_commands:
        template = REFUSED_META_INSIDE if meta.inside_statement else REFUSED_META
        found.append((meta.line, template.format(command=meta.command)))
    for line, reference in script.psql_variables:
        found.append((line, REFUSED_PSQL_VARIABLE.format(reference=reference)))
    for statement in script.statements:
        if PREPARE_TRANSACTION_RE.match(statement.text):
            found.append((statement.line, REFUSED_PREPARE_TRANSACTION))
    return min(found) if found else None


# --- CREATE INDEX CONCURRENTLY ------------------------------------------------------------------


@dataclass(frozen=True)
class ConcurrentIndex:
    """The index a ``CREATE [UNIQUE] INDEX CONCURRENTLY name ON table`` statement builds."""

    name: str  # as stored in pg_class.relname (unquoted, case-folded)
    table: str  # as written (possibly quoted or schema-qualified), for to_regclass


def _identifier(text: str, token: _Token, escape: str) -> str:
    """The catalog name of an identifier token: quoted ones verbatim, ``U&"..."`` ones with
    their escapes decoded (``escape`` from a ``UESCAPE`` clause), others in lower case."""
    raw = text[token.start : token.end]
    if token.kind is not _Kind.QUOTED_IDENT:
        return raw.lower()
    if raw.startswith('"'):
        return raw[1:-1].replace('""', '"')
    return _unicode_escapes(raw[3:-1].replace('""', '"'), escape)


def _unicode_escapes(body: str, escape: str) -> str:
    """PostgreSQL's Unicode escapes: ``\\XXXX``, ``\\+XXXXXX``, a doubled escape character;
    UTF-16 surrogate pairs combine into one character.

        >>> _unicode_escapes("d\\\\0061t\\\\+000061", "\\\\")
        'data'
    """
    quoted = re.escape(escape)
    pattern = re.compile(rf"{quoted}(?:({quoted})|\+([0-9A-Fa-f]{{6}})|([0-9A-Fa-f]{{4}}))")
    decoded = pattern.sub(lambda m: escape if m[1] else chr(int(m[2] or m[3], 16)), body)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16")


def concurrent_index(text: str) -> ConcurrentIndex | None:
    """The named index a CREATE INDEX CONCURRENTLY statement builds; None for other statements.

    A build interrupted half-way leaves an INVALID index of that name, which ``IF NOT EXISTS``
    would then skip for ever: the runner drops it first (see migrator.apply.repair).

        >>> concurrent_index('CREATE INDEX CONCURRENTLY IF NOT EXISTS "Ix" ON app.t (a)')
        ConcurrentIndex(name='Ix', table='app.t')
    """
    tokens = _significant_tokens(text)
    words = [_word(text, token) for token in tokens]
    if not words or _create_refused(words) not in (
        "CREATE INDEX CONCURRENTLY",
        "CREATE UNIQUE INDEX CONCURRENTLY",
    ):
        return None
    index = words.index("CONCURRENTLY") + 1
    if words[index : index + 3] == ["IF", "NOT", "EXISTS"]:
        index += 3
    if index >= len(words) or words[index] == "ON":
        return None  # no name: PostgreSQL picks a new one each time
    escape = "\\"
    if words[index + 1 : index + 2] == ["UESCAPE"] and index + 2 < len(tokens):
        escape = text[tokens[index + 2].start + 1 : tokens[index + 2].end - 1]
        del tokens[index + 1 : index + 3], words[index + 1 : index + 3]
    name = _identifier(text, tokens[index], escape)
    table_at = index + (3 if words[index + 2 : index + 3] == ["ONLY"] else 2)
    table_end = next(
        (i for i in range(table_at, len(words)) if words[i] in ("(", "USING")), len(words)
    )
    if table_at >= table_end:
        return None
    return ConcurrentIndex(name, text[tokens[table_at].start : tokens[table_end - 1].end])
