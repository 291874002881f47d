"""The lexer as it was before the one-pattern lexer (issue 29): it stepped through the text in
Python, one check after another at each token.  Kept as the reference the faster lexer must
agree with token for token (tests/unit/files/test_lexer_reference.py); change both together.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from migrator.files.sql import _Kind, _Token

# Characters as psql's lexer classes them; every non-ASCII character counts as a letter,
# as psql's [\200-\377] byte class does for UTF-8 text.  Written as complements of ASCII
# ranges: a class spelled with the range \u0080-\U0010ffff takes ~7 ms to compile, which
# every start of the runner would pay.
IDENT_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Z a-z _ and non-ASCII
IDENT_CONT = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also 0-9 and $
DOLLAR_TAG_CONT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also 0-9, never $

WHITESPACE_RE = re.compile(r"[ \t\n\r\f]+")
LINE_END_RE = re.compile(r"[\n\r]")
WORD_RE = re.compile(rf"{IDENT_START}{IDENT_CONT}*")
# Digits, then (PostgreSQL 15+ "junk" or older "number then identifier") any identifier
# glued to them: either way a "$" right after is part of that token, never a dollar quote.
NUMBER_RE = re.compile(rf"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:{IDENT_START}{IDENT_CONT}*)?")
PARAM_RE = re.compile(r"\$\d+")
DOLLAR_DELIMITER_RE = re.compile(rf"\$(?:{IDENT_START}{DOLLAR_TAG_CONT}*)?\$")
# Bodies after the opening quote, written as "unrolled loops" so that an unterminated
# literal fails in linear time instead of backtracking exponentially.
STANDARD_STRING_BODY_RE = re.compile(r"[^']*(?:''[^']*)*'")
ESCAPE_STRING_BODY_RE = re.compile(r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*'", re.DOTALL)
QUOTED_IDENT_BODY_RE = re.compile(r'[^"]*(?:""[^"]*)*"')
BLOCK_COMMENT_EDGE_RE = re.compile(r"/\*|\*/")
# SQL continues a string literal across whitespace that contains a newline:
# E'a\'b'  <newline>  'c\'d' is one E'' literal, so the second part keeps backslash escapes.
STRING_CONTINUATION_RE = re.compile(
    r"(?:[ \t\f]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f]|--[^\n\r]*[\n\r])*'"
)

# Prefixes that start a string or quoted identifier, longest first (psql's xestart, xusstart...).
ESCAPE_STRING_PREFIXES = ("e'", "E'")
STANDARD_STRING_PREFIXES = ("u&'", "U&'", "b'", "B'", "x'", "X'", "n'", "N'")
UNICODE_IDENT_PREFIXES = ('u&"', 'U&"')
BYTE_ORDER_MARK = "\ufeff"


class ReferenceLexer:
    """Turns SQL text into tokens, comments included; never fails (unterminated runs to the end).

    ``standard_strings`` is psql's view of ``standard_conforming_strings``; the splitter
    changes it between statements.  ``skip`` is a region (COPY data) the lexer jumps over.
    """

    def __init__(self, sql: str, pos: int = 0, standard_strings: bool = True) -> None:
        self.sql = sql
        self.pos = pos
        self.standard_strings = standard_strings
        self.skip: tuple[int, int] | None = None

    def tokens(self) -> Iterator[_Token]:
        sql = self.sql
        if self.pos == 0 and sql.startswith(BYTE_ORDER_MARK):
            self.pos = len(BYTE_ORDER_MARK)  # editors add it; it is not SQL
        while self.pos < len(sql):
            if self.skip is not None and self.pos >= self.skip[0]:
                self.pos = max(self.pos, self.skip[1])
                self.skip = None
                continue
            blank = WHITESPACE_RE.match(sql, self.pos)
            if blank:  # blanks that run into COPY data are skipped with it just above
                self.pos = blank.end()
                continue
            start = self.pos
            kind = self._scan_token()
            yield _Token(kind, start, self.pos)

    def _scan_token(self) -> _Kind:
        sql, pos = self.sql, self.pos
        char = sql[pos]
        if sql.startswith("--", pos):
            return self._rest_of_line(_Kind.LINE_COMMENT)
        if sql.startswith("/*", pos):
            return self._block_comment()
        if sql.startswith(ESCAPE_STRING_PREFIXES, pos):
            return self._escape_string(pos + 2)
        if not self.standard_strings and sql.startswith(("'", "n'", "N'"), pos):
            return self._escape_string(sql.index("'", pos) + 1)  # psql's xqstart goes to xe
        if sql.startswith(STANDARD_STRING_PREFIXES, pos):
            return self._quoted(sql.index("'", pos) + 1, STANDARD_STRING_BODY_RE, _Kind.STRING)
        if sql.startswith(UNICODE_IDENT_PREFIXES, pos):
            return self._quoted(pos + 3, QUOTED_IDENT_BODY_RE, _Kind.QUOTED_IDENT)
        if char == "'":
            return self._quoted(pos + 1, STANDARD_STRING_BODY_RE, _Kind.STRING)
        if char == "\\":
            return self._rest_of_line(_Kind.META)
        if char == '"':
            return self._quoted(pos + 1, QUOTED_IDENT_BODY_RE, _Kind.QUOTED_IDENT)
        if char == "$":
            return self._dollar()
        return self._simple_token(char)

    def _simple_token(self, char: str) -> _Kind:
        word = WORD_RE.match(self.sql, self.pos)
        if word:
            self.pos = word.end()
            return _Kind.WORD
        number = NUMBER_RE.match(self.sql, self.pos)
        if number:
            self.pos = number.end()
            return _Kind.NUMBER
        self.pos += 1
        return {"(": _Kind.LPAREN, ")": _Kind.RPAREN, ";": _Kind.SEMICOLON}.get(char, _Kind.OTHER)

    def _rest_of_line(self, kind: _Kind) -> _Kind:
        """A line comment or a meta-command: up to the end of the line, its newline excluded."""
        line_end = LINE_END_RE.search(self.sql, self.pos)
        self.pos = line_end.start() if line_end else len(self.sql)
        return kind

    def _quoted(self, body_start: int, body: re.Pattern[str], kind: _Kind) -> _Kind:
        match = body.match(self.sql, body_start)
        self.pos = match.end() if match else len(self.sql)  # unterminated: the rest of the file
        return kind

    def _escape_string(self, body_start: int) -> _Kind:
        self._quoted(body_start, ESCAPE_STRING_BODY_RE, _Kind.STRING)
        while continuation := STRING_CONTINUATION_RE.match(self.sql, self.pos):
            self._quoted(continuation.end(), ESCAPE_STRING_BODY_RE, _Kind.STRING)
        return _Kind.STRING

    def _block_comment(self) -> _Kind:
        # PostgreSQL nests block comments: /* a /* b */ c */ is one comment.
        depth = 0
        for edge in BLOCK_COMMENT_EDGE_RE.finditer(self.sql, self.pos):
            depth += 1 if edge.group() == "/*" else -1
            if depth == 0:
                self.pos = edge.end()
                return _Kind.BLOCK_COMMENT
        self.pos = len(self.sql)
        return _Kind.BLOCK_COMMENT

    def _dollar(self) -> _Kind:
        param = PARAM_RE.match(self.sql, self.pos)
        if param:
            self.pos = param.end()
            return _Kind.PARAM
        delimiter = DOLLAR_DELIMITER_RE.match(self.sql, self.pos)
        if not delimiter:
            self.pos += 1  # a lone "$" (psql's dolqfailed): the tag letters are lexed next
            return _Kind.OTHER
        # The body is opaque and ends at the first identical delimiter, so $a$ inside $fn$ is text.
        close = self.sql.find(delimiter.group(), delimiter.end())
        self.pos = len(self.sql) if close == -1 else close + len(delimiter.group())
        return _Kind.DOLLAR
