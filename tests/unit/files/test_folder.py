"""Unit tests for migrator.files.folder: reading a folder, ordering, duplicates, what is ignored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.errors import EX_CONFIG, EX_DATAERR, ConfigError, MigrationFilesError
from migrator.files.folder import MigrationSet, find_migrations, refuse_empty


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


def add(folder: Path, *names: str, content: str = "SELECT 1;") -> None:
    for name in names:
        (folder / name).write_text(content)


def versions(folder: Path) -> list[str]:
    return [migration.version for migration in find_migrations(folder).all]


def files_error(folder: Path) -> MigrationFilesError:
    with pytest.raises(MigrationFilesError) as caught:
        find_migrations(folder)
    assert caught.value.exit_code == EX_DATAERR == 65
    assert "\n" not in caught.value.message
    return caught.value


def test_files_are_ordered_as_numbers(folder: Path) -> None:
    add(folder, "1000_x.sql", "999_y.sql", "10_c.sql", "2_b.sql", "001_a.sql")
    assert versions(folder) == ["001_a", "2_b", "10_c", "999_y", "1000_x"]


def test_bootstrap_is_kept_apart_from_the_versioned_files(folder: Path) -> None:
    add(folder, "000_init_database.sql", "001_schema.sql", "002_more.sql")
    found = find_migrations(folder)
    assert found.bootstrap is not None
    assert found.bootstrap.version == "000_init_database"
    assert [m.version for m in found.versioned] == ["001_schema", "002_more"]
    assert [m.version for m in found.all] == ["000_init_database", "001_schema", "002_more"]
    assert set(found.by_version()) == {"000_init_database", "001_schema", "002_more"}


def test_no_bootstrap_file(folder: Path) -> None:
    add(folder, "001_schema.sql")
    found = find_migrations(folder)
    assert found.bootstrap is None
    assert [m.version for m in found.all] == ["001_schema"]


def test_empty_folder_is_valid(folder: Path) -> None:
    found = find_migrations(folder)
    assert (found.bootstrap, found.versioned) == (None, ())


def test_readme_and_other_files_are_ignored(folder: Path) -> None:
    add(folder, "001_a.sql")
    add(folder, "README.md", "notes.txt", "001_a.sql.orig", "002_b.sql~", content="not SQL")
    (folder / "subfolder").mkdir()
    (folder / ".003_hidden.sql").write_text("SELECT 1;")
    assert versions(folder) == ["001_a"]


@pytest.mark.parametrize(("first", "second"), [("01_a.sql", "1_b.sql"), ("002_x.sql", "2_y.sql")])
def test_duplicate_numbers_are_rejected_naming_both(folder: Path, first: str, second: str) -> None:
    add(folder, first, second, "005_other.sql")
    error = files_error(folder)
    assert first in error.message
    assert second in error.message


def test_duplicate_numbers_among_many_files(folder: Path) -> None:
    add(folder, "001_a.sql", "002_b.sql", "003_c.sql", "0003_c_again.sql", "004_d.sql")
    error = files_error(folder)
    assert "003_c.sql" in error.message
    assert "0003_c_again.sql" in error.message


def test_duplicate_bootstrap_numbers_are_rejected(folder: Path) -> None:
    add(folder, "000_init_database.sql", "0_init_again.sql")
    error = files_error(folder)
    assert "000_init_database.sql" in error.message
    assert "0_init_again.sql" in error.message


@pytest.mark.parametrize("bad", ["add.sql", "002-add.sql", "002_.sql", "V1__x.sql"])
def test_a_sql_file_with_a_bad_name_is_rejected(folder: Path, bad: str) -> None:
    add(folder, "001_a.sql", bad)
    error = files_error(folder)
    assert bad in error.message


def test_non_utf8_file_is_rejected_naming_file_and_line(folder: Path) -> None:
    add(folder, "001_a.sql")
    (folder / "002_b.sql").write_bytes(b"SELECT 1;\n\nSELECT '\xff\xfe';\n")
    error = files_error(folder)
    assert "002_b.sql" in error.message
    assert "line 3" in error.message


def test_a_folder_named_like_a_sql_file_is_rejected(folder: Path) -> None:
    add(folder, "001_a.sql")
    (folder / "x.sql").mkdir()
    assert "x.sql" in files_error(folder).message


def test_a_folder_with_a_migration_name_is_rejected(folder: Path) -> None:
    add(folder, "001_a.sql")
    (folder / "002_x.sql").mkdir()
    error = files_error(folder)
    assert "002_x.sql" in error.message
    assert "cannot be read" in error.message


def test_a_dangling_symlink_is_rejected(folder: Path) -> None:
    add(folder, "001_a.sql")
    (folder / "002_x.sql").symlink_to(folder / "gone.sql")
    assert "002_x.sql" in files_error(folder).message


def test_an_unreadable_file_is_rejected(folder: Path) -> None:
    add(folder, "001_a.sql", "002_x.sql")
    path = folder / "002_x.sql"
    if os.geteuid() == 0:
        # root reads through chmod 000; a path that cannot be opened is the same failure.
        path.unlink()
        path.symlink_to(path)  # a symlink loop: ELOOP for everyone, root included
    else:
        path.chmod(0)
    try:
        error = files_error(folder)
    finally:
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
    assert "002_x.sql" in error.message
    assert "cannot be read" in error.message


def test_a_symlinked_file_is_read(folder: Path) -> None:
    """Kubernetes ConfigMap volumes present every file as a symlink into ..data/ beside it."""
    (folder / "..data").mkdir()
    target = folder / "..data" / "001_a.sql"
    target.write_text("SELECT 1;")
    (folder / "001_a.sql").symlink_to(target)
    assert versions(folder) == ["001_a"]


def test_a_symlink_leaving_the_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "real.sql"
    target.write_text("SELECT 1;")
    (folder / "001_a.sql").symlink_to(target)
    with pytest.raises(MigrationFilesError, match="outside"):
        find_migrations(folder)


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-migrations-here"
    with pytest.raises(ConfigError) as caught:
        find_migrations(missing)
    assert caught.value.exit_code == EX_CONFIG == 78
    assert "MIGRATIONS_DIR" in caught.value.message
    assert str(missing) in caught.value.message


def test_a_file_instead_of_a_folder_is_a_config_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "migrations.sql"
    not_a_folder.write_text("SELECT 1;")
    with pytest.raises(ConfigError) as caught:
        find_migrations(not_a_folder)
    assert str(not_a_folder) in caught.value.message


def test_empty_and_comment_only_files_are_valid_no_ops(folder: Path) -> None:
    add(folder, "001_a.sql")
    add(folder, "002_placeholder.sql", content="-- reverted, kept for numbering\n")
    add(folder, "003_empty.sql", content="")
    found = find_migrations(folder)
    assert [m.is_empty for m in found.versioned] == [False, True, True]


def test_the_repository_migrations_folder_reads_cleanly() -> None:
    repo_migrations = Path(__file__).resolve().parents[3] / "migrations"
    found = find_migrations(repo_migrations)
    assert found.bootstrap is not None
    assert found.bootstrap.version == "000_init_database"
    assert found.versioned, "at least the initial schema"


# --- cases mutation testing found unasserted (scripts/mutation.sh) ------------------------------


def test_messages_name_the_files_exactly(folder: Path, tmp_path: Path) -> None:
    add(folder, "01_a.sql", "1_b.sql")
    error = files_error(folder)
    assert error.message == (
        f"{folder / '01_a.sql'} and {folder / '1_b.sql'} have the same version number 1"
    )
    assert error.fields == {"file": str(folder / "1_b.sql")}


def test_a_symlink_leaving_the_folder_is_refused_exactly(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.sql"
    outside.write_text("SELECT 1;")
    (folder / "001_a.sql").symlink_to(outside)
    error = files_error(folder)
    assert error.message == (
        f"{folder / '001_a.sql'} is a symlink to {outside.resolve()}, outside {folder}: "
        "copy the file in instead"
    )
    assert error.fields == {"file": str(folder / "001_a.sql")}


def test_a_symlink_inside_the_folder_is_read(folder: Path) -> None:
    (folder / "..data").mkdir()
    (folder / "..data" / "001_a.sql").write_text("SELECT 1;")
    (folder / "001_a.sql").symlink_to(folder / "..data" / "001_a.sql")
    assert versions(folder) == ["001_a"]


def test_the_missing_folder_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        find_migrations(tmp_path / "nowhere")
    assert caught.value.message == (
        f"MIGRATIONS_DIR {tmp_path / 'nowhere'} does not exist or is not a folder"
    )


def test_hidden_files_are_ignored(folder: Path) -> None:
    add(folder, "001_a.sql", ".002_b.sql", "003_c.sql.bak")
    assert versions(folder) == ["001_a"]


def test_all_is_bootstrap_then_versioned_then_repeatable(folder: Path) -> None:
    add(folder, "V2__b.sql", "V1__a.sql", "R__z.sql", "R__a.sql", "V0__zero.sql")
    found = find_migrations(folder)
    assert found.bootstrap is None  # V0 is Flyway's version 0, not the runner's bootstrap
    assert [m.version for m in found.all] == ["V0__zero", "V1__a", "V2__b", "R__a", "R__z"]
    assert list(found.by_version()) == ["V0__zero", "V1__a", "V2__b", "R__a", "R__z"]
    assert found.format == "flyway"
    add(folder, "V1.0__again.sql")
    error = files_error(folder)
    assert "have the same version 1" in error.message


def test_runner_bootstrap_comes_first_in_all(folder: Path) -> None:
    add(folder, "002_b.sql", "000_init.sql", "001_a.sql")
    found = find_migrations(folder)
    assert found.bootstrap is not None and found.bootstrap.version == "000_init"
    assert [m.version for m in found.all] == ["000_init", "001_a", "002_b"]
    assert [m.version for m in found.versioned] == ["001_a", "002_b"]


def test_an_unreadable_folder_is_one_line_naming_it_and_the_user(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's uid 10001 on a host folder mode 700: iterdir raised PermissionError and the
    run ended in a traceback (exit 1). Root reads any folder, so the refusal is simulated."""

    def refuse(self: Path) -> Iterator[Path]:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(ConfigError) as caught:
        find_migrations(folder)
    message = caught.value.message
    assert message.startswith(f"MIGRATIONS_DIR {folder} cannot be read by uid {os.geteuid()}")
    assert "Permission denied" in message and "\n" not in message
    assert caught.value.exit_code == 78


