"""Logging: structlog configured once, one JSON event per line, secrets redacted everywhere.

The entrypoint configures it once for the process; every module then logs through its own
logger::

    configure_logging("json", "info", secrets=("s3cret",))
    get_logger("wait").info("waiting", reason="password s3cret")  # reason="password ***"

The redaction itself:

>>> Redactor(secrets=("s3cret",)).redact({"reason": "password s3cret"})
{'reason': 'password ***'}
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
LOGGER_NAME_KEY = "logger_name"
# libpq and URLs can carry a password even when we never put it there ourselves; so can SQL
# (ALTER ROLE ... PASSWORD '...') quoted back in an error: its literals are found by the SQL
# lexer (files.sql.redact_literals), whatever their quoting; these patterns are what is left.
SECRET_PATTERNS = (
    (re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)"), r"\1" + REDACTED),
    (re.compile(r"(?i)(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@"), r"\1" + REDACTED + "@"),
    (re.compile(r"(?i)(\bpassword\s+)'(?:[^']|'')*'"), r"\1'" + REDACTED + "'"),
)
# A secret this long is hidden wherever it appears, even glued to other text; a shorter one
# only where it stands alone (the password "x" must not turn "syntax" into "synta***").
MIN_EMBEDDED_SECRET_LENGTH = 8
# Names the logs show as names (the maintenance database is always "postgres").
ALWAYS_PUBLIC_NAMES = ("postgres",)
# The part of a secret pattern's match that is not the secret (the "=" after "password").
KEPT_GROUP = "kept"
# One scan that tells whether any pattern above can match: most values are plain words.
MIGHT_HOLD_SECRET_RE = re.compile(r"(?i)password|postgres(?:ql)?://")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _secret_pattern(secret: str, public_names: frozenset[str]) -> re.Pattern[str]:
    """Where ``secret`` counts as a value in a text.

    - a secret that is also a name the logs show (user ``postgres`` with password
      ``postgres``): only as a value, a quoted literal or after ``password``;
    - a short one: where it stands alone, not inside a longer word;
    - any other: wherever it appears.
    """
    quoted = re.escape(secret)
    if secret in public_names:
        return re.compile(
            rf"(?<='){quoted}(?=')|(?i:(?<=password)(?P<{KEPT_GROUP}>[\s=:]+)){quoted}(?!\w)"
        )
    if len(secret) < MIN_EMBEDDED_SECRET_LENGTH:
        before = r"(?<!\w)" if re.match(r"\w", secret) else ""
        after = r"(?!\w)" if re.search(r"\w$", secret) else ""
        return re.compile(before + quoted + after)
    return re.compile(quoted)


class Redactor:
    """A processor that replaces known secrets and password-looking fragments in every value.

    ``public_names`` are user, database and host names: a password equal to one of them is
    hidden only where it appears as a value, so the name itself stays readable.
    """

    def __init__(self, secrets: Iterable[str] = (), public_names: Iterable[str] = ()) -> None:
        names = frozenset(name for name in (*public_names, *ALWAYS_PUBLIC_NAMES) if name)
        # Longest first, so that a secret containing another is replaced whole.
        longest_first = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.patterns = [(secret, _secret_pattern(secret, names)) for secret in longest_first]

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact(item) for item in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        # Anything else (an exception, a Path) is rendered as text later: redact that text now.
        return self.redact_text(str(value))

    def redact_text(self, text: str) -> str:
        for secret, pattern in self.patterns:
            if secret in text:  # the common case costs one substring search
                text = pattern.sub(_masked, text)
        if MIGHT_HOLD_SECRET_RE.search(text):
            # lazy: the lexer only for a text that mentions a password (an SQL statement
            # quoted in an error); the no-op start never pays for it.
            from migrator.files.sql import redact_literals

            text = redact_literals(text)
            for pattern, replacement in SECRET_PATTERNS:
                text = pattern.sub(replacement, text)
        return text

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        return {key: self.redact(value) for key, value in event_dict.items()}


def _masked(match: re.Match[str]) -> str:
    """The match with its secret replaced; the text before the secret (KEPT_GROUP) stays."""
    return (match.groupdict().get(KEPT_GROUP) or "") + REDACTED


def configure_logging(
    log_format: str,
    level: str,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    public_names: Iterable[str] = (),
) -> Redactor:
    """Configure structlog (and route the stdlib's logging, e.g. psycopg's, through it)."""
    redactor = Redactor(secrets, public_names)
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if log_format == "console"
        else structlog.processors.JSONRenderer(default=str)
    )
    structlog.configure(
        processors=[
            _name_logger,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging()
    return redactor


def get_logger(name: str) -> Any:
    """A logger whose events carry ``logger=name`` (lazy: configuration may come later)."""
    # structlog.get_logger() reserves the keyword ``logger``; _name_logger renames it.
    return structlog.get_logger(**{LOGGER_NAME_KEY: name})


def _name_logger(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    if LOGGER_NAME_KEY in event_dict:
        event_dict["logger"] = event_dict.pop(LOGGER_NAME_KEY)
    return event_dict


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        get_logger(record.name).log(record.levelno, record.getMessage())


def _route_stdlib_logging() -> None:
    root = logging.getLogger()
    root.handlers = [_ToStructlog()]
    root.setLevel(logging.WARNING)
