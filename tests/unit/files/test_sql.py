"""Unit tests for migrator.files.sql: the statement splitter and transaction-mode detection."""

from __future__ import annotations

import random

import pytest

from migrator.files.sql import (
    DEFAULT_REASON,
    ConcurrentIndex,
    CopyData,
    ModeDecision,
    Statement,
    TransactionMode,
    concurrent_index,
    copy_direction,
    inner_statements,
    may_leave_default_mode,
    may_run_in_transaction_block,
    needs_reading,
    position_to_line_column,
    read_script,
    redact_literals,
    refusal,
    server_statements,
    split_statements,
    standard_strings_after,
    statement_at,
    strip_comments,
    transaction_mode,
    unterminated_transaction,
)


def texts(sql: str) -> list[str]:
    return [statement.text for statement in split_statements(sql)]


def mode(sql: str) -> ModeDecision:
    decision = transaction_mode(sql, split_statements(sql))
    if decision != ModeDecision(TransactionMode.TRANSACTION, DEFAULT_REASON):
        # The scan that lets most files skip the lexer must never miss one that needs it.
        assert may_leave_default_mode(sql), sql
    return decision


# --- splitting: exact statements, offsets and lines --------------------------------------------


def test_two_statements_with_offsets_and_lines() -> None:
    sql = "CREATE TABLE t (a text);\n-- done\nINSERT INTO t VALUES (';')"
    assert split_statements(sql) == [
        Statement("CREATE TABLE t (a text)", 0, 1),
        Statement("INSERT INTO t VALUES (';')", 33, 3),
    ]


def test_offsets_point_at_the_text_in_the_file() -> None:
    sql = "\n\n   SELECT 1 ;\n\tSELECT\n  2;\n"
    statements = split_statements(sql)
    assert statements == [Statement("SELECT 1", 5, 3), Statement("SELECT\n  2", 17, 4)]
    for statement in statements:
        assert sql[statement.offset : statement.offset + len(statement.text)] == statement.text


@pytest.mark.parametrize(
    "sql", ["", "   \n\t\n", ";", ";;\n;", "-- nothing here\n", "/* x */ ; -- y"]
)
def test_empty_and_comment_only_input_gives_no_statements(sql: str) -> None:
    assert split_statements(sql) == []


def test_final_statement_without_semicolon() -> None:
    assert split_statements("SELECT 1;\nSELECT 2\n") == [
        Statement("SELECT 1", 0, 1),
        Statement("SELECT 2", 10, 2),
    ]


def test_leading_and_trailing_comments_are_outside_the_text() -> None:
    sql = "-- header\n/* block */ SELECT 1 -- trailing\n;\nSELECT 2 /* tail */"
    assert split_statements(sql) == [
        Statement("SELECT 1", 22, 2),
        Statement("SELECT 2", 45, 4),
    ]


def test_comments_inside_a_statement_stay() -> None:
    assert texts("SELECT 1 -- one; two\n + /* ; */ 2;") == ["SELECT 1 -- one; two\n + /* ; */ 2"]


def test_semicolon_in_line_comment_does_not_split() -> None:
    assert texts("SELECT 1 -- a; b\n;SELECT 2") == ["SELECT 1", "SELECT 2"]


def test_line_comment_ending_with_carriage_return() -> None:
    assert texts("SELECT 1 -- a; b\r\n;SELECT 2\r\n") == ["SELECT 1", "SELECT 2"]


def test_line_comment_at_end_of_file_without_newline() -> None:
    assert texts("SELECT 1; -- the end; really") == ["SELECT 1"]


def test_nested_block_comments() -> None:
    sql = "SELECT 1 /* outer /* inner; */ still comment; */ + 2; SELECT 3 /* a /* ; */ ; */"
    assert texts(sql) == ["SELECT 1 /* outer /* inner; */ still comment; */ + 2", "SELECT 3"]


def test_block_comment_edge_sequences() -> None:
    # Inside a comment "/*/" opens a nested one; "*/*" closes one and leaves a "*".
    assert texts("SELECT /* a /*/ b; */ c; */ 1; SELECT 2") == [
        "SELECT /* a /*/ b; */ c; */ 1",
        "SELECT 2",
    ]
    assert texts("SELECT /*/ a; */ 1; SELECT 2") == ["SELECT /*/ a; */ 1", "SELECT 2"]
    assert texts("SELECT 1 /* a */* 2; SELECT 3") == ["SELECT 1 /* a */* 2", "SELECT 3"]


def test_comment_start_glued_to_an_operator() -> None:
    assert texts("SELECT 1 +/* ; */ 2; SELECT 3 +-- ;\n 4;") == [
        "SELECT 1 +/* ; */ 2",
        "SELECT 3 +-- ;\n 4",
    ]


def test_standard_string_with_doubled_quotes() -> None:
    assert texts("SELECT 'it''s; fine';SELECT '';SELECT ''''") == [
        "SELECT 'it''s; fine'",
        "SELECT ''",
        "SELECT ''''",
    ]


def test_backslash_is_not_an_escape_in_a_standard_string() -> None:
    assert texts(r"SELECT 'C:\'; SELECT 2") == [r"SELECT 'C:\'", "SELECT 2"]


@pytest.mark.parametrize("prefix", ["E", "e"])
def test_escape_string_with_backslash_quote(prefix: str) -> None:
    sql = f"SELECT {prefix}'it\\'s; ok';SELECT 2"
    assert texts(sql) == [f"SELECT {prefix}'it\\'s; ok'", "SELECT 2"]


def test_escape_string_ending_in_escaped_backslash() -> None:
    assert texts(r"SELECT E'\\';SELECT E'\\\'';SELECT 3") == [
        r"SELECT E'\\'",
        r"SELECT E'\\\''",
        "SELECT 3",
    ]


def test_escape_string_with_doubled_quote_and_newline_escape() -> None:
    assert texts("SELECT E'a''b\\n;c';SELECT 2") == ["SELECT E'a''b\\n;c'", "SELECT 2"]


def test_escape_string_continued_on_the_next_line_keeps_backslash_escapes() -> None:
    # SQL joins 'a' <newline> 'b' into one literal; the second part is still an E'' literal.
    sql = "SELECT E'a'  -- note\n  'b\\';c';SELECT 2"
    assert texts(sql) == ["SELECT E'a'  -- note\n  'b\\';c'", "SELECT 2"]


def test_escape_string_not_continued_on_the_same_line() -> None:
    # Without a newline in between, the second quote starts a standard string.
    assert texts(r"SELECT E'a' 'b\'; SELECT 2") == [r"SELECT E'a' 'b\'", "SELECT 2"]


def test_identifier_ending_in_e_does_not_start_an_escape_string() -> None:
    assert texts(r"SELECT name'x\'; SELECT 2") == [r"SELECT name'x\'", "SELECT 2"]


def test_unicode_string_and_identifier() -> None:
    sql = "SELECT U&'d\\0061t;a' AS U&\"col;\\0041\";SELECT u&'x'"
    assert texts(sql) == ["SELECT U&'d\\0061t;a' AS U&\"col;\\0041\"", "SELECT u&'x'"]


