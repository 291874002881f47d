"""Signals: SIGTERM and SIGINT become Interrupted, which psycopg answers by cancelling the query.

The entrypoint installs the handlers once, for the whole process::

    install_signal_handlers()
"""

from __future__ import annotations

import signal
from types import FrameType

from migrator.errors import EX_INTERRUPTED, EX_TERMINATED, Interrupted

EXIT_CODES = {signal.SIGINT: EX_INTERRUPTED, signal.SIGTERM: EX_TERMINATED}


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    # Later signals are ignored: the first one is already being handled (cancel, unlock).
    for sig in EXIT_CODES:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(name, EXIT_CODES[signal.Signals(signum)])


def install_signal_handlers() -> None:
    for sig in EXIT_CODES:
        signal.signal(sig, _raise_interrupted)
