"""Unit tests for migrator.history.plan: validating the files against hand-built history rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migrator.errors import EX_DATAERR, HistoryMismatchError
from migrator.files.folder import MigrationSet
from migrator.history.plan import deferred_note, make_plan
from migrator.history.table import AppliedMigration
from tests.conftest import applied_row, write_migration_set

SEED_CHECKSUM = "checksum_here"  # what SEED.md's manual INSERT records


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


files = write_migration_set
row = applied_row


def applied(found: MigrationSet, *versions: str) -> dict[str, AppliedMigration]:
    """History rows recording these files exactly as they are now."""
    by_version = found.by_version()
    return {v: row(v, by_version[v].checksum) for v in versions}


def mismatch(found: MigrationSet, history: dict[str, AppliedMigration], **kw: Any) -> str:
    with pytest.raises(HistoryMismatchError) as caught:
        make_plan(found, history, **kw)
    assert caught.value.exit_code == EX_DATAERR == 65
    assert "\n" not in caught.value.message
    return caught.value.message


def pending(found: MigrationSet, history: dict[str, AppliedMigration], **kw: Any) -> list[str]:
    return [m.version for m in make_plan(found, history, **kw).pending]


# --- what is pending ----------------------------------------------------------------------------


def test_empty_history_makes_every_versioned_file_pending(folder: Path) -> None:
    found = files(folder, **{"000_init": "", "001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    plan = make_plan(found, {})
    assert [m.version for m in plan.pending] == ["001_a", "002_b"]
    assert plan.applied == ()
    assert plan.unverified == ()


def test_applied_files_are_skipped(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;", "003_c": "SELECT 3;"})
    plan = make_plan(found, applied(found, "001_a", "002_b"))
    assert [m.version for m in plan.pending] == ["003_c"]
    assert [m.version for m in plan.applied] == ["001_a", "002_b"]


def test_pending_order_is_numeric(folder: Path) -> None:
    found = files(folder, **{"1000_x": "SELECT 1;", "999_y": "SELECT 2;", "9_z": "SELECT 3;"})
    assert pending(found, {}) == ["9_z", "999_y", "1000_x"]


def test_everything_applied_means_nothing_pending(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;"})
    assert pending(found, applied(found, "001_a")) == []


# --- drift --------------------------------------------------------------------------------------


def test_changed_file_is_drift_naming_the_file_and_both_checksums(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    recorded = "0" * 64
    history = {**applied(found, "001_a"), "002_b": row("002_b", recorded)}
    message = mismatch(found, history)
    assert "002_b.sql" in message
    assert recorded in message
    assert found.by_version()["002_b"].checksum in message


def test_drift_stops_the_run_even_with_out_of_order_allowed(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;"})
    mismatch(found, {"001_a": row("001_a", "f" * 64)}, allow_out_of_order=True)


def test_missing_file_names_the_version(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;"})
    recorded = "a" * 64
    history = {**applied(found, "001_a"), "002_gone": row("002_gone", recorded)}
    message = mismatch(found, history)
    assert "002_gone" in message
    assert recorded in message


def test_missing_file_in_an_empty_folder(folder: Path) -> None:
    found = files(folder)
    message = mismatch(found, {"001_a": row("001_a", "a" * 64)})
    assert "001_a" in message


def test_several_problems_are_counted_in_one_line(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    history = {
        "001_a": row("001_a", "1" * 64),
        "002_b": row("002_b", "2" * 64),
        "003_gone": row("003_gone", "3" * 64),
    }
    with pytest.raises(HistoryMismatchError) as caught:
        make_plan(found, history)
    assert "2 more" in caught.value.message
    assert len(caught.value.fields["problems"]) == 3


# --- out of order -------------------------------------------------------------------------------


def test_out_of_order_file_is_refused(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_late": "SELECT 2;", "003_c": "SELECT 3;"})
    message = mismatch(found, applied(found, "001_a", "003_c"))
    assert "002_late.sql" in message
    assert "003_c" in message
    assert "ALLOW_OUT_OF_ORDER" in message


def test_out_of_order_file_is_applied_when_allowed(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_late": "SELECT 2;", "003_c": "SELECT 3;"})
    history = applied(found, "001_a", "003_c")
    assert pending(found, history, allow_out_of_order=True) == ["002_late"]


def test_newer_pending_files_are_not_out_of_order(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;", "010_c": "SELECT 3;"})
    assert pending(found, applied(found, "001_a")) == ["002_b", "010_c"]


def test_out_of_order_compares_numbers_not_text(folder: Path) -> None:
    found = files(folder, **{"999_y": "SELECT 1;", "1000_x": "SELECT 2;"})
    assert pending(found, applied(found, "999_y")) == ["1000_x"]


# --- rows recorded by hand (SEED.md) ------------------------------------------------------------


@pytest.mark.parametrize("recorded", [SEED_CHECKSUM, None, "", "TODO"])
def test_a_hand_inserted_row_is_honoured_and_listed_unverified(
    folder: Path, recorded: str | None
) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_new_feature": "SELECT 2;", "003_c": "S;"})
    history = {**applied(found, "001_a"), "002_new_feature": row("002_new_feature", recorded)}
    plan = make_plan(found, history)
    assert [m.version for m in plan.pending] == ["003_c"]
    assert [m.version for m in plan.applied] == ["001_a", "002_new_feature"]
    assert [m.version for m in plan.unverified] == ["002_new_feature"]


def test_a_hand_inserted_row_without_its_file_is_still_missing(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;"})
    history = {**applied(found, "001_a"), "002_new_feature": row("002_new_feature", SEED_CHECKSUM)}
    assert "002_new_feature" in mismatch(found, history)


# --- the bootstrap script -----------------------------------------------------------------------


def test_changed_bootstrap_checksum_is_not_drift(folder: Path) -> None:
    found = files(folder, **{"000_init_database": "SELECT 0;", "001_a": "SELECT 1;"})
    history = {**applied(found, "001_a"), "000_init_database": row("000_init_database", "e" * 64)}
    plan = make_plan(found, history)
    assert plan.pending == ()
    assert [m.version for m in plan.applied] == ["001_a"]


def test_bootstrap_is_never_pending_in_the_migration_plan(folder: Path) -> None:
    found = files(folder, **{"000_init_database": "SELECT 0;", "001_a": "SELECT 1;"})
    assert pending(found, {}) == ["001_a"]
    assert pending(found, applied(found, "001_a")) == []


# --- an older image on a newer database (FUTURE_MIGRATIONS) ----------------------------------


def test_versions_above_the_newest_file_are_tolerated_and_listed(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    history = {**applied(found, "001_a", "002_b"), "003_c": row("003_c", "3" * 64),
               "004_d": row("004_d", "4" * 64)}  # fmt: skip
    plan = make_plan(found, history, tolerate_future=True)
    assert plan.future == ("003_c", "004_d")
    assert plan.pending == ()
    assert [m.version for m in plan.applied] == ["001_a", "002_b"]


def test_future_versions_fail_when_not_tolerated(folder: Path) -> None:
    """FUTURE_MIGRATIONS=fail: today's strictness, the message names the version."""
    found = files(folder, **{"001_a": "SELECT 1;"})
    history = {**applied(found, "001_a"), "002_c": row("002_c", "2" * 64)}
    message = mismatch(found, history, tolerate_future=False)
    assert "002_c" in message and "is gone" in message