def test_unicode_string_with_uescape() -> None:
    assert texts("SELECT U&'!0061;' UESCAPE '!'; SELECT 2") == [
        "SELECT U&'!0061;' UESCAPE '!'",
        "SELECT 2",
    ]


@pytest.mark.parametrize("prefix", ["B", "X", "N", "b", "x", "n"])
def test_other_string_prefixes(prefix: str) -> None:
    assert texts(f"SELECT {prefix}'1;0';SELECT 2") == [f"SELECT {prefix}'1;0'", "SELECT 2"]


def test_quoted_identifier_with_semicolon_and_doubled_quotes() -> None:
    sql = 'CREATE TABLE "a;b" ("say ""hi"";" int);SELECT 1'
    assert texts(sql) == ['CREATE TABLE "a;b" ("say ""hi"";" int)', "SELECT 1"]


def test_quote_characters_inside_other_quotes() -> None:
    assert texts("""SELECT '"', "'", $$'$$, '$$'; SELECT 2""") == [
        """SELECT '"', "'", $$'$$, '$$'""",
        "SELECT 2",
    ]


def test_dollar_quote_without_tag() -> None:
    sql = "DO $$ BEGIN PERFORM 1; END $$;\nSELECT 2"
    assert split_statements(sql) == [
        Statement("DO $$ BEGIN PERFORM 1; END $$", 0, 1),
        Statement("SELECT 2", 31, 2),
    ]


def test_dollar_quote_with_tag_and_nested_other_tags() -> None:
    sql = (
        "CREATE FUNCTION f() RETURNS text AS $fn$\n"
        "BEGIN\n"
        "  EXECUTE $q$ SELECT 'x;' $q$;\n"
        "  RETURN $$inner;$$;\n"
        "END $fn$ LANGUAGE plpgsql;\n"
        "SELECT f()"
    )
    statements = split_statements(sql)
    assert [s.text for s in statements] == [sql[: sql.index(";\nSELECT f()")], "SELECT f()"]
    assert statements[1].line == 6


def test_dollar_quote_closes_only_on_the_same_tag() -> None:
    assert texts("SELECT $a$ $b$ ; $ab$ ; $a$; SELECT 2") == [
        "SELECT $a$ $b$ ; $ab$ ; $a$",
        "SELECT 2",
    ]


def test_dollar_quote_tag_is_case_sensitive() -> None:
    assert texts("SELECT $Tag$ ; $tag$ ; $Tag$; SELECT 2") == [
        "SELECT $Tag$ ; $tag$ ; $Tag$",
        "SELECT 2",
    ]


def test_dollar_quote_tag_with_underscore_digits_and_unicode() -> None:
    assert texts("SELECT $_x1$;$_x1$; SELECT $ü$;$ü$") == ["SELECT $_x1$;$_x1$", "SELECT $ü$;$ü$"]


def test_positional_parameters_are_not_dollar_quotes() -> None:
    sql = "PREPARE p(int, int) AS SELECT $1 + $2; EXECUTE p(1, 2)"
    assert texts(sql) == ["PREPARE p(int, int) AS SELECT $1 + $2", "EXECUTE p(1, 2)"]


def test_dollar_inside_identifiers_is_not_a_dollar_quote() -> None:
    assert texts("SELECT a$b, c$$d, e$f$ FROM t; SELECT 2") == [
        "SELECT a$b, c$$d, e$f$ FROM t",
        "SELECT 2",
    ]


def test_dollar_after_a_number_glued_to_letters_is_not_a_dollar_quote() -> None:
    assert texts("SELECT 1a$b$; SELECT 2") == ["SELECT 1a$b$", "SELECT 2"]


def test_dollar_quote_right_after_a_number() -> None:
    assert texts("SELECT 1$$;$$; SELECT 2") == ["SELECT 1$$;$$", "SELECT 2"]


def test_lone_dollar_then_word() -> None:
    assert texts("SELECT $x ; SELECT 2") == ["SELECT $x", "SELECT 2"]


def test_semicolon_inside_parentheses_does_not_split_like_psql() -> None:
    sql = "CREATE RULE r AS ON INSERT TO t DO INSTEAD (INSERT INTO a VALUES (1); DELETE FROM b);x"
    assert texts(sql) == [sql[:-2], "x"]


def test_unbalanced_closing_parenthesis_is_ignored() -> None:
    assert texts("SELECT 1); SELECT 2") == ["SELECT 1)", "SELECT 2"]


def test_unterminated_constructs_run_to_the_end() -> None:
    assert texts("SELECT 1; SELECT 'abc; def") == ["SELECT 1", "SELECT 'abc; def"]
    assert texts("SELECT 1; SELECT $$abc; def") == ["SELECT 1", "SELECT $$abc; def"]
    assert texts("SELECT 1; SELECT /* abc; def") == ["SELECT 1", "SELECT"]
    assert texts("SELECT 1; SELECT E'abc\\") == ["SELECT 1", "SELECT E'abc\\"]
    assert texts('SELECT 1; SELECT "abc; def') == ["SELECT 1", 'SELECT "abc; def']


def test_byte_order_mark_is_skipped() -> None:
    assert split_statements("\ufeffSELECT 1;") == [Statement("SELECT 1", 1, 1)]


def test_crlf_line_numbers() -> None:
    sql = "SELECT 1;\r\nSELECT 2;\r\n\r\nSELECT 3"
    assert [(s.text, s.line) for s in split_statements(sql)] == [
        ("SELECT 1", 1),
        ("SELECT 2", 2),
        ("SELECT 3", 4),
    ]


def test_non_ascii_text_offsets_are_characters() -> None:
    sql = "SELECT 'héllo'; SELECT 'ü'"
    statements = split_statements(sql)
    assert statements[1] == Statement("SELECT 'ü'", 16, 1)


# --- BEGIN ATOMIC bodies -------------------------------------------------------------------------

ATOMIC_FUNCTION = """CREATE FUNCTION order_total(o bigint) RETURNS numeric
LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN count(*) = 0 THEN 0 ELSE sum(amount) END FROM items WHERE order_id = o;
END"""


def test_begin_atomic_function_body_is_not_split() -> None:
    sql = ATOMIC_FUNCTION + ";\nSELECT 1;"
    assert split_statements(sql) == [
        Statement(ATOMIC_FUNCTION, 0, 1),
        Statement("SELECT 1", len(ATOMIC_FUNCTION) + 2, 6),
    ]


@pytest.mark.parametrize(
    "head",
    [
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql",
        "create or replace function f() returns void language sql",
        "CREATE PROCEDURE p() LANGUAGE sql",
        "Create Or Replace Procedure p()",
    ],
)
def test_begin_atomic_with_several_statements(head: str) -> None:
    body = f"{head}\nBEGIN ATOMIC\n  INSERT INTO t VALUES (1);\n  INSERT INTO t VALUES (2);\nEND"
    assert texts(f"{body};\nSELECT 2") == [body, "SELECT 2"]


def test_begin_atomic_with_nested_case_and_begin_in_parentheses() -> None:
    body = (
        "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC\n"
        "  SELECT CASE x WHEN 1 THEN (CASE WHEN x > 0 THEN 1 END) ELSE 2 END;\n"
        "  SELECT x;\n"
        "END"
    )
    assert texts(f"{body}; SELECT 3; SELECT 4") == [body, "SELECT 3", "SELECT 4"]


