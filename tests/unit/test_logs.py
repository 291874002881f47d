"""Unit tests for migrator.logs: one JSON event per line, secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from migrator.logs import Redactor, configure_logging, get_logger

SECRET = "Tr0ub4dor-unit-secret"
OTHER_SECRET = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; leave it as we found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


def json_events(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    events = []
    for line in lines:
        event = json.loads(line)  # every line is a complete JSON object
        assert isinstance(event, dict)
        events.append(event)
    return events


def configured(fmt: str = "json", level: str = "info", secrets: tuple[str, ...] = (SECRET,)) -> Any:
    stream = io.StringIO()
    configure_logging(fmt, level, secrets, stream=stream)
    return stream


# --- the JSON lines -----------------------------------------------------------------------------


def test_one_json_object_per_line_with_the_required_fields() -> None:
    stream = configured()
    before = datetime.now(UTC)
    get_logger("x").info("migration_applied", version="001_a", duration_ms=12)
    get_logger("y").warning("slow", elapsed_s=3.5)
    after = datetime.now(UTC)

    first, second = json_events(stream)
    assert first["event"] == "migration_applied"
    assert first["level"] == "info"
    assert first["logger"] == "x"
    assert first["version"] == "001_a"
    assert first["duration_ms"] == 12
    assert (second["event"], second["level"], second["logger"]) == ("slow", "warning", "y")
    for event in (first, second):
        stamp = event["timestamp"]
        assert stamp.endswith(("Z", "+00:00")), stamp
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert parsed.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= parsed <= after + timedelta(seconds=1)


def test_a_multiline_value_stays_on_one_line() -> None:
    stream = configured()
    get_logger("x").error("migration_failed", detail="line one\nline two\n\ttabbed")
    assert len(stream.getvalue().splitlines()) == 1
    (event,) = json_events(stream)
    assert event["detail"] == "line one\nline two\n\ttabbed"


def test_values_that_are_not_json_are_rendered_as_text() -> None:
    stream = configured()
    get_logger("x").info("paths", folder=Path("/srv/migrations"), when=datetime(2024, 1, 2))
    (event,) = json_events(stream)
    assert event["folder"] == "/srv/migrations"
    assert event["when"].startswith("2024-01-02")


def test_level_filters_lower_events() -> None:
    stream = configured(level="warning")
    log = get_logger("x")
    log.debug("hidden_debug")
    log.info("hidden_info")
    log.warning("shown_warning")
    log.error("shown_error")
    assert [event["event"] for event in json_events(stream)] == ["shown_warning", "shown_error"]


def test_debug_level_shows_debug_events() -> None:
    stream = configured(level="debug")
    get_logger("x").debug("statement_started", line=3)
    assert [event["event"] for event in json_events(stream)] == ["statement_started"]


def test_a_logger_made_before_configuration_uses_the_configuration() -> None:
    log = get_logger("early")  # modules create their loggers at import time
    stream = configured()
    log.info("late_event")
    (event,) = json_events(stream)
    assert (event["event"], event["logger"]) == ("late_event", "early")


def test_stdlib_logging_is_routed_as_json() -> None:
    stream = configured()
    logging.getLogger("psycopg.pool").warning("pool %s is %s", "p1", "full")
    (event,) = json_events(stream)
    assert event["event"] == "pool p1 is full"
    assert event["logger"] == "psycopg.pool"
    assert event["level"] == "warning"


# --- redaction ----------------------------------------------------------------------------------


def assert_clean(stream: io.StringIO, *secrets: str) -> str:
    text = stream.getvalue()
    for secret in secrets or (SECRET,):
        assert secret not in text, f"secret leaked: {text}"
    return text


def test_a_known_secret_is_redacted_in_values_and_in_the_event() -> None:
    stream = configured()
    log = get_logger("x")
    log.info("connecting", reason=f"password {SECRET} rejected")
    log.info(f"event mentioning {SECRET}")
    assert_clean(stream)
    first, second = json_events(stream)
    assert first["reason"].startswith("password ")
    assert first["reason"].endswith(" rejected")
    assert "event mentioning" in second["event"]


def test_secrets_in_nested_dicts_and_lists_are_redacted() -> None:
    stream = configured()
    get_logger("x").info(
        "nested",
        settings={"db": {"password": SECRET, "host": "db"}, "list": [1, f"x{SECRET}y"]},
        items=[SECRET, {"deeper": [SECRET]}],
        pair=("user", SECRET),
    )
    assert_clean(stream)
    (event,) = json_events(stream)
    assert event["settings"]["db"]["host"] == "db"
    assert event["settings"]["list"][0] == 1


@pytest.mark.parametrize(
    ("inner", "outer"),
    [
        # The inner secret sorts before the outer one alphabetically ...
        (SECRET, f"{SECRET}-suffix"),
        # ... and after it: only longest-first ordering replaces the outer one whole in both.
        ("zz-inner-pw", "aa-zz-inner-pw-outer"),
    ],
)
def test_every_secret_is_redacted_including_one_inside_another(inner: str, outer: str) -> None:
    stream = configured(secrets=(inner, OTHER_SECRET, outer))
    get_logger("x").info("all", a=inner, b=OTHER_SECRET, c=outer, d=f"{outer}, {inner}.")
    (event,) = json_events(stream)
    assert (event["a"], event["b"], event["c"], event["d"]) == ("***", "***", "***", "***, ***.")


def test_secret_in_an_exception_traceback_is_redacted() -> None:
    stream = configured()
    log = get_logger("x")
    try:
        raise RuntimeError(f"connection failed for password {SECRET}")
    except RuntimeError:
        log.exception("internal_error", exit_code=1)
    text = assert_clean(stream)
    (event,) = json_events(stream)
    assert event["event"] == "internal_error"
    assert event["level"] == "error"
    assert "Traceback" in event["exception"]
    assert "RuntimeError: connection failed for password" in event["exception"]
    assert len(text.splitlines()) == 1, "the traceback is inside the one JSON line"


def test_secret_in_a_chained_exception_is_redacted() -> None:
    stream = configured()
    try:
        try:
            raise ValueError(f"inner {SECRET}")
        except ValueError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError:
        get_logger("x").exception("internal_error")
    assert_clean(stream)
    assert "ValueError: inner" in json_events(stream)[0]["exception"]


def test_exception_object_as_a_field_value_is_redacted() -> None:
    """log.error("x", error=exc) is a natural call: the exception's text carries the secret."""
    stream = configured()
    get_logger("x").error("connect_failed", error=RuntimeError(f"password {SECRET} rejected"))
    assert_clean(stream)


