"""A file's header: the leading comment lines before its first statement, and the phase line
that may stand in it (``-- migrate:phase post``).

>>> text = "-- migrate:phase post\\nUPDATE t SET a = 1;\\n"
>>> PHASE_LINE.search(text, 0, header_end(text))["value"].strip()
'post'
"""

from __future__ import annotations

import re

# The phase a file runs in (docs/writing-migrations.md, Phases): "pre", before the new release
# starts (the init container), or "post", after it rolled out (a Job or step of its own).
#   -- migrate:phase post
PRE, POST, ALL = "pre", "post", "all"
PHASES = (PRE, POST)  # what a file can say, in the order ``all`` applies them
RUN_PHASES = (PRE, POST, ALL)  # what a run can ask for (--phase, MIGRATE_PHASE)
PHASE_LINE = re.compile(
    r"^[ \t]*--\s*migrate\s*:\s*phase\b(?P<value>.*)$", re.MULTILINE | re.IGNORECASE
)


def header_end(text: str) -> int:
    """Where the header ends: after the leading blank and ``--`` comment lines.

    >>> text = "-- a\\n\\n-- b\\nCREATE TABLE t ();\\n-- c\\n"
    >>> text[: header_end(text)]
    '-- a\\n\\n-- b\\n'
    """
    start = 0
    while start < len(text):
        newline = text.find("\n", start)
        end = len(text) if newline < 0 else newline + 1
        stripped = text[start:end].strip()
        if stripped and not stripped.startswith("--"):
            return start
        start = end
    return len(text)