def test_begin_and_end_outside_routines_split_normally() -> None:
    sql = "BEGIN; CREATE TABLE t (a int); END; SELECT CASE WHEN true THEN 1 END; COMMIT"
    assert texts(sql) == [
        "BEGIN",
        "CREATE TABLE t (a int)",
        "END",
        "SELECT CASE WHEN true THEN 1 END",
        "COMMIT",
    ]


def test_plpgsql_function_with_begin_in_dollar_quotes_is_one_statement() -> None:
    sql = (
        "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.updated_at := now(); RETURN NEW; END $$;\n"
        "CREATE TABLE t (a int);"
    )
    assert len(texts(sql)) == 2


def test_quoted_words_do_not_count_for_begin_atomic() -> None:
    sql = 'CREATE TABLE "create" ("function" int, "begin" int); SELECT 2'
    assert texts(sql) == ['CREATE TABLE "create" ("function" int, "begin" int)', "SELECT 2"]


def test_word_counting_restarts_after_each_statement() -> None:
    sql = "SELECT 1; CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; X"
    assert texts(sql) == [
        "SELECT 1",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        "X",
    ]


# --- property: joining pieces and splitting gives them back --------------------------------------

PIECES = [
    "SELECT 1",
    "SELECT 'a;b'",
    "SELECT 'it''s'",
    "SELECT E'it\\'s; \\\\'",
    "SELECT U&'d\\0061t;a'",
    'SELECT 1 AS "x;y"""',
    "DO $$ BEGIN PERFORM 1; END $$",
    "DO $body$ BEGIN EXECUTE $q$SELECT ';'$q$; END $body$",
    "SELECT $1::int",
    "SELECT a$b FROM t",
    "SELECT 1 /* a /* b; */ c; */ + 2",
    "SELECT 1 -- tail; comment\n + 2",
    "INSERT INTO t VALUES (1), (2)",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
    "CREATE RULE r AS ON INSERT TO t DO INSTEAD (SELECT 1; SELECT 2)",
    "SELECT E'line\\n'\n  'continued\\';'",
    "VACUUM",
    "BEGIN",
    "COMMIT",
]
SEPARATORS = ["", " ", "\n", "\n\n", "\t", " -- note; here\n", "/* ; */", "\n/* a /* ; */ */\n"]


def _assemble(rng: random.Random, pieces: list[str]) -> str:
    parts = [rng.choice(SEPARATORS)]
    for piece in pieces:
        parts += [piece, rng.choice(SEPARATORS), ";", rng.choice(SEPARATORS)]
        if rng.random() < 0.2:
            parts += [";", rng.choice(SEPARATORS)]  # empty statements are dropped
    if rng.random() < 0.5:
        parts.pop(-2)  # the final statement may go without a semicolon
    return "".join(parts)


@pytest.mark.parametrize("seed", range(200))
def test_joined_pieces_split_back(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [rng.choice(PIECES) for _ in range(rng.randint(1, 8))]
    sql = _assemble(rng, pieces)
    statements = split_statements(sql)
    assert [s.text for s in statements] == pieces, sql
    for statement in statements:
        assert sql[statement.offset : statement.offset + len(statement.text)] == statement.text
        assert statement.line == sql.count("\n", 0, statement.offset) + 1


# --- position_to_line_column --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(0, (1, 1)), (5, (1, 6)), (9, (1, 10)), (10, (2, 1)), (17, (2, 8)), (19, (3, 1))],
)
def test_position_to_line_column(offset: int, expected: tuple[int, int]) -> None:
    assert position_to_line_column("SELECT 1;\nSELEC 2;\nX", offset) == expected


def test_server_error_position_maps_to_file_line_and_column() -> None:
    sql = "-- header\nCREATE TABLE t (a int);\n\nSELECT a FROM\n  nowhere;\n"
    second = split_statements(sql)[1]
    server_position = second.text.index("nowhere") + 1  # the server counts from 1
    assert position_to_line_column(sql, second.offset + server_position - 1) == (5, 3)


# --- the statements of a block (goose's StatementBegin/End) --------------------------------------

# A file whose second statement is a block of three, as goose's reader gives it: the block's text
# is where it is written in the text that runs.
BLOCK_FILE = (
    "CREATE TABLE t (a int);\n\n"
    "CREATE TABLE a (id int);\n  INSERT INTO a\n    SELECT * FROM nope;\n"
    "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n"
)
BLOCK_START = BLOCK_FILE.index("CREATE TABLE a")
BLOCK = Statement(BLOCK_FILE[BLOCK_START:].rstrip().removesuffix(";"), BLOCK_START, 3)
FILE_STATEMENTS = [Statement("CREATE TABLE t (a int)", 0, 1), BLOCK]


def test_a_block_is_its_statements_each_at_its_own_place() -> None:
    inner = inner_statements(BLOCK)
    assert [(s.text, s.line) for s in inner] == [
        ("CREATE TABLE a (id int)", 3),
        ("INSERT INTO a\n    SELECT * FROM nope", 4),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", 6),
    ]
    for statement in inner:
        assert BLOCK_FILE[statement.offset :].startswith(statement.text)
        assert position_to_line_column(BLOCK_FILE, statement.offset)[0] == statement.line
    assert BLOCK_FILE[inner[0].end :].startswith("\n  INSERT")  # after its semicolon


def test_copy_data_inside_a_block_keeps_its_file_line() -> None:
    block = Statement("SELECT 1;\nCOPY t FROM stdin;\n1\n2\n\\.\nSELECT 2", 30, 7)
    inner = inner_statements(block)
    assert [(s.text, s.line) for s in inner] == [
        ("SELECT 1", 7),
        ("COPY t FROM stdin", 8),
        ("SELECT 2", 12),
    ]
    assert inner[1].copy == CopyData("1\n2\n", 9)


@pytest.mark.parametrize(
    "statement",
    [
        Statement("SELECT ';'", 5, 2),
        Statement("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", 0, 1),
        Statement("SELECT 1;", 0, 1),  # an empty statement after it sends no result
        Statement("CREATE TABLE t (a int)", 0, 1),
    ],
)
def test_a_statement_that_is_no_block_is_itself(statement: Statement) -> None:
    assert inner_statements(statement) == [statement]


def test_a_block_follows_standard_conforming_strings_as_the_server_does() -> None:
    block = Statement("SET standard_conforming_strings = off;\nSELECT 'a\\';b'", 10, 2)
    inner = inner_statements(block)
    assert [(s.text, s.line) for s in inner] == [
        ("SET standard_conforming_strings = off", 2),
        ("SELECT 'a\\';b'", 3),
    ]
    assert [s.standard_strings for s in inner] == [True, False]
    # A block read after such a SET earlier in the file starts with it off.
    later = Statement("SELECT 'a\\';b'; SELECT 2", 10, 2, standard_strings=False)
    assert [s.text for s in inner_statements(later)] == ["SELECT 'a\\';b'", "SELECT 2"]