def test_unknown_password_fragments_are_redacted() -> None:
    stream = configured(secrets=())
    get_logger("x").info(
        "libpq",
        reason="host=db port=5432 user=app password=NotKnown123 dbname=auth",
        quoted="password='two words' sslmode=require",
        spaced="PASSWORD = AlsoHidden",
    )
    assert_clean(stream, "NotKnown123", "two words", "AlsoHidden")
    (event,) = json_events(stream)
    assert "host=db port=5432 user=app" in event["reason"]
    assert "dbname=auth" in event["reason"]
    assert "sslmode=require" in event["quoted"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:UrlSecret99@db.example:5432/auth",
        "postgres://app:UrlSecret99@db.example/auth?sslmode=require",
        "POSTGRESQL://app:UrlSecret99@db.example/auth",
        "postgresql://:UrlSecret99@db.example/auth",
    ],
)
def test_passwords_in_connection_urls_are_redacted(url: str) -> None:
    stream = configured(secrets=())
    get_logger("x").info("dsn", url=url, text=f"could not connect using {url} (refused)")
    assert_clean(stream, "UrlSecret99")
    (event,) = json_events(stream)
    assert "db.example" in event["url"]
    assert event["text"].endswith("(refused)")


def test_url_without_a_password_is_left_alone() -> None:
    stream = configured(secrets=())
    get_logger("x").info("dsn", url="postgresql://app@db.example:5432/auth")
    (event,) = json_events(stream)
    assert event["url"] == "postgresql://app@db.example:5432/auth"


def test_stdlib_records_are_redacted_too() -> None:
    stream = configured()
    logging.getLogger("psycopg").warning("error with password=%s", SECRET)
    logging.getLogger("psycopg").error("url postgresql://u:hidden77@h/d")
    assert_clean(stream, SECRET, "hidden77")


# --- console format -----------------------------------------------------------------------------


