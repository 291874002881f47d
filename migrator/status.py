"""The status command: which versions are applied, pending, changed or missing.

>>> rows = status_rows(files, read_history(conn))
>>> rows[0]
{'version': '001_initial_production_schema', 'state': 'applied', ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrator.history import AppliedMigration
from migrator.migration import looks_like_checksum
from migrator.migrations import MigrationSet

APPLIED = "applied"
PENDING = "pending"
CHANGED = "changed"
MISSING = "missing"
UNVERIFIED = "applied-unverified"


def status_rows(
    files: MigrationSet, history: Mapping[str, AppliedMigration]
) -> list[dict[str, Any]]:
    """One row per file and per recorded version without a file, in version order."""
    rows: list[dict[str, Any]] = []
    for migration in files.all:
        row = history.get(migration.version)
        state = PENDING
        if row is not None:
            state = APPLIED
            if not looks_like_checksum(row.checksum):
                state = UNVERIFIED
            elif migration.changed_since(row.checksum):
                state = CHANGED
        rows.append(
            {
                "version": migration.version,
                "state": state,
                "checksum": migration.checksum,
                "recorded_checksum": row.checksum if row else None,
                "applied_at": row.applied_at.isoformat() if row else None,
                "mode": migration.mode_decision.mode.value,
                "bootstrap": migration.is_bootstrap,
            }
        )
    known = files.by_version()
    for version, row in sorted(history.items()):
        if version not in known:
            rows.append(
                {
                    "version": version,
                    "state": MISSING,
                    "checksum": None,
                    "recorded_checksum": row.checksum,
                    "applied_at": row.applied_at.isoformat(),
                    "mode": None,
                    "bootstrap": False,
                }
            )
    return rows


def problems(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that keep the database from being up to date.

    The bootstrap script is left out: it belongs to the superuser's phase, which a
    deployment without admin credentials never runs.
    """
    return [
        row for row in rows if row["state"] not in (APPLIED, UNVERIFIED) and not row["bootstrap"]
    ]