def test_server_statements_count_one_result_per_statement_of_a_block() -> None:
    sent = server_statements(FILE_STATEMENTS)
    assert [s.line for s in sent] == [1, 3, 4, 6]
    # The failing statement's index among the results, as the transport counts them.
    assert sent[2].text.startswith("INSERT INTO a")


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ("nope", ("INSERT INTO a\n    SELECT * FROM nope", (5, 19))),
        ("INSERT", ("INSERT INTO a\n    SELECT * FROM nope", (4, 3))),
        ("(id int)", ("CREATE TABLE a (id int)", (3, 16))),
        ("(a int)", ("CREATE TABLE t (a int)", (1, 16))),
        ("LANGUAGE", ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", (6, 52))),
    ],
)
def test_an_error_position_inside_a_block_names_its_statement(
    found: str, expected: tuple[str, tuple[int, int]]
) -> None:
    """The server's position counts from the start of what was sent: here the whole file."""
    offset = BLOCK_FILE.index(found)
    statement = statement_at(server_statements(FILE_STATEMENTS), offset)
    assert (statement.text, position_to_line_column(BLOCK_FILE, offset)) == expected
    # The same place found from the block alone (sent on its own, outside a transaction).
    if offset >= BLOCK_START:
        assert statement_at(inner_statements(BLOCK), offset) == statement


def test_a_position_before_the_first_statement_is_in_the_first() -> None:
    """Whitespace or a comment before the block's first statement: nothing else to name."""
    assert statement_at(inner_statements(BLOCK), BLOCK_START - 1).line == 3


# --- strip_comments -----------------------------------------------------------------------------


def test_strip_comments_keeps_strings() -> None:
    sql = "SELECT '/* no */', $$-- no$$ /* yes /* nested */ */ -- yes\nFROM t"
    assert strip_comments(sql) == "SELECT '/* no */', $$-- no$$    \nFROM t"


# --- transaction mode ---------------------------------------------------------------------------


def test_default_is_transaction() -> None:
    assert mode("CREATE TABLE t (a int);\nCREATE INDEX i ON t (a);") == ModeDecision(
        TransactionMode.TRANSACTION, "default"
    )


def test_empty_file_is_transaction() -> None:
    assert mode("").mode is TransactionMode.TRANSACTION


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", "CREATE INDEX CONCURRENTLY"),
        ("create index concurrently if not exists i on t (a)", "CREATE INDEX CONCURRENTLY"),
        ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", "CREATE UNIQUE INDEX CONCURRENTLY"),
        ("CREATE /* x */ INDEX -- y\n CONCURRENTLY i ON t (a)", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX CONCURRENTLY"),
        ("REINDEX INDEX CONCURRENTLY i", "REINDEX ... CONCURRENTLY"),
        ("REINDEX (VERBOSE) TABLE CONCURRENTLY t", "REINDEX ... CONCURRENTLY"),
        ("REINDEX (CONCURRENTLY) TABLE t", "REINDEX ... CONCURRENTLY"),
        ("REINDEX SYSTEM app", "REINDEX SYSTEM"),
        ("REINDEX DATABASE app", "REINDEX DATABASE"),
        ("REINDEX (VERBOSE) SCHEMA public", "REINDEX SCHEMA"),
        ("VACUUM", "VACUUM"),
        ("vacuum (analyze) t", "VACUUM"),
        ("CREATE DATABASE other", "CREATE DATABASE"),
        ("DROP DATABASE IF EXISTS other", "DROP DATABASE"),
        ("ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM"),
        ("CREATE TABLESPACE fast LOCATION '/ssd'", "CREATE TABLESPACE"),
        ("DROP TABLESPACE fast", "DROP TABLESPACE"),
        ("CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p", "CREATE SUBSCRIPTION"),
        ("ALTER SUBSCRIPTION s DISABLE", "ALTER SUBSCRIPTION"),
        ("DROP SUBSCRIPTION s", "DROP SUBSCRIPTION"),
        ("ALTER DATABASE app SET TABLESPACE fast", "ALTER DATABASE ... SET TABLESPACE"),
        ("ALTER TABLE m DETACH PARTITION m_2020 CONCURRENTLY", "DETACH PARTITION ... CONCURRENTLY"),
        ("CLUSTER", "CLUSTER without a table name"),
        ("CLUSTER VERBOSE", "CLUSTER without a table name"),
        ("CLUSTER (VERBOSE)", "CLUSTER without a table name"),
        ("DISCARD ALL", "DISCARD ALL"),
        ("COMMIT PREPARED 'tx1'", "COMMIT PREPARED"),
        ("ROLLBACK PREPARED 'tx1'", "ROLLBACK PREPARED"),
    ],
)
def test_statements_refused_in_a_transaction_block(sql: str, construct: str) -> None:
    decision = mode(f"CREATE TABLE t (a int);\n\n{sql};\nSELECT 1;")
    assert decision == ModeDecision(
        TransactionMode.NO_TRANSACTION,
        f"line 3: {construct} cannot run inside a transaction block",
    )


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX i ON t (a)",
        "CREATE UNIQUE INDEX i ON t (a)",
        "DROP INDEX i",
        "REINDEX INDEX i",
        "REINDEX TABLE t",
        "CLUSTER t USING i",
        "CLUSTER VERBOSE t",
        "ALTER DATABASE app SET search_path = app, public",
        "ALTER DATABASE app RENAME TO app2",
        "ALTER TABLE m DETACH PARTITION m_2020",
        'ALTER TABLE m DETACH PARTITION "CONCURRENTLY"',
        "ALTER TYPE mood ADD VALUE 'meh'",
        "ANALYZE t",
        "DISCARD PLANS",
        "CREATE TABLE concurrently (vacuum int)",
        "SELECT 'CREATE INDEX CONCURRENTLY i ON t (a)'",
        "SELECT 1 -- CREATE INDEX CONCURRENTLY\n",
        "/* VACUUM; */ SELECT 1",
        "COMMENT ON TABLE t IS 'run VACUUM; then BEGIN; COMMIT;'",
        "DO $$ BEGIN EXECUTE 'VACUUM'; COMMIT; END $$",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $fn$ BEGIN NULL; END $fn$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        'CREATE TABLE "VACUUM" (a int)',
        "SAVEPOINT s",
    ],
)
def test_false_positives_stay_transactional(sql: str) -> None:
    assert mode(f"{sql};") == ModeDecision(TransactionMode.TRANSACTION, "default")


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        ("BEGIN", "BEGIN"),
        ("begin transaction isolation level serializable", "BEGIN"),
        ("BEGIN WORK", "BEGIN"),
        ("START TRANSACTION", "START TRANSACTION"),
        ("COMMIT", "COMMIT"),
        ("END", "END"),
        ("ROLLBACK", "ROLLBACK"),
        ("ABORT", "ABORT"),
    ],
)
def test_file_controlling_its_own_transactions(statement: str, name: str) -> None:
    decision = mode(f"-- intro\n{statement};\nCREATE TABLE t (a int);\nCOMMIT;")
    assert decision == ModeDecision(
        TransactionMode.NO_TRANSACTION,
        f"line 2: the file controls its own transactions ({name})",
    )


def test_first_reason_in_file_order_wins() -> None:
    sql = "SELECT 1;\nVACUUM;\nBEGIN;\nCOMMIT;"
    assert mode(sql).reason == "line 2: VACUUM cannot run inside a transaction block"