def test_a_missing_file_in_the_middle_stays_an_error(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "003_c": "SELECT 3;"})
    history = {**applied(found, "001_a", "003_c"), "002_b": row("002_b", "2" * 64)}
    message = mismatch(found, history, tolerate_future=True)
    assert "002_b" in message and "is gone" in message


def test_a_pending_file_of_the_older_image_is_still_applied(folder: Path) -> None:
    """A file of the image not applied yet stays pending: versions without a file are left out
    of the out-of-order check, which compares with the image's own applied files."""
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    history = {**applied(found, "001_a"), "003_c": row("003_c", "3" * 64)}
    plan = make_plan(found, history, tolerate_future=True)
    assert [m.version for m in plan.pending] == ["002_b"]
    assert plan.future == ("003_c",)


# --- cases mutation testing found unasserted (scripts/mutation.sh) ------------------------------


def test_a_repeatable_file_runs_when_new_or_changed_and_not_when_unchanged(folder: Path) -> None:
    found = files(
        folder, **{"V1__a": "SELECT 1;", "R__views": "SELECT 2;", "R__funcs": "SELECT 3;"}
    )
    # Repeatable files come after the versioned ones, by name.
    assert pending(found, {}) == ["V1__a", "R__funcs", "R__views"]
    history = applied(found, "V1__a", "R__views")
    history["R__funcs"] = row("R__funcs", "0" * 64)  # applied before the file changed
    plan = make_plan(found, history)
    assert [m.version for m in plan.pending] == ["R__funcs"]
    assert [m.version for m in plan.applied] == ["V1__a"]


