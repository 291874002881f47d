"""The lint applies the files on a scratch database with the owner's rights only, as migrate
does: a file cannot reach the admin's session (RESET ROLE used to, under SET ROLE)."""

from __future__ import annotations

from tests.security.conftest import OWNER, Site

ESCAPE = f"RESET ROLE;\nALTER ROLE {OWNER} SUPERUSER;\nCREATE TABLE escaped (id int);\n"


def test_a_file_linted_with_admin_credentials_runs_as_the_owner(site: Site) -> None:
    (site.migrations / "002_escape.sql").write_text(ESCAPE)
    try:
        result = site.run("lint")
        assert site.superusers() == ["postgres"], "the file ran as the superuser"
        assert result.returncode == 65, result
        (failed,) = result.events_named("migration_failed")
        assert failed["sqlstate"] == "42501" and "002_escape.sql:2" in failed["error"], failed
        assert site.query("SELECT to_regclass('escaped')") == [(None,)], "lint touched the target"
    finally:
        (site.migrations / "002_escape.sql").unlink()
    site.start_succeeds()


def test_the_lint_of_a_clean_file_succeeds_over_the_owners_login(site: Site) -> None:
    (site.migrations / "002_clean.sql").write_text("CREATE TABLE clean (id int);\n")
    try:
        result = site.run("lint")
        assert result.returncode == 0, result
        assert result.events_named("lint_complete"), result
    finally:
        (site.migrations / "002_clean.sql").unlink()


def test_an_owner_that_cannot_log_in_is_refused_not_run_as_the_admin(site: Site) -> None:
    """No target yet, an existing owner whose password the lint was not given: the files are
    not applied in the admin's session instead (exit 78, naming DB_USER)."""
    result = site.run("lint", DB_NAME="not_created_yet", DB_PASSWORD="not-the-owners-password")
    assert result.returncode == 78, result
    (error,) = result.events_named("invalid_configuration")
    assert error["error"].startswith(
        f"lint runs the files over the owner's own login (DB_USER {OWNER}) in the scratch "
        "database, as migrate does, never in the admin's session: authentication failed"
    ), error
    assert site.superusers() == ["postgres"]
