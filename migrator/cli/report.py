"""What a run leaves behind for people and orchestrators: the summary and the termination message.

For example, inside Kubernetes, ``redactor`` hiding the run's secrets (migrator.logs)::

    write_termination_message(Path("/dev/termination-log"), "applied 2 migrations", redactor)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from migrator.logs import Redactor

# Kubernetes reads at most 4096 bytes of the termination message.
TERMINATION_MESSAGE_LIMIT = 4096


def write_termination_message(path: Path, message: str, redactor: Redactor) -> None:
    """Best effort: the file exists only inside Kubernetes (or where a test points it)."""
    text = redactor.redact_text(message)[:TERMINATION_MESSAGE_LIMIT]
    # Outside Kubernetes, or on a read-only filesystem, the log has the same line.
    with contextlib.suppress(OSError):
        path.write_text(text + "\n")