def test_the_missing_file_message_names_the_path_to_restore(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;"})
    recorded = "a" * 64
    history = {**applied(found, "001_a"), "002_gone": row("002_gone", recorded)}
    assert mismatch(found, history) == (
        f"002_gone is recorded as applied (checksum {recorded}) but "
        f"{folder / '002_gone.sql'} is gone; restore the file"
    )


def test_the_missing_file_message_in_an_empty_folder_names_the_file(folder: Path) -> None:
    assert mismatch(files(folder), {"001_a": row("001_a", "a" * 64)}) == (
        f"001_a is recorded as applied (checksum {'a' * 64}) but 001_a.sql is gone; "
        "restore the file"
    )


def test_the_changed_file_message_names_both_checksums(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    history = {"001_a": row("001_a", "1" * 64), "002_b": row("002_b", "2" * 64)}
    actual = found.by_version()["001_a"].checksum
    assert mismatch(found, history) == (
        f"{folder / '001_a.sql'} was changed after it was applied: recorded checksum {'1' * 64}, "
        f"file checksum {actual}; restore the file and put the change in a new migration"
        " (and 1 more problem(s))"
    )


def test_the_out_of_order_message_names_the_newest_applied(folder: Path) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_late": "SELECT 2;", "003_c": "SELECT 3;"})
    assert mismatch(found, applied(found, "001_a", "003_c")) == (
        f"{folder / '002_late.sql'} is pending but older than the newest applied migration "
        "003_c; renumber it, or set ALLOW_OUT_OF_ORDER=true"
    )


def test_a_newer_releases_version_does_not_hide_drift_sorted_after_it(folder: Path) -> None:
    """10_c sorts before 9_b as text: the changed 9_b is still found."""
    found = files(folder, **{"1_a": "SELECT 1;", "9_b": "SELECT 9;"})
    history = {**applied(found, "1_a"), "9_b": row("9_b", "9" * 64),
               "10_c": row("10_c", "1" * 64)}  # fmt: skip
    assert mismatch(found, history, tolerate_future=True) == (
        f"{folder / '9_b.sql'} was changed after it was applied: recorded checksum {'9' * 64}, "
        f"file checksum {found.by_version()['9_b'].checksum}; restore the file and put the "
        "change in a new migration"
    )


def test_a_version_numbered_like_the_newest_file_is_a_lost_file_not_a_newer_one(
    folder: Path,
) -> None:
    found = files(folder, **{"001_a": "SELECT 1;", "002_b": "SELECT 2;"})
    history = {**applied(found, "001_a", "002_b"), "002_c": row("002_c", "2" * 64)}
    assert mismatch(found, history, tolerate_future=True) == (
        f"002_c is recorded as applied (checksum {'2' * 64}) but {folder / '002_c.sql'} is gone; "
        "restore the file"
    )


# --- phases -------------------------------------------------------------------------------------

POST = "-- migrate:phase post\n"
RELEASE = {
    "010_a": "SELECT 1;",
    "020_drop_old": POST + "SELECT 2;",
    "030_b": "SELECT 3;",
    "040_backfill": POST + "SELECT 4;",
}


def test_all_applies_the_pre_files_then_the_post_files_each_in_version_order(
    folder: Path,
) -> None:
    found = files(folder, **RELEASE)
    plan = make_plan(found, {})
    assert [m.version for m in plan.pending] == ["010_a", "030_b", "020_drop_old", "040_backfill"]
    assert plan.deferred == ()
    assert pending(found, {}, phase="all") == ["010_a", "030_b", "020_drop_old", "040_backfill"]


def test_pre_leaves_the_post_files_for_their_run(folder: Path) -> None:
    found = files(folder, **RELEASE)
    plan = make_plan(found, {}, phase="pre")
    assert [m.version for m in plan.pending] == ["010_a", "030_b"]
    assert [m.version for m in plan.deferred] == ["020_drop_old", "040_backfill"]


def test_post_applies_the_post_files_only(folder: Path) -> None:
    found = files(folder, **RELEASE)
    plan = make_plan(found, applied(found, "010_a", "030_b"), phase="post")
    assert [m.version for m in plan.pending] == ["020_drop_old", "040_backfill"]
    assert plan.deferred == ()
    # Before the pre files ran, post still applies only its own: the pre files wait.
    plan = make_plan(found, {}, phase="post")
    assert [m.version for m in plan.pending] == ["020_drop_old", "040_backfill"]
    assert [m.version for m in plan.deferred] == ["010_a", "030_b"]


def test_a_pending_post_file_below_applied_pre_files_is_in_order(folder: Path) -> None:
    """The init container applied 030 (pre) while 020 (post) waits for the rollout."""
    found = files(folder, **RELEASE)
    history = applied(found, "010_a", "030_b")
    for phase in ("pre", "post", "all"):
        make_plan(found, history, phase=phase)  # no HistoryMismatchError
    assert pending(found, history) == ["020_drop_old", "040_backfill"]


def test_a_pending_post_file_below_an_applied_post_file_is_out_of_order(folder: Path) -> None:
    found = files(folder, **RELEASE)
    history = applied(found, "010_a", "030_b", "040_backfill")
    message = mismatch(found, history)
    assert "020_drop_old.sql" in message and "040_backfill" in message
    # Whatever the phase: the init container stops before the rollout.
    assert "020_drop_old.sql" in mismatch(found, history, phase="pre")


def test_a_pending_pre_file_below_an_applied_post_file_is_out_of_order(folder: Path) -> None:
    found = files(folder, **RELEASE)
    history = applied(found, "010_a", "020_drop_old")
    assert pending(found, history, phase="pre") == ["030_b"]  # above 020: in order
    found = files(folder, **{"015_late": "SELECT 5;"})
    message = mismatch(found, history, phase="pre")
    assert "015_late.sql" in message and "020_drop_old" in message


def test_a_pending_pre_file_below_an_applied_pre_file_is_still_out_of_order(folder: Path) -> None:
    found = files(folder, **{**RELEASE, "025_late": "SELECT 25;"})
    message = mismatch(found, applied(found, "010_a", "030_b"), phase="post")
    assert "025_late.sql" in message and "030_b" in message
    assert "020_drop_old" not in message


def test_out_of_order_post_files_pass_when_allowed(folder: Path) -> None:
    found = files(folder, **RELEASE)
    history = applied(found, "010_a", "030_b", "040_backfill")
    assert pending(found, history, allow_out_of_order=True, phase="post") == ["020_drop_old"]


def test_the_summary_names_the_phase_left_and_the_run_that_applies_it(folder: Path) -> None:
    found = files(folder, **RELEASE)
    assert deferred_note(make_plan(found, {}, phase="pre")) == (
        "; 2 pending post file(s) left for --phase post"
    )
    assert deferred_note(make_plan(found, {}, phase="post")) == (
        "; 2 pending pre file(s) left for --phase pre"
    )
    assert deferred_note(make_plan(found, {})) == ""
