"""Memory guard: refuse, before applying anything, a file that cannot fit under the memory limit.

A container over its limit is killed by the kernel (exit 137, no log line, and a Job retries
it); the runner reads the cgroup's limit and says so first (exit 65). The limit and the
resident memory are read here unless given:

>>> from migrator.files.folder import find_migrations
>>> pending = find_migrations(Path("migrations")).versioned
>>> check_memory(pending, limit=64_000_000, resident=63_900_000)
Traceback (most recent call last):
migrator.errors.MemoryLimitError: migrations/001_initial_production_schema.sql (59 kB) needs
about 65 MB to apply, more than the container's memory limit of 64 MB (cgroup memory.max): ...
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from migrator.errors import MemoryLimitError
from migrator.files.migration import Migration
from migrator.logs import get_logger

log = get_logger("memory")

# cgroup v2 (Docker, Kubernetes, systemd today), then v1.
CGROUP_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
# cgroup v1 writes "no limit" as a number near 2**63.
NO_LIMIT_ABOVE = 1 << 60
PROC_STATM = Path("/proc/self/statm")
# What applying a file adds to the runner's memory, per byte of the file, on top of what the
# process holds already (the file's text is read by then): the text wrapped in its round trip
# and encoded for libpq. Measured: a 50 MB file peaks at 295 MB, 5.9x in total with the
# interpreter and the text (tests/faults/test_big_file.py); 4.5 keeps a margin over that.
ADDED_BYTES_PER_FILE_BYTE = 4.5
MB = 1_000_000
KB = 1_000

ERR_TOO_BIG = (
    "{file} ({size}) needs about {need} to apply, more than the container's memory "
    "limit of {limit} (cgroup memory.max): raise the limit to at least {need} "
    "(docker --memory, resources.limits.memory, mem_limit) or split the file; nothing was applied"
)


def amount(count: int, rounded: Callable[[float], int]) -> str:
    """``count`` bytes in MB, or in kB or bytes below a MB, so that a small file, limit or
    need is never told as "0 MB"; ``rounded`` says which way (a need up, a limit down).

    >>> amount(64_000_000, int), amount(400_123, round), amount(999_999, math.ceil)
    ('64 MB', '400 kB', '1000 kB')
    >>> amount(512, round)
    '512 bytes'
    """
    if count >= MB:
        return f"{rounded(count / MB)} MB"
    if count >= KB:
        return f"{rounded(count / KB)} kB"
    return f"{count} bytes"


def memory_limit(files: Sequence[Path] = CGROUP_LIMIT_FILES) -> int | None:
    """The cgroup's memory limit in bytes, or None when there is none (or no cgroup)."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < NO_LIMIT_ABOVE:
            return int(text)
        return None  # "max", or v1's huge number: no limit
    return None


def resident_bytes(statm: Path = PROC_STATM) -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def check_memory(
    pending: Sequence[Migration],
    single_transaction: bool = False,
    limit: int | None = None,
    resident: int | None = None,
) -> None:
    """MemoryLimitError (65) when the largest pending file (all of them, in one transaction)
    would push the runner over the limit. ``limit``/``resident``: read here when None."""
    if not pending:
        return
    limit = memory_limit() if limit is None else limit
    if limit is None:
        return
    resident = resident_bytes() if resident is None else resident
    sizes = {m: len(m.sql) for m in pending}  # characters: bytes for the usual ASCII SQL
    biggest = max(pending, key=sizes.__getitem__)
    size = sum(sizes.values()) if single_transaction else sizes[biggest]
    need = resident + int(size * ADDED_BYTES_PER_FILE_BYTE)
    if need > limit:
        raise MemoryLimitError(
            ERR_TOO_BIG.format(
                file=biggest.path,
                size=amount(size, round),
                need=amount(need, math.ceil),
                limit=amount(limit, int),
            ),
            file=str(biggest.path),
            limit_bytes=limit,
            needed_bytes=need,
        )
    log.debug("memory_checked", limit_bytes=limit, needed_bytes=need)
