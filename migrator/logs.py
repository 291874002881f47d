"""Logging: structlog configured once, one JSON event per line, secrets redacted everywhere.

>>> configure_logging("json", "info", secrets=("s3cret",))
>>> get_logger("wait").info("waiting", reason="password s3cret")  # reason="password ***"
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
# libpq and URLs can carry a password even when we never put it there ourselves.
SECRET_PATTERNS = (
    (re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)"), r"\1" + REDACTED),
    (re.compile(r"(?i)(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@"), r"\1" + REDACTED + "@"),
)
# One scan that tells whether any pattern above can match: most values are plain words.
MIGHT_HOLD_SECRET_RE = re.compile(r"(?i)password|postgres(?:ql)?://")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class Redactor:
    """A processor that replaces known secrets and password-looking fragments in every value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

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
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        if MIGHT_HOLD_SECRET_RE.search(text):
            for pattern, replacement in SECRET_PATTERNS:
                text = pattern.sub(replacement, text)
        return text

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        return {key: self.redact(value) for key, value in event_dict.items()}


def configure_logging(
    log_format: str,
    level: str,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Configure structlog (and route the stdlib's logging, e.g. psycopg's, through it)."""
    redactor = Redactor(secrets)
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
