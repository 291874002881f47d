"""The lexer of migrator.files.sql token by token: each kind of token, where each ends, and
the same tokens (and statements) as the reference lexer it replaced (reference_lexer.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from migrator.files import sql
from migrator.files.sql import _Kind, _Lexer, read_script
from tests.unit.files.reference_lexer import ReferenceLexer

REPO = Path(__file__).resolve().parents[3]


def lexed(text: str, standard_strings: bool = True) -> list[tuple[str, str]]:
    """(kind, text) of every token, comments included."""
    return [
        (token.kind.name, text[token.start : token.end])
        for token in _Lexer(text, 0, standard_strings).tokens()
    ]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        # words: letters, digits, _, $ inside, any non-ASCII letter
        ("SELECT a_1$x ünïcode", [("WORD", "SELECT"), ("WORD", "a_1$x"), ("WORD", "ünïcode")]),
        # numbers, with a fraction, an exponent, glued letters ("junk")
        (
            "1 1.5 .5 1e3 2.5E-3 12abc 1.",
            [("NUMBER", t) for t in ("1", "1.5", ".5", "1e3", "2.5E-3", "12abc", "1.")],
        ),
        ("1..2", [("NUMBER", "1."), ("NUMBER", ".2")]),
        ("1a$b$", [("NUMBER", "1a$b$")]),  # a "$" in letters glued to a number is theirs
        ("1$", [("NUMBER", "1"), ("OTHER", "$")]),
        # punctuation: each character on its own
        (
            "(a);:: -/*",
            [
                ("LPAREN", "("),
                ("WORD", "a"),
                ("RPAREN", ")"),
                ("SEMICOLON", ";"),
                ("OTHER", ":"),
                ("OTHER", ":"),
                ("OTHER", "-"),
                ("BLOCK_COMMENT", "/*"),  # unterminated: to the end
            ],
        ),
        (
            "a - b / c * d",
            [
                *[("WORD", "a"), ("OTHER", "-"), ("WORD", "b"), ("OTHER", "/"), ("WORD", "c")],
                *[("OTHER", "*"), ("WORD", "d")],
            ],
        ),
        ("\v.", [("OTHER", "\v"), ("OTHER", ".")]),  # a vertical tab is not a blank
        # blanks: space, tab, newlines, form feed
        (" \t\r\n\fx \f", [("WORD", "x")]),
        ("\ufeffSELECT", [("WORD", "SELECT")]),  # a byte order mark at the start is no token
        ("x\ufeff", [("WORD", "x\ufeff")]),  # elsewhere it is a letter
        # line comments: up to the end of the line, the newline excluded
        ("a -- b ; c\nd", [("WORD", "a"), ("LINE_COMMENT", "-- b ; c"), ("WORD", "d")]),
        ("-- b\r\nd", [("LINE_COMMENT", "-- b"), ("WORD", "d")]),
        ("--", [("LINE_COMMENT", "--")]),
        # block comments, nested as PostgreSQL nests them
        ("/* a ; */ b", [("BLOCK_COMMENT", "/* a ; */"), ("WORD", "b")]),
        ("/* a /* b */ c */ d", [("BLOCK_COMMENT", "/* a /* b */ c */"), ("WORD", "d")]),
        (
            "/* 1 /* 2 /* 3 */ 2 */ 1 */;",
            [("BLOCK_COMMENT", "/* 1 /* 2 /* 3 */ 2 */ 1 */"), ("SEMICOLON", ";")],
        ),
        ("/**/x", [("BLOCK_COMMENT", "/**/"), ("WORD", "x")]),
        ("/*/ a */x", [("BLOCK_COMMENT", "/*/ a */"), ("WORD", "x")]),
        ("/* a **/x", [("BLOCK_COMMENT", "/* a **/"), ("WORD", "x")]),
        ("/* a / * b */x", [("BLOCK_COMMENT", "/* a / * b */"), ("WORD", "x")]),
        # "/*/" inside a comment opens a nested one, so one "*/" is not enough
        ("/* a /*/ b */ c", [("BLOCK_COMMENT", "/* a /*/ b */ c")]),
        ("/* a /*/ b */ c */ d", [("BLOCK_COMMENT", "/* a /*/ b */ c */"), ("WORD", "d")]),
        ("/* a /* b */ c", [("BLOCK_COMMENT", "/* a /* b */ c")]),  # unterminated
        ("/* a", [("BLOCK_COMMENT", "/* a")]),
        ("*/ a", [("OTHER", "*"), ("OTHER", "/"), ("WORD", "a")]),
        # standard strings: '' is a quote, a backslash is a character
        ("'it''s' x", [("STRING", "'it''s'"), ("WORD", "x")]),
        ("'a\\' y'", [("STRING", "'a\\'"), ("WORD", "y"), ("STRING", "'")]),
        ("'a;\nb'", [("STRING", "'a;\nb'")]),
        ("''", [("STRING", "''")]),
        # prefixed strings: the prefix is part of the string
        (
            "N'a' n'b' B'01' b'1' X'ff' x'0' U&'d' u&'e'",
            [("STRING", t) for t in ("N'a'", "n'b'", "B'01'", "b'1'", "X'ff'", "x'0'")]
            + [("STRING", "U&'d'"), ("STRING", "u&'e'")],
        ),
        ("na'b'", [("WORD", "na"), ("STRING", "'b'")]),  # a longer word is no prefix
        ("u&x", [("WORD", "u"), ("OTHER", "&"), ("WORD", "x")]),
        # escape strings: a backslash escapes, '' too
        ("E'a\\'b' x", [("STRING", "E'a\\'b'"), ("WORD", "x")]),
        ("e'a''b\\\\' x", [("STRING", "e'a''b\\\\'"), ("WORD", "x")]),
        ("E'\\\\' y'", [("STRING", "E'\\\\'"), ("WORD", "y"), ("STRING", "'")]),
        ("E'a\\\nb'", [("STRING", "E'a\\\nb'")]),  # a backslash escapes a newline too
        # an E'' literal goes on after whitespace with a newline, comments between
        ("E'a'\n'b\\'c'", [("STRING", "E'a'\n'b\\'c'")]),
        ("E'a' -- c\n  'b' x", [("STRING", "E'a' -- c\n  'b'"), ("WORD", "x")]),
        ("E'a'\n-- c\n'b'", [("STRING", "E'a'\n-- c\n'b'")]),
        ("E'a'\r'b'", [("STRING", "E'a'\r'b'")]),
        ("E'a' 'b\\'", [("STRING", "E'a'"), ("STRING", "'b\\'")]),  # same line: two literals
        ("E'a'\n\n'b'\n'c'", [("STRING", "E'a'\n\n'b'\n'c'")]),
        ("E'a'\nx'b'", [("STRING", "E'a'"), ("STRING", "x'b'")]),
        ("'a'\n'b'", [("STRING", "'a'"), ("STRING", "'b'")]),  # standard: not joined here
        # quoted identifiers
        ('"a""b" x', [("QUOTED_IDENT", '"a""b"'), ("WORD", "x")]),
        ('U&"d\\0061t" u&"x"', [("QUOTED_IDENT", 'U&"d\\0061t"'), ("QUOTED_IDENT", 'u&"x"')]),
        ('"a;b\'c"', [("QUOTED_IDENT", '"a;b\'c"')]),
        # dollar quotes: the body is opaque up to the same tag
        ("$$a;'b$$ x", [("DOLLAR", "$$a;'b$$"), ("WORD", "x")]),
        ("$fn$ $a$ ; $$ $fn$ x", [("DOLLAR", "$fn$ $a$ ; $$ $fn$"), ("WORD", "x")]),
        ("$a$ $A$ $a$", [("DOLLAR", "$a$ $A$ $a$")]),  # tags are case-sensitive
        ("$a1_é$x$a1_é$;", [("DOLLAR", "$a1_é$x$a1_é$"), ("SEMICOLON", ";")]),
        ("$a$x$ab$", [("DOLLAR", "$a$x$ab$")]),  # unterminated: $ab$ is not $a$
        ("$$x", [("DOLLAR", "$$x")]),
        # parameters, and a "$" that opens nothing
        ("$1 $23", [("PARAM", "$1"), ("PARAM", "$23")]),
        ("$1a", [("PARAM", "$1"), ("WORD", "a")]),
        ("$ a", [("OTHER", "$"), ("WORD", "a")]),
        ("$1$", [("PARAM", "$1"), ("OTHER", "$")]),  # a tag does not start with a digit
        ("$a b$", [("OTHER", "$"), ("WORD", "a"), ("WORD", "b$")]),
        ("a$$b$$", [("WORD", "a$$b$$")]),  # inside a word
        # psql meta-commands: a backslash outside quotes, to the end of the line
        ("\\set x 'a'\nSELECT", [("META", "\\set x 'a'"), ("WORD", "SELECT")]),
        ("SELECT 1 \\gset\n", [("WORD", "SELECT"), ("NUMBER", "1"), ("META", "\\gset")]),
        # unterminated literals run to the end of the text
        ("'abc; x", [("STRING", "'abc; x")]),
        ("E'abc\\'; x", [("STRING", "E'abc\\'; x")]),
        ("E'a'\n'b", [("STRING", "E'a'\n'b")]),
        ('"abc; x', [("QUOTED_IDENT", '"abc; x')]),
        ('U&"abc', [("QUOTED_IDENT", 'U&"abc')]),
        ("N'abc", [("STRING", "N'abc")]),
        # the quote of an unclosed '' pair closes the literal, as the lexer always did
        ("'abc''def", [("STRING", "'abc'"), ("STRING", "'def")]),
    ],
)
def test_each_token_kind(text: str, tokens: list[tuple[str, str]]) -> None:
    assert lexed(text) == tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        # standard_conforming_strings off: '...' and N'...' are escape strings
        ("'a\\'b' x", [("STRING", "'a\\'b'"), ("WORD", "x")]),
        ("N'a\\'b' x", [("STRING", "N'a\\'b'"), ("WORD", "x")]),
        ("n'a\\'b' x", [("STRING", "n'a\\'b'"), ("WORD", "x")]),
        ("'a'\n'b\\'c'", [("STRING", "'a'\n'b\\'c'")]),
        ("E'a\\'b'", [("STRING", "E'a\\'b'")]),
        # ...the others are not
        ("B'01\\' y'", [("STRING", "B'01\\'"), ("WORD", "y"), ("STRING", "'")]),
        ("U&'a\\' y'", [("STRING", "U&'a\\'"), ("WORD", "y"), ("STRING", "'")]),
        ('"a\\" x"', [("QUOTED_IDENT", '"a\\"'), ("WORD", "x"), ("QUOTED_IDENT", '"')]),
        ("$$a\\$$ x", [("DOLLAR", "$$a\\$$"), ("WORD", "x")]),
        ("'abc\\'", [("STRING", "'abc\\'")]),  # unterminated
    ],
)
def test_tokens_without_standard_conforming_strings(
    text: str, tokens: list[tuple[str, str]]
) -> None:
    assert lexed(text, standard_strings=False) == tokens


def test_a_setting_between_statements_changes_how_the_next_strings_read() -> None:
    # The splitter changes the lexer's state after a statement: the scan starts again there.
    sql_text = "SELECT 'a\\';\nSET standard_conforming_strings = off;\nSELECT 'b\\';c';"
    assert [s.text for s in read_script(sql_text).statements] == [
        "SELECT 'a\\'",
        "SET standard_conforming_strings = off",
        "SELECT 'b\\';c'",
    ]


def test_copy_data_is_skipped_even_right_after_the_statement() -> None:
    # Blanks after COPY's semicolon run into the data; the data's own tokens are never read.
    sql_text = "COPY t FROM stdin;\n  'x;\n\n$$ /*\n\\.\nSELECT 1;"
    script = read_script(sql_text)
    assert [s.text for s in script.statements] == ["COPY t FROM stdin", "SELECT 1"]
    assert script.statements[0].copy is not None
    assert script.statements[0].copy.text == "  'x;\n\n$$ /*\n"


def test_a_token_on_copys_line_after_the_semicolon_is_still_sql() -> None:
    sql_text = "COPY t FROM stdin; SELECT 2\n1\n\\.\n;"
    assert [s.text for s in read_script(sql_text).statements] == ["COPY t FROM stdin", "SELECT 2"]


def test_a_literal_on_copys_line_that_runs_past_the_data_is_read_whole() -> None:
    sql_text = "COPY t FROM stdin; 'abc\n1\n\\.\nx'; SELECT 1;"
    script = read_script(sql_text)
    assert [s.text for s in script.statements] == [
        "COPY t FROM stdin",
        "'abc\n1\n\\.\nx'",
        "SELECT 1",
    ]
    assert script.statements[0].copy is not None
    assert script.statements[0].copy.text == "1\n"


def test_the_lexer_resumes_where_it_was_told() -> None:
    assert lexed_from("SELECT 'a'; SELECT $$b$$", 12) == [("WORD", "SELECT"), ("DOLLAR", "$$b$$")]


def lexed_from(text: str, pos: int) -> list[tuple[str, str]]:
    return [(t.kind.name, text[t.start : t.end]) for t in _Lexer(text, pos).tokens()]


@pytest.mark.parametrize(
    ("opening", "body"),
    [("'", "a\\b"), ("E'", "a\\'b"), ('"', "a'b"), ("/*", "a/ *"), ("/* /*", "a */ /*"),
     ("$a$", "$b$ $"), ("E'a'\n'", "a\\'b")],
)  # fmt: skip
def test_an_unterminated_literal_runs_to_the_end_in_linear_time(opening: str, body: str) -> None:
    # No exponential backtracking: a long unterminated literal is read at once (timeout).
    text = opening + body * 50_000 + "x"
    assert next(_Lexer(text).tokens()).end == len(text)


# --- the same tokens as the reference lexer -------------------------------------------------------

# Pieces that start, end or change tokens; random texts made of them meet every branch.
FRAGMENTS = [
    *("SELECT", "x", "é", "1", "1.5", ".5", "1e3", "2abc", "BEGIN", "ATOMIC", "END", "CASE"),
    *("CREATE", "FUNCTION", "OR", "REPLACE", "PROCEDURE", "PASSWORD"),
    *(" ", "\n", "\r\n", "\t", "\f", "\v", ";", "(", ")", ",", ":", "::", "-", "/", "*", "&"),
    *("'", "''", '"', '""', "E'", "e'", "N'", "n'", "U&'", 'u&"', "B'", "X'", "\\", "\\'"),
    *("$", "$$", "$a$", "$A$", "$1", "$ab1$", "--", "-- c\n", "/*", "*/", "/*/", "**/"),
    *(":DBNAME", ":'DBNAME'", ':"USER"', "\\set x\n", "\\.\n", "\ufeff"),
    *("COPY t FROM stdin;\n", "SET standard_conforming_strings = off;\n"),
    *("RESET standard_conforming_strings;\n", "SET standard_conforming_strings = on;\n"),
]


def random_texts(count: int) -> list[str]:
    rng = random.Random(29)
    return ["".join(rng.choices(FRAGMENTS, k=rng.randint(1, 40))) for _ in range(count)]


def corpus_texts() -> list[str]:
    paths = [*sorted((REPO / "tests" / "fidelity" / "corpus").glob("*.sql"))]
    paths += sorted((REPO / "migrations").glob("*.sql"))
    assert len(paths) >= 10
    return [path.read_text(encoding="utf-8") for path in paths]


def token_tuples(lexer: _Lexer | ReferenceLexer) -> list[tuple[_Kind, int, int]]:
    return [(token.kind, token.start, token.end) for token in lexer.tokens()]


@pytest.mark.parametrize("standard_strings", [True, False])
def test_the_same_tokens_as_the_reference_lexer(standard_strings: bool) -> None:
    for text in corpus_texts() + random_texts(3000):
        expected = token_tuples(ReferenceLexer(text, 0, standard_strings))
        assert token_tuples(_Lexer(text, 0, standard_strings)) == expected, text


def test_the_same_statements_as_with_the_reference_lexer(monkeypatch: pytest.MonkeyPatch) -> None:
    # The splitter steers the lexer (settings, COPY data): read with each, everything agrees.
    texts = corpus_texts() + random_texts(3000)
    scripts = [read_script(text) for text in texts]
    monkeypatch.setattr(sql, "_Lexer", ReferenceLexer)
    for text, script in zip(texts, scripts, strict=True):
        expected = read_script(text)
        assert script == expected, text
        for statement, reference in zip(script.statements, expected.statements, strict=True):
            assert (statement.end, statement.standard_strings, statement.copy) == (
                reference.end,
                reference.standard_strings,
                reference.copy,
            ), text