@pytest.mark.parametrize(
    "header",
    [
        "-- migrate:no-transaction",
        "--migrate:no-transaction",
        "-- MIGRATE:No-Transaction",
        "-- MIGRATE:NO-TRANSACTION",
        "-- migrate: no-transaction",
        "--   migrate : no-transaction   ",
        "-- migrate:no-transaction (index build on a big table)",
    ],
)
def test_no_transaction_header(header: str) -> None:
    sql = f"/* Add an index. */\n{header}\nCREATE TABLE t (a int);\n"
    assert mode(sql) == ModeDecision(
        TransactionMode.NO_TRANSACTION, "-- migrate:no-transaction header"
    )


def test_no_transaction_header_with_crlf() -> None:
    assert mode("-- migrate:no-transaction\r\nSELECT 1;\r\n").mode is TransactionMode.NO_TRANSACTION


def test_header_wins_over_statement_reasons() -> None:
    sql = "-- migrate:no-transaction\nVACUUM;"
    assert mode(sql).reason == "-- migrate:no-transaction header"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1;\n-- migrate:no-transaction\nSELECT 2;",  # after the first statement
        "/* -- migrate:no-transaction */ SELECT 1;",  # inside a block comment
        "SELECT '-- migrate:no-transaction';",  # inside a string
        "-- migrate:no-transactions\nSELECT 1;",  # a different word
        "-- do not migrate:no-transaction\nSELECT 1;",
        "-- migrate:transaction\nSELECT 1;",
    ],
)
def test_no_transaction_header_must_be_a_leading_line_comment(sql: str) -> None:
    assert mode(sql) == ModeDecision(TransactionMode.TRANSACTION, "default")


def test_header_in_comment_only_file() -> None:
    assert mode("-- migrate:no-transaction\n").mode is TransactionMode.NO_TRANSACTION


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a int);\nCREATE INDEX t_a ON t (a);",
        "ALTER TABLE t ADD COLUMN ending text; -- the pending backend appends",
        "INSERT INTO t VALUES ('x');",
    ],
)
def test_files_without_mode_words_skip_the_lexer(sql: str) -> None:
    assert not may_leave_default_mode(sql)
    assert mode(sql) == ModeDecision(TransactionMode.TRANSACTION, DEFAULT_REASON)


@pytest.mark.parametrize(
    "sql",
    [
        "-- migrate:no-transaction\nSELECT 1;",
        "vacuum t;",
        "Begin;",
        "CREATE INDEX CONCURRENTLY i ON t (a);",
    ],
)
def test_mode_words_are_found_in_any_case(sql: str) -> None:
    assert may_leave_default_mode(sql)


# --- CREATE INDEX CONCURRENTLY targets ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", ConcurrentIndex("i", "t")),
        (
            "create unique index concurrently if not exists I on app.t (a)",
            ConcurrentIndex("i", "app.t"),
        ),
        ('CREATE INDEX CONCURRENTLY "Ix" ON ONLY "T" USING gin (a)', ConcurrentIndex("Ix", '"T"')),
        # Unicode escapes: PostgreSQL names the index by the decoded text, as the drop must.
        ('CREATE INDEX CONCURRENTLY U&"d\\0061t\\+000061" ON t (a)', ConcurrentIndex("data", "t")),
        (
            "CREATE INDEX CONCURRENTLY U&\"d!0061t!!\" UESCAPE '!' ON ONLY t (a)",
            ConcurrentIndex("dat!", "t"),
        ),
        (
            'CREATE INDEX CONCURRENTLY u&"\\00E9\\D83D\\DE00""" ON t (a)',
            ConcurrentIndex('\u00e9\U0001f600"', "t"),
        ),
        ("CREATE INDEX CONCURRENTLY ON t (a)", None),
        ("CREATE INDEX i ON t (a)", None),
        ("DROP INDEX CONCURRENTLY i", None),
    ],
)
def test_concurrent_index_names_the_index_and_table(
    sql: str, expected: ConcurrentIndex | None
) -> None:
    assert concurrent_index(sql) == expected


def test_an_unterminated_uescape_clause_is_left_to_the_server() -> None:
    # PostgreSQL answers it with a syntax error; finding the index must not crash first.
    assert concurrent_index('CREATE INDEX CONCURRENTLY U&"x" UESCAPE') is None


# --- reading as psql -f reads: COPY data, standard_conforming_strings, meta-commands ------------


def test_copy_from_stdin_data_runs_to_the_backslash_dot_line() -> None:
    sql = "COPY t (a) FROM stdin;\nit's; here\n\\.\nSELECT 1;\n"
    first, second = read_script(sql).statements
    assert first.text == "COPY t (a) FROM stdin"
    assert first.copy is not None
    assert (first.copy.text, first.copy.line) == ("it's; here\n", 2)
    assert (second.text, second.line) == ("SELECT 1", 4)


def test_copy_data_without_terminator_runs_to_the_end_of_the_file() -> None:
    (statement,) = read_script("copy t from STDIN with (format csv);\na,b\n").statements
    assert statement.copy is not None and statement.copy.text == "a,b\n"


def test_text_after_a_copy_on_its_line_is_still_sql_and_data_starts_on_the_next_line() -> None:
    statements = read_script("COPY t FROM stdin; SELECT 2;\n1\n\\.\r\nSELECT 3").statements
    assert [s.text for s in statements] == ["COPY t FROM stdin", "SELECT 2", "SELECT 3"]
    assert statements[0].copy is not None and statements[0].copy.text == "1\n"


@pytest.mark.parametrize(
    ("text", "direction"),
    [
        ("COPY t FROM STDIN", "in"),
        ("copy t (a, b) from stdin with (format csv)", "in"),
        ("COPY (SELECT 1) TO STDOUT", "out"),
        ("COPY t TO stdout", "out"),
        ("COPY t FROM '/srv/file.csv'", None),
        ("SELECT 'COPY t FROM STDIN'", None),
    ],
)
def test_copy_direction(text: str, direction: str | None) -> None:
    assert copy_direction(text) == direction


def test_standard_conforming_strings_off_makes_backslash_escape_in_plain_strings() -> None:
    sql = (
        "SET standard_conforming_strings = off;\n"
        "INSERT INTO t VALUES ('it\\'s; here');\n"
        "SET standard_conforming_strings TO on;\n"
        "SELECT 'a\\';\n"
    )
    statements = read_script(sql).statements
    assert [s.text for s in statements] == [
        "SET standard_conforming_strings = off",
        "INSERT INTO t VALUES ('it\\'s; here')",
        "SET standard_conforming_strings TO on",
        "SELECT 'a\\'",
    ]
    assert [s.standard_strings for s in statements] == [True, False, False, True]


def test_a_file_read_from_the_middle_with_the_setting_off() -> None:
    sql = "SELECT 1;\nSELECT 'a\\';b';\n"
    statements = read_script(sql, start=9, standard_strings=False).statements
    assert [(s.text, s.line) for s in statements] == [("SELECT 'a\\';b'", 2)]