def test_console_format_is_readable_and_not_json() -> None:
    stream = configured(fmt="console")
    get_logger("entrypoint").info("migration_applied", version="001_a", duration_ms=12)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "migration_applied" in line
    assert "info" in line
    assert "version=001_a" in line
    assert "duration_ms=12" in line
    assert "entrypoint" in line
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line), "starts with the time"
    assert "\x1b[" not in line, "no colour codes (the log may go to a file)"


def test_console_format_redacts_too() -> None:
    stream = configured(fmt="console")
    log = get_logger("x")
    log.info("connecting", reason=f"pw {SECRET}", url="postgresql://u:hidden88@h/d")
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        log.exception("internal_error")
    text = assert_clean(stream, SECRET, "hidden88")
    assert "Traceback" in text
    assert "RuntimeError: boom" in text


# --- redaction does not damage unrelated text ---------------------------------------------------


def test_a_short_password_is_not_redacted_inside_other_words() -> None:
    stream = configured(secrets=("x",))
    log = get_logger("x")
    log.error("migration_failed", server_message="syntax error at or near 'x'", reason="(x)")
    (event,) = json_events(stream)
    assert event["server_message"] == "syntax error at or near '***'"
    assert event["reason"] == "(***)"


@pytest.mark.parametrize(
    ("secret", "text", "shown"),
    [
        # A short secret of letters only counts where no letter or digit touches it ...
        ("x", "xor x, x1 (x)", "xor ***, x1 (***)"),
        ("pw7", "pw7a apw7 pw7", "pw7a apw7 ***"),
        # ... an edge that is punctuation needs no such check on that side ...
        ("#pw", "a#pw #pwb", "a*** #pwb"),
        ("pw!", "pw!a apw!", "***a apw!"),
        ("!!", "a!!b", "a***b"),
        # ... and from 8 characters on it is hidden wherever it appears.
        ("abcd123", "xabcd123 abcd123", "xabcd123 ***"),
        ("abcd1234", "xabcd1234y abcd1234", "x***y ***"),
    ],
)
def test_where_a_secret_counts_depends_on_its_length_and_edges(
    secret: str, text: str, shown: str
) -> None:
    stream = configured(secrets=(secret,))
    get_logger("x").info("echo", detail=text)
    (event,) = json_events(stream)
    assert event["detail"] == shown


def test_a_password_equal_to_another_public_name_leaves_that_name_readable() -> None:
    stream = io.StringIO()
    name = "auth_service"  # long enough to be hidden everywhere, were it not a name
    configure_logging("json", "info", (name,), stream=stream, public_names=(name, ""))
    log = get_logger("x")
    log.info("database_ready", user=name, conninfo=f"user={name} password={name}")
    (event,) = json_events(stream)
    assert (event["user"], event["conninfo"]) == (name, f"user={name} password=***")


def test_a_password_equal_to_the_user_name_leaves_the_names_readable() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", ("postgres",), stream=stream, public_names=("postgres",))
    log = get_logger("x")
    log.info("database_ready", user="postgres", dbname="postgres", note="user postgres")
    log.info(
        "failed",
        url="postgresql://postgres:postgres@db/postgres",
        conninfo="host=db user=postgres password=postgres dbname=postgres",
        statement="ALTER ROLE postgres PASSWORD 'postgres'",
        literal="INSERT INTO t VALUES ('postgres')",
    )
    ready, failed = json_events(stream)
    assert (ready["user"], ready["dbname"], ready["note"]) == (
        "postgres",
        "postgres",
        "user postgres",
    )
    assert failed["url"] == "postgresql://postgres:***@db/postgres"
    assert failed["conninfo"] == "host=db user=postgres password=*** dbname=postgres"
    assert failed["statement"] == "ALTER ROLE postgres PASSWORD '***'"
    assert failed["literal"] == "INSERT INTO t VALUES ('***')"


def test_a_long_secret_is_redacted_even_glued_to_other_text() -> None:
    stream = configured()
    get_logger("x").info("echo", detail=f"Key (token)=(abc{SECRET}) already exists.")
    assert_clean(stream)


def test_any_sql_password_literal_is_redacted() -> None:
    stream = configured(secrets=())
    get_logger("x").error("failed", statement="CREATE ROLE a LOGIN PASSWORD 'it''s hidden99'")
    assert_clean(stream, "hidden99")


