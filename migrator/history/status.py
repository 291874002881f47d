"""Status rows: which versions are applied, pending, changed or missing (status, wait, health).

The history is read from the database (migrator.history.table.read_history); here, one row:

>>> from datetime import datetime, timezone
>>> from pathlib import Path
>>> from migrator.files.folder import find_migrations
>>> files = find_migrations(Path("migrations"))
>>> first = files.versioned[0]
>>> at = datetime(2024, 1, 1, tzinfo=timezone.utc)
>>> row = AppliedMigration(first.version, "schema", first.checksum, at, 412, "auth_service")
>>> [(r["version"], r["state"]) for r in status_rows(files, {first.version: row})][:3]
[('000_init_database', 'pending'), ('001_initial_production_schema', 'applied'),
 ('002_security_invariants', 'pending')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from migrator.files.folder import MigrationSet
from migrator.files.migration import ALL, looks_like_checksum
from migrator.history.plan import future_versions
from migrator.history.table import AppliedMigration
from migrator.logs import get_logger

log = get_logger("status")

FUTURE_HINT = (
    "applied by a newer release whose files this image does not have: fine while rolling "
    "back an expand-only release; set FUTURE_MIGRATIONS=fail to refuse it"
)

APPLIED = "applied"
PENDING = "pending"
CHANGED = "changed"
MISSING = "missing"
UNVERIFIED = "applied-unverified"
FUTURE = "future"  # applied by a newer release: numbered above every file of this image


def status_rows(
    files: MigrationSet,
    history: Mapping[str, AppliedMigration],
    backfills: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per file and per recorded version without a file, in version order; a batch
    file with a checkpoint (``backfills``, by version) shows where its walk stands."""
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
                "phase": migration.phase,
            }
        )
        if backfills and migration.version in backfills:
            rows[-1]["backfill"] = dict(backfills[migration.version])
    known = files.by_version()
    future = set(future_versions(files, history))
    for version, row in sorted(history.items()):
        if version not in known:
            rows.append(
                {
                    "version": version,
                    "state": FUTURE if version in future else MISSING,
                    "checksum": None,
                    "recorded_checksum": row.checksum,
                    "applied_at": row.applied_at.isoformat(),
                    "mode": None,
                    "bootstrap": False,
                    "phase": None,
                }
            )
    return rows


def problems(
    rows: list[dict[str, Any]], tolerate_future: bool = True, phase: str = ALL
) -> list[dict[str, Any]]:
    """Rows that keep the database from being up to date.

    The bootstrap script is left out: it belongs to the superuser's phase, which a
    deployment without admin credentials never runs. A newer release's versions (``future``)
    count only when they are not tolerated (FUTURE_MIGRATIONS=fail). With ``phase`` pre or
    post, a pending file of the other phase is left for its own run (``left_for_other_phase``);
    a changed or missing file is a problem in any phase.
    """
    fine = (APPLIED, UNVERIFIED, FUTURE) if tolerate_future else (APPLIED, UNVERIFIED)
    return [
        row
        for row in rows
        if row["state"] not in fine
        and not row["bootstrap"]
        and not left_for_other_phase(row, phase)
    ]


def left_for_other_phase(row: dict[str, Any], phase: str) -> bool:
    """A pending file that a run of ``phase`` does not apply (a post file, for pre).

    >>> row = {"version": "004_drop_x", "state": "pending", "phase": "post"}
    >>> left_for_other_phase(row, "pre"), left_for_other_phase(row, "all")
    (True, False)
    """
    return row["state"] == PENDING and phase != ALL and row.get("phase", phase) != phase


def future_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The versions a newer release applied, for the ``future_migrations`` warning."""
    return [row["version"] for row in rows if row["state"] == FUTURE]


def warn_future(versions: Iterable[str]) -> None:
    """One ``future_migrations`` warning naming the versions a newer release applied."""
    listed = list(versions)
    if listed:
        log.warning("future_migrations", versions=listed, hint=FUTURE_HINT)


def status_document(
    rows: list[dict[str, Any]],
    dbname: str,
    tolerate_future: bool,
    runner: dict[str, str],
    phase: str = ALL,
) -> dict[str, Any]:
    """What `status --json` prints: one document, for `json.load` and `jq`.

    >>> rows = [
    ...     {"version": "000_init_database", "state": "pending", "bootstrap": True},
    ...     {"version": "001_initial_production_schema", "state": "applied", "bootstrap": False},
    ... ]
    >>> document = status_document(rows, "auth_service", True, {"version": "0.1.0"})
    >>> document["up_to_date"], document["pending"]
    (True, ['000_init_database'])
    """
    return {
        "database": dbname,
        "phase": phase,  # the phase up_to_date and problems judge (--phase, default all)
        "up_to_date": not problems(rows, tolerate_future, phase),
        "pending": [row["version"] for row in rows if row["state"] == PENDING],
        "future": future_rows(rows),
        "problems": [
            {"version": row["version"], "state": row["state"]}
            for row in problems(rows, tolerate_future, phase)
        ],
        "migrations": rows,
        "runner": runner,
    }
