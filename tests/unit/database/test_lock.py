"""Unit tests for migrator.database.lock.lock_key: every runner, of any version, must derive the same key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from migrator.database.lock import lock_key

REPO = Path(__file__).resolve().parents[3]
HISTORY = "public.schema_migrations"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def test_key_is_a_signed_bigint() -> None:
    for name in ("auth_service", "", "x" * 200, "naïve-db"):
        key = lock_key(name, HISTORY)
        assert isinstance(key, int)
        assert INT64_MIN <= key <= INT64_MAX


def test_key_is_stable_across_calls_and_processes() -> None:
    """Python's hash() is salted per process; the key must not be."""
    here = lock_key("auth_service", HISTORY)
    assert lock_key("auth_service", HISTORY) == here
    code = (
        f"from migrator.database.lock import lock_key; print(lock_key('auth_service', {HISTORY!r}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
        cwd=REPO,
    )
    assert int(other.stdout) == here


def test_key_is_pinned() -> None:
    """An old and a new runner started together must take the same lock: never change the key."""
    assert lock_key("auth_service", HISTORY) == -156050532752045564
    assert lock_key("bootstrap", "auth_service") == 8796741289801688891


def test_keys_are_distinct_per_database() -> None:
    names = ["auth_service", "auth_service_test", "Auth_Service", "billing", "postgres", "a", ""]
    keys = {lock_key(name, HISTORY) for name in names}
    assert len(keys) == len(names)


def test_migration_and_bootstrap_keys_differ() -> None:
    assert lock_key("auth_service", HISTORY) != lock_key("bootstrap", "auth_service")