def test_redacted_output_is_exact_and_other_values_keep_their_type() -> None:
    stream = configured()
    get_logger("apply").warning(
        "mixed",
        reason=f"password {SECRET} rejected",
        libpq="host=db password='two words' dbname=auth",
        url="postgresql://app:UrlSecret99@db/auth",
        count=3,
        ok=True,
        ratio=0.5,
        nothing=None,
        path=Path(f"/run/{SECRET}"),
        pair=("user", SECRET),
        members=frozenset({SECRET}),
    )
    (event,) = json_events(stream)
    assert {key: event[key] for key in event if key != "timestamp"} == {
        "event": "mixed",
        "logger": "apply",
        "level": "warning",
        "reason": "password *** rejected",
        "libpq": "host=db password=*** dbname=auth",
        "url": "postgresql://app:***@db/auth",
        "count": 3,
        "ok": True,
        "ratio": 0.5,
        "nothing": None,
        "path": "/run/***",
        "pair": ["user", "***"],
        "members": ["***"],
    }


def test_stdlib_records_below_warning_are_dropped() -> None:
    stream = configured(level="debug")
    logging.getLogger("psycopg").info("chatty")
    logging.getLogger("psycopg").warning("kept")
    assert [event["event"] for event in json_events(stream)] == ["kept"]


@pytest.mark.parametrize(
    ("level", "shown"),
    [("debug", ["d", "i", "w", "e"]), ("warning", ["w", "e"]), ("error", ["e"])],
)
def test_each_level_shows_itself_and_above(level: str, shown: list[str]) -> None:
    stream = configured(level=level)
    log = get_logger("x")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [event["event"] for event in json_events(stream)] == shown


def test_a_logger_used_before_reconfiguration_follows_the_new_configuration() -> None:
    log = get_logger("entrypoint")
    first = configured(level="info")
    log.info("one")
    second = configured(level="warning")
    log.info("dropped")
    log.warning("two")
    assert [event["event"] for event in json_events(first)] == ["one"]
    assert [event["event"] for event in json_events(second)] == ["two"]


def test_configuration_replaces_an_earlier_one_that_cached_its_loggers() -> None:
    # Whatever configured structlog before (a library, a test harness) may have asked for
    # cached loggers: the runner's loggers must still follow each configure_logging.
    structlog.configure(cache_logger_on_first_use=True)
    log = get_logger("entrypoint")
    first = configured(level="info")
    log.info("one")
    second = configured(level="warning")
    log.warning("two")
    assert [event["event"] for event in json_events(first)] == ["one"]
    assert [event["event"] for event in json_events(second)] == ["two"]


# A statement quoted back in an error, with a password the runner never knew: each quoting.
QUOTED_PASSWORDS = [
    ("ALTER ROLE a PASSWORD 'Sekr1t-plain'", "ALTER ROLE a PASSWORD '***'"),
    ("ALTER ROLE a PASSWORD $p$Sekr1t-tag$p$ VALID UNTIL 'x'", "ALTER ROLE a PASSWORD '***' VALID UNTIL 'x'"),
    ("ALTER ROLE a PASSWORD $$Sekr1t-dollar$$", "ALTER ROLE a PASSWORD '***'"),
    ("ALTER ROLE a PASSWORD E'Sekr1t\\'escaped'", "ALTER ROLE a PASSWORD '***'"),
    ("ALTER ROLE a password U&'Sekr1t-unicode'", "ALTER ROLE a password '***'"),
    ("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password E'Sekr1t-opt')",
     "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password '***')"),
    ("SELECT dblink_connect('host=h password=Sekr1t-conn'); SELECT 1",
     "SELECT dblink_connect('***'); SELECT 1"),
    ("SELECT dblink_connect($c$dbname=x password = Sekr1t-conn$c$)", "SELECT dblink_connect('***')"),
]  # fmt: skip


@pytest.mark.parametrize(("statement", "shown"), QUOTED_PASSWORDS)
def test_a_password_literal_is_redacted_whatever_its_quoting(statement: str, shown: str) -> None:
    assert Redactor().redact({"statement": statement}) == {"statement": shown}


def test_text_that_only_mentions_a_password_is_left_alone() -> None:
    text = 'password authentication failed for user "auth_service"'
    assert Redactor().redact_text(text) == text