@pytest.mark.parametrize(
    ("text", "after"),
    [
        ("SET standard_conforming_strings = off", False),
        ("set session standard_conforming_strings to 'on'", True),
        ("SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false)", False),
        ("RESET standard_conforming_strings", True),
        ("RESET ALL", True),
        ("SET standard_conforming_strings = DEFAULT", True),
        ("SET search_path = x", None),
        ("SET standard_conforming_strings = maybe", None),  # the server refuses it
        ("DO $$ BEGIN SET standard_conforming_strings = off; END $$", None),
    ],
)
def test_which_statements_change_standard_conforming_strings(text: str, after: bool | None) -> None:
    assert standard_strings_after(text) is after


def test_pg_dump_restrict_lines_are_accepted_and_not_statements() -> None:
    sql = "\\restrict abc123\nSET client_encoding = 'UTF8';\n\\unrestrict abc123\n"
    script = read_script(sql)
    assert [s.text for s in script.statements] == ["SET client_encoding = 'UTF8'"]
    assert refusal(script) is None


@pytest.mark.parametrize(
    ("sql", "line", "command"),
    [
        ("SELECT 1;\n\\connect other\n", 2, "\\connect"),
        ("\\i other.sql\n", 1, "\\i"),
        ("\\set ON_ERROR_STOP 0\nSELECT 1;", 1, "\\set"),
        ("SELECT 1\n\\gset\n", 2, "\\gset"),
        ("SELECT 1;\n\\.\n", 2, "\\."),
    ],
)
def test_other_meta_commands_are_refused_with_their_line(sql: str, line: int, command: str) -> None:
    found = refusal(read_script(sql))
    assert found is not None
    assert found[0] == line
    assert command in found[1]


def test_backslashes_in_strings_and_comments_are_not_meta_commands() -> None:
    sql = "SELECT E'a\\\\b', '\\n', $$\\x$$; -- \\connect\n/* \\i x */"
    assert refusal(read_script(sql)) is None


def test_prepare_transaction_is_refused() -> None:
    found = refusal(read_script("BEGIN;\nCREATE TABLE t ();\nPREPARE TRANSACTION 'x';\n"))
    assert found is not None and found[0] == 3
    assert "uncommitted" in found[1]


@pytest.mark.parametrize(
    "sql",
    [
        "SAVEPOINT s; INSERT INTO t VALUES (1); ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s",
        "SAVEPOINT s; ROLLBACK TO s",
        "ROLLBACK WORK TO SAVEPOINT s",
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (connect = false)",
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (create_slot = false, "
        "enabled = false, slot_name = NONE)",
        "REINDEX (CONCURRENTLY false) TABLE t",
        "REINDEX (VERBOSE, CONCURRENTLY off) INDEX i",
    ],
)
def test_statements_that_stay_in_the_transaction(sql: str) -> None:
    assert mode(sql).mode is TransactionMode.TRANSACTION


@pytest.mark.parametrize(
    "sql",
    ["REINDEX (CONCURRENTLY true) TABLE t", "REINDEX (CONCURRENTLY) TABLE t", "ROLLBACK AND CHAIN"],
)
def test_statements_that_still_leave_the_transaction(sql: str) -> None:
    assert mode(sql).mode is TransactionMode.NO_TRANSACTION


@pytest.mark.parametrize(
    ("sql", "needed"),
    [
        ("CREATE TABLE t (a int);", False),
        ("COPY t FROM stdin;\n1\n\\.\n", True),
        ("SET standard_conforming_strings = off;", True),
        ("SELECT E'\\n';", True),
        ("PREPARE TRANSACTION 'x';", True),
        ("INSERT INTO t VALUES (1, 'plain');", False),
    ],
)
def test_which_files_need_reading(sql: str, needed: bool) -> None:
    assert needs_reading(sql) is needed


@pytest.mark.parametrize(
    ("sql", "reference"),
    [
        ("SELECT :'LAST_ERROR_MESSAGE';", ":'LAST_ERROR_MESSAGE'"),
        ('SELECT 1;\nCREATE TABLE :"DBNAME" (a int);', ':"DBNAME"'),
        ("SELECT :VERSION_NUM;", ":VERSION_NUM"),
    ],
)
def test_psql_variables_psql_defines_are_refused(sql: str, reference: str) -> None:
    found = refusal(read_script(sql))
    assert found is not None and reference in found[1]
    assert needs_reading(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1::int, x::VERSION;",
        "SELECT a[1:2], :foo, ':DBNAME', $$ :USER $$;",
        "SELECT t.DBNAME, 1 : USER FROM t;",  # glued to something else, or not glued
    ],
)
def test_casts_slices_and_undefined_variables_are_not_psql_variables(sql: str) -> None:
    assert refusal(read_script(sql)) is None


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        ("BEGIN;\nCREATE TABLE t ();\n", 1),
        ("BEGIN; COMMIT;\nSTART TRANSACTION;\nSELECT 1;", 2),
        ("BEGIN;\nCOMMIT AND CHAIN;\n", 1),
        ("BEGIN; SELECT 1; COMMIT;", None),
        ("START TRANSACTION; ROLLBACK; BEGIN; END;", None),
        ("BEGIN; SAVEPOINT s; ROLLBACK TO SAVEPOINT s; COMMIT;", None),
    ],
)
def test_a_begin_left_open_at_the_end_of_the_file(sql: str, line: int | None) -> None:
    found = unterminated_transaction(split_statements(sql))
    assert (found[0] if found else None) == line


def test_set_local_standard_conforming_strings_runs_outside_a_transaction_as_with_psql() -> None:
    sql = "SET LOCAL standard_conforming_strings = off;\nSELECT 'a\\';\n"
    decision = mode(sql)
    assert decision.mode is TransactionMode.NO_TRANSACTION
    assert decision.reason.startswith("line 1: SET LOCAL standard_conforming_strings")
    assert mode("SET standard_conforming_strings = off;").mode is TransactionMode.TRANSACTION


def test_return_case_end_body_outside_begin_atomic_does_not_swallow_the_file() -> None:
    # CASE ... END outside a BEGIN ATOMIC body must not count: an END at depth 0 would leave
    # the body "open" and merge every later statement into this one.
    sql = (
        "CREATE FUNCTION sign_of(x int) RETURNS int LANGUAGE sql\n"
        "RETURN CASE WHEN x > 0 THEN 1 ELSE 0 END;\n"
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\n"
    )
    assert texts(sql) == [
        "CREATE FUNCTION sign_of(x int) RETURNS int LANGUAGE sql\n"
        "RETURN CASE WHEN x > 0 THEN 1 ELSE 0 END",
        "CREATE INDEX CONCURRENTLY t_a ON t (a)",
    ]
    assert mode(sql) == ModeDecision(
        TransactionMode.NO_TRANSACTION,
        "line 3: CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
    )


def test_case_inside_a_begin_atomic_body_closes_with_its_own_end() -> None:
    body = (
        "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC\n"
        "  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n"
        "  SELECT 2;\n"
        "END"
    )
    assert texts(f"{body};\nSELECT 3;") == [body, "SELECT 3"]


def test_begin_atomic_function_that_is_not_the_first_statement() -> None:
    function = (
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND"
    )
    sql = f"CREATE TABLE t (a int);\n{function};\nSELECT 3;\n"
    assert split_statements(sql) == [
        Statement("CREATE TABLE t (a int)", 0, 1),
        Statement(function, 24, 2),
        Statement("SELECT 3", 24 + len(function) + 2, 7),
    ]


