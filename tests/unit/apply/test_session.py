"""The client check a file's session carries, by server version: PostgreSQL 14 added
client_connection_check_interval; 13 refuses the name (42704), so it is never sent there.

The 14+ branch runs against real servers (14 to 18) in every integration run; 13 is not
available to CI (docs/versions.md), so its branch is pinned here."""

from __future__ import annotations

import pytest

from migrator.apply.session import SessionStatements

CHECK = "client_connection_check_interval"
VERSIONS = [
    pytest.param(130000, False, id="pg13-no-check"),
    pytest.param(140000, True, id="pg14+-check"),
    pytest.param(180000, True, id="pg18-check"),
]


def statements(server_version: int, pooled: bool) -> SessionStatements:
    return SessionStatements(5000, 0, pooled=pooled, server_version=server_version,
                             application_name="'auth-service-migrator'")  # fmt: skip


@pytest.mark.parametrize(("server_version", "checked"), VERSIONS)
def test_a_direct_session_puts_the_check_back_after_each_reset(
    server_version: int, checked: bool
) -> None:
    session = statements(server_version, pooled=False)
    assert any(CHECK in s for s in session.reset) is checked
    assert not any(CHECK in s for s in session.begin)  # a session setting, not per transaction


@pytest.mark.parametrize(("server_version", "checked"), VERSIONS)
def test_a_pooled_transaction_carries_the_check(server_version: int, checked: bool) -> None:
    session = statements(server_version, pooled=True)
    assert any(CHECK in s for s in session.begin) is checked
    assert not any(CHECK in s for s in session.reset)  # no session setting behind a pooler


@pytest.mark.parametrize(("server_version", "checked"), VERSIONS)
def test_what_a_files_reset_put_back_is_set_again(server_version: int, checked: bool) -> None:
    """After a file's RESET ALL: the two timeouts, and the client check where it exists."""
    session = statements(server_version, pooled=False)
    everything = frozenset({"lock_timeout", "statement_timeout", CHECK})
    expected = ["SET LOCAL lock_timeout = '5000ms'", "SET LOCAL statement_timeout = '0ms'"]
    expected += [f"SET LOCAL {CHECK} = '1s'"] if checked else []
    assert list(session.restore(everything, "SET LOCAL")) == expected
    assert session.restore(frozenset({"lock_timeout"}), "SET") == ("SET lock_timeout = '5000ms'",)
    assert session.restore(frozenset(), "SET") == ()
