"""No password and no SCRAM verifier reaches the server's log, on a server that logs every
statement, every duration and every sampled transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PgServer, remember_secret
from tests.security.conftest import APP, APP_PASSWORD, OWNER, OWNER_PASSWORD, Site, build_site

LOG_EVERYTHING = {
    "log_statement": "all",
    "log_min_duration_statement": "0",
    "log_duration": "on",
    "log_transaction_sample_rate": "1",
    "log_min_error_statement": "debug5",
}
VERIFIER_PREFIX = "SCRAM-SHA-256$"


@pytest.fixture(scope="module")
def loud_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = PgServer.create(settings=LOG_EVERYTHING)
    remember_secret(server.password)
    server.start()
    try:
        yield from build_site(server, Path(tmp_path_factory.mktemp("loud")))
    finally:
        server.destroy()


def test_no_password_or_verifier_in_the_server_log(loud_site: Site) -> None:
    """build_site bootstrapped once (roles created, passwords set); this is the second start."""
    result = loud_site.run()
    assert result.returncode == 0, result
    assert [e["role"] for e in result.events_named("role_password_set")] == [OWNER, APP]
    log = loud_site.server.server_log()
    stored = loud_site.query(
        f"SELECT rolpassword FROM pg_authid WHERE rolname IN ('{OWNER}', '{APP}')"
    )
    assert all(verifier.startswith(VERIFIER_PREFIX) for (verifier,) in stored)
    for (verifier,) in stored:
        assert verifier not in log
        assert verifier.split("$")[2] not in log  # nor its keys alone
    assert VERIFIER_PREFIX not in log
    for password in (OWNER_PASSWORD, APP_PASSWORD):
        assert password not in log
    # The log is really that loud: the bootstrap's other statements are in it, with durations.
    assert "ALTER DATABASE" in log and "duration:" in log
    assert "SET LOCAL log_statement = 'none'" in log