@pytest.mark.parametrize(
    "head", ["CREATE PROCEDURE p()", "CREATE OR REPLACE PROCEDURE p()", "create function f()"]
)
def test_begin_atomic_in_every_routine_head(head: str) -> None:
    body = (
        f"{head} LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END"
    )
    assert texts(f"{body};\nSELECT 3") == [body, "SELECT 3"]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE f (begin int); INSERT INTO f VALUES (1)",  # not a routine
        "CREATE OR REPLACE VIEW v AS SELECT 1 AS begin; SELECT 2",
        "SELECT 1 AS begin; SELECT 2",
    ],
)
def test_begin_outside_a_routine_head_is_an_ordinary_word(sql: str) -> None:
    assert len(texts(sql)) == 2


def test_a_parameter_named_begin_does_not_open_a_body() -> None:
    sql = "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN 1;\nSELECT 2;"
    assert texts(sql) == [
        "CREATE FUNCTION f(begin int) RETURNS int LANGUAGE sql RETURN 1",
        "SELECT 2",
    ]


def test_escape_string_with_a_backslash_newline_ends_at_its_quote() -> None:
    sql = "SELECT E'one\\\ntwo;';\nSELECT 2;"
    assert texts(sql) == ["SELECT E'one\\\ntwo;'", "SELECT 2"]


def test_stray_semicolon_before_the_no_transaction_header() -> None:
    sql = ";\n-- migrate:no-transaction\nCREATE TABLE t (a int);\n"
    assert mode(sql) == ModeDecision(
        TransactionMode.NO_TRANSACTION, "-- migrate:no-transaction header"
    )


@pytest.mark.parametrize("sql", ["DROP;", "REINDEX (VERBOSE);", "CLUSTER (VERBOSE", "CREATE;"])
def test_truncated_statements_are_left_to_the_server(sql: str) -> None:
    # PostgreSQL answers these with a syntax error; deciding the mode must not crash first.
    expected = "CLUSTER without a table name" if sql.startswith("CLUSTER") else None
    decision = mode(sql)
    if expected:
        assert decision.reason == f"line 1: {expected} cannot run inside a transaction block"
    else:
        assert decision == ModeDecision(TransactionMode.TRANSACTION, DEFAULT_REASON)


def test_a_quoted_index_name_keeps_its_doubled_quotes_as_one() -> None:
    assert concurrent_index('CREATE INDEX CONCURRENTLY "a""b" ON t (a)') == ConcurrentIndex(
        'a"b', "t"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS",
        "CREATE INDEX CONCURRENTLY ON app.t USING btree (a)",
        "CREATE INDEX CONCURRENTLY i ON (a)",
    ],
)
def test_concurrent_index_without_a_name_or_table_is_none(sql: str) -> None:
    assert concurrent_index(sql) is None


def test_concurrent_index_on_a_schema_qualified_quoted_table() -> None:
    assert concurrent_index('CREATE INDEX CONCURRENTLY i ON "App"."T" (a)') == ConcurrentIndex(
        "i", '"App"."T"'
    )


def test_a_lone_dollar_does_not_hide_the_next_character() -> None:
    assert texts("SELECT $;SELECT 2") == ["SELECT $", "SELECT 2"]


@pytest.mark.parametrize("literal", ["x''", "B''", "n''", "U&''"])
def test_an_empty_prefixed_literal_ends_at_its_quote(literal: str) -> None:
    assert texts(f"SELECT {literal};SELECT 2") == [f"SELECT {literal}", "SELECT 2"]


@pytest.mark.parametrize("ident", ['"""a;b"', 'U&"""a;b"'])
def test_a_quoted_identifier_starting_with_a_doubled_quote(ident: str) -> None:
    assert texts(f"SELECT {ident};SELECT 2") == [f"SELECT {ident}", "SELECT 2"]


# --- exact refusals, COPY data placement, hand-made statements ----------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT 1;\n\\connect other\n",
            (2, "psql meta-command \\connect: the runner sends SQL only, never psql's commands"),
        ),
        (
            "SELECT 1\n\\gset\n",
            (2, "psql meta-command \\gset inside a statement: the runner sends SQL only"),
        ),
        (
            # pg_dump's \restrict is harmless between statements only.
            "SELECT 1\n\\restrict abc\n;",
            (2, "psql meta-command \\restrict inside a statement: the runner sends SQL only"),
        ),
        (
            "SELECT 1;\nSELECT :'DBNAME';",
            (
                2,
                "psql variable :'DBNAME': psql replaces it with its own value, the runner sends "
                "SQL as it is",
            ),
        ),
        (
            "BEGIN;\nPREPARE TRANSACTION 'x';",
            (
                2,
                "PREPARE TRANSACTION leaves the file's work uncommitted, so it could never be "
                "recorded",
            ),
        ),
    ],
)
def test_refusals_read_exactly(sql: str, expected: tuple[int, str]) -> None:
    assert refusal(read_script(sql)) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "BEGIN;\nCREATE TABLE t ();\n",
            (
                1,
                "BEGIN here is not ended by COMMIT: psql would roll the file's work back when it "
                "ends, the runner will not record work it cannot commit",
            ),
        ),
        (
            "CREATE TABLE t ();\nSTART TRANSACTION;\n",
            (
                2,
                "START TRANSACTION here is not ended by COMMIT: psql would roll the file's work "
                "back when it ends, the runner will not record work it cannot commit",
            ),
        ),
        ("CREATE TABLE t ();\nINSERT INTO t DEFAULT VALUES;\n", None),
    ],
)
def test_an_open_transaction_reads_exactly(sql: str, expected: tuple[int, str] | None) -> None:
    assert unterminated_transaction(split_statements(sql)) == expected


def test_copy_data_of_a_copy_after_other_statements_starts_on_its_next_line() -> None:
    sql = "SELECT 1;\nCOPY a FROM stdin;\n1\n\\.\nCOPY b FROM stdin;\n2\n\\.\nSELECT 3;\n"
    statements = read_script(sql).statements
    assert [(s.text, s.line, s.copy) for s in statements] == [
        ("SELECT 1", 1, None),
        ("COPY a FROM stdin", 2, CopyData("1\n", 3)),
        ("COPY b FROM stdin", 5, CopyData("2\n", 6)),
        ("SELECT 3", 8, None),
    ]


def test_copy_as_the_last_line_without_a_newline_has_no_data() -> None:
    statements = read_script("SELECT 1;\nCOPY t FROM stdin;").statements
    assert [(s.text, s.copy) for s in statements] == [
        ("SELECT 1", None),
        ("COPY t FROM stdin", CopyData("", 2)),
    ]


def test_a_table_named_stdin_inside_a_copy_query_is_not_copy_data() -> None:
    sql = "COPY (SELECT a FROM stdin) TO STDOUT;\nSELECT 2;\n"
    assert copy_direction(sql.split(";")[0]) == "out"
    assert [(s.text, s.copy) for s in read_script(sql).statements] == [
        ("COPY (SELECT a FROM stdin) TO STDOUT", None),
        ("SELECT 2", None),
    ]