def test_a_run_refuses_a_folder_without_migrations_naming_what_it_holds(folder: Path) -> None:
    add(folder, "README.md", content="notes")
    with pytest.raises(MigrationFilesError) as caught:
        refuse_empty(find_migrations(folder), folder)
    assert "holds no migration file (it holds README.md)" in caught.value.message
    add(folder, "001_a.sql")
    refuse_empty(find_migrations(folder), folder)  # one file: fine


def message_of_empty(files: MigrationSet, folder: Path) -> str:
    with pytest.raises(MigrationFilesError) as caught:
        refuse_empty(files, folder)
    return caught.value.message


def test_the_refusal_of_an_empty_folder_says_exactly_what_it_holds(tmp_path: Path) -> None:
    nothing = MigrationSet(None, ())
    folder = tmp_path / "migratoins"
    assert message_of_empty(nothing, folder) == (  # not even a folder: nothing to list
        f"MIGRATIONS_DIR {folder} holds no migration file (it is empty): a mistyped or empty "
        "mount would start the application on an empty schema; mount the folder of "
        "<number>_<name>.sql files"
    )
    folder.mkdir()
    assert "(it is empty)" in message_of_empty(nothing, folder)
    add(folder, "b.txt", "a.md", content="x")
    assert "(it holds a.md, b.txt)" in message_of_empty(nothing, folder)
    add(folder, "c", "d", "e", "f", "g", content="x")
    assert "(it holds a.md, b.txt, c, d, e and 2 more)" in message_of_empty(nothing, folder)


def test_an_unreadable_folder_names_the_user_or_only_the_uid(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pwd

    from migrator.files import folder as module

    uid = os.geteuid()
    name = pwd.getpwuid(uid).pw_name
    error = PermissionError(13, "Permission denied")
    assert module.unreadable_folder(folder, error) == (
        f"MIGRATIONS_DIR {folder} cannot be read by uid {uid} ({name}) (Permission denied): "
        "make it readable (the image runs as uid 10001), e.g. chmod -R a+rX on the host folder"
    )

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)  # uid 10001 in the image has none
    bare = module.unreadable_folder(folder, PermissionError())
    assert f"by uid {uid} (permission denied):" in bare