def test_a_statement_of_comments_only_stays_in_the_transaction() -> None:
    # goose's StatementBegin blocks are cut by formats.py, not by the splitter: one may hold
    # only a comment.
    statement = Statement("-- nothing to run", 0, 1)
    assert may_run_in_transaction_block(statement)
    assert transaction_mode("", [statement]) == ModeDecision(
        TransactionMode.TRANSACTION, DEFAULT_REASON
    )


def test_a_file_read_from_the_middle_skips_no_byte_order_mark_again() -> None:
    sql = "\ufeffSELECT 1;\nSELECT 2;"
    assert read_script(sql, start=sql.index("\n")).statements == [Statement("SELECT 2", 11, 2)]


def test_each_statement_ends_where_reading_may_resume() -> None:
    # The runner reads the rest of a file again from a statement's end when the server's
    # standard_conforming_strings differs from what the text predicted (apply.py).
    sql = "SELECT 1;\nCOPY t FROM stdin;\n1\n\\.\nSELECT 2 ;\nSELECT 3"
    statements = read_script(sql).statements
    assert [s.end for s in statements] == [9, 34, 44, len(sql)]
    assert read_script(sql, statements[1].end).statements == statements[2:]


def test_a_number_glued_to_a_dollar_quote_ends_before_it_as_in_psql() -> None:
    assert texts("SELECT 1.5e3$a$;$a$; SELECT 2") == ["SELECT 1.5e3$a$;$a$", "SELECT 2"]


@pytest.mark.parametrize("literal", ["'\\';x'", "n'\\';x'", "N'\\';x'"])
def test_with_standard_conforming_strings_off_every_plain_string_escapes(literal: str) -> None:
    sql = f"SET standard_conforming_strings = off;\nSELECT 'a\\'';\nSELECT {literal};\nSELECT 2;"
    assert texts(sql) == [
        "SET standard_conforming_strings = off",
        "SELECT 'a\\''",
        f"SELECT {literal}",
        "SELECT 2",
    ]


@pytest.mark.parametrize("first", ["X'1F'", 'U&"a"', "$1", "1"])
def test_text_that_begins_with_a_literal_or_parameter(first: str) -> None:
    # psql splits whatever it is given; the server judges the statements.
    assert texts(f"{first};\nSELECT 'b';\nSELECT $a$;$a$;\nSELECT 2") == [
        first,
        "SELECT 'b'",
        "SELECT $a$;$a$",
        "SELECT 2",
    ]


def test_copy_data_may_begin_with_blanks() -> None:
    statements = read_script("COPY t FROM stdin;\n  1\n\n\\.\nSELECT 2;").statements
    assert [(s.text, s.copy) for s in statements] == [
        ("COPY t FROM stdin", CopyData("  1\n\n", 2)),
        ("SELECT 2", None),
    ]


def test_strip_comments_reads_backslashes_as_psql_does_by_default() -> None:
    assert strip_comments("SELECT 'C:\\' /* x */") == "SELECT 'C:\\'  "


def test_a_publication_named_connect_is_not_an_option() -> None:
    sql = "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION connect;"
    assert mode(sql) == ModeDecision(
        TransactionMode.NO_TRANSACTION,
        "line 1: CREATE SUBSCRIPTION cannot run inside a transaction block",
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("ALTER ROLE a PASSWORD 'x1'; ALTER ROLE b PASSWORD $$x2$$; SELECT 'kept'",
         "ALTER ROLE a PASSWORD '***'; ALTER ROLE b PASSWORD '***'; SELECT 'kept'"),
        ("-- a note\nALTER ROLE a /* why */ PASSWORD 'x'", "-- a note\nALTER ROLE a /* why */ PASSWORD '***'"),
        ("'first' AND password IS NULL", "'first' AND password IS NULL"),
        ("SELECT 'password'", "SELECT 'password'"),
        ("SELECT f('user=u password = p')", "SELECT f('***')"),
    ],
)  # fmt: skip
def test_redact_literals_masks_only_password_literals(text: str, shown: str) -> None:
    assert redact_literals(text) == shown


def test_a_block_is_read_to_its_last_statement_for_the_mode() -> None:
    """goose's StatementBegin/End block: a later statement that cannot run in a transaction
    (or that ends one) decides the mode, named at its own line; before, only the first was read."""
    block = Statement("CREATE TABLE t (a int);\nVACUUM t", 0, 3)
    assert not may_run_in_transaction_block(block)
    assert transaction_mode("", [block]) == ModeDecision(
        TransactionMode.NO_TRANSACTION, "line 4: VACUUM cannot run inside a transaction block"
    )
    committing = Statement("INSERT INTO t VALUES (1);\nCOMMIT", 0, 3)
    assert transaction_mode("", [committing]).mode is TransactionMode.NO_TRANSACTION


def test_a_refused_statement_sharing_a_block_is_refused_up_front() -> None:
    from migrator.files.sql import refused_in_block  # new in this change

    index = Statement("SELECT 1;\nCREATE INDEX CONCURRENTLY i ON t (a)", 0, 5)
    found = refused_in_block([Statement("SELECT 2", 0, 1), index])
    assert found is not None and found[0] == 6
    assert found[1].startswith("CREATE INDEX CONCURRENTLY in a StatementBegin/StatementEnd block")
    alone = Statement("CREATE INDEX CONCURRENTLY i ON t (a)", 0, 5)  # a block of its own runs
    assert refused_in_block([alone]) is None


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("RESET ALL", {"lock_timeout", "statement_timeout", "client_connection_check_interval"}),
        ("discard all", {"lock_timeout", "statement_timeout", "client_connection_check_interval"}),
        ("RESET lock_timeout", {"lock_timeout"}),
        ("reset STATEMENT_TIMEOUT", {"statement_timeout"}),
        ("SET lock_timeout TO DEFAULT", {"lock_timeout"}),
        ("SET SESSION lock_timeout = DEFAULT", {"lock_timeout"}),
        ("SET LOCAL statement_timeout TO default", {"statement_timeout"}),
        (
            "/* c */ RESET -- x\n ALL",
            {"lock_timeout", "statement_timeout", "client_connection_check_interval"},
        ),
        ("CREATE TABLE t (a int);\nRESET lock_timeout", {"lock_timeout"}),  # a goose block
        # A value of the file's own is its choice; other settings are not the runner's.
        ("SET lock_timeout = '0'", set()),
        ("SET LOCAL lock_timeout TO 0", set()),
        ("RESET search_path", set()),
        ("SET search_path TO DEFAULT", set()),
        ("RESET ROLE", set()),
        ("DISCARD TEMP", set()),
        ("SELECT 'RESET ALL'", set()),
        ("CREATE TABLE t (a int DEFAULT 1)", set()),
    ],
)
def test_the_statements_that_reset_the_runners_settings(sql: str, expected: set[str]) -> None:
    from migrator.files.sql import settings_reset  # new in this change

    assert settings_reset(Statement(sql, 0, 1)) == expected


def test_a_file_that_may_reset_a_timeout_is_read() -> None:
    assert needs_reading("SET lock_timeout TO DEFAULT;\nALTER TABLE t ADD b int;")
    assert needs_reading("RESET ALL;")
