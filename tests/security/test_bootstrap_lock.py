"""No role but the admin can make bootstrap wait: a session of another role that holds (or
queues for) the bootstrap lock's key is ended, and bootstrap goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from migrator.database.lock import lock_key
from tests.security.conftest import APP, NOBODY, Site

SQUATTER_EVENT = "bootstrap_lock_squatter_terminated"
# Short enough that a squatter which is not ended makes the run fail (75), as it did before.
LOCK_TIMEOUT = "5"


def bootstrap_key(site: Site) -> int:
    return lock_key("bootstrap", site.db.name)


@pytest.mark.parametrize("squatter", [APP, NOBODY])
def test_a_session_holding_the_bootstrap_lock_is_ended(site: Site, squatter: str) -> None:
    key = bootstrap_key(site)
    with site.login(squatter, dbname="postgres") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        pid = holder.info.backend_pid
        result = site.run(MIGRATION_LOCK_TIMEOUT=LOCK_TIMEOUT)
        assert result.returncode == 0, result
        ended = result.events_named(SQUATTER_EVENT)
        assert [(event["role"], event["pid"], event["level"]) for event in ended] == [
            (squatter, pid, "warning")
        ]
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
    site.start_succeeds()


def test_sessions_sharing_the_key_are_all_ended(site: Site) -> None:
    key = bootstrap_key(site)
    with (
        site.login(APP, dbname="postgres") as shared_one,
        site.login(NOBODY, dbname="postgres") as shared_two,
    ):
        shared_one.execute("SELECT pg_advisory_lock_shared(%s)", (key,))
        shared_two.execute("SELECT pg_advisory_lock_shared(%s)", (key,))
        result = site.run(MIGRATION_LOCK_TIMEOUT=LOCK_TIMEOUT)
        assert result.returncode == 0, result
        roles = {event["role"] for event in result.events_named(SQUATTER_EVENT)}
        assert roles == {APP, NOBODY}
    site.start_succeeds()


def test_a_session_queued_for_the_key_is_ended_with_its_holder(site: Site) -> None:
    """Queued ahead of bootstrap, it would be granted the key when its accomplice ends."""
    key = bootstrap_key(site)
    queued_pid: list[int] = []

    def queue() -> None:
        with site.login(NOBODY, dbname="postgres") as conn:
            queued_pid.append(conn.info.backend_pid)
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                conn.execute("SELECT pg_sleep(30)")
            except psycopg.OperationalError:
                pass  # ended

    with site.login(APP, dbname="postgres") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        waiter = threading.Thread(target=queue, daemon=True)
        waiter.start()
        time.sleep(0.5)
        result = site.run(MIGRATION_LOCK_TIMEOUT=LOCK_TIMEOUT)
        waiter.join(10)
    assert result.returncode == 0, result
    ended = {(event["role"], event["pid"]) for event in result.events_named(SQUATTER_EVENT)}
    assert (NOBODY, queued_pid[0]) in ended and APP in {role for role, _ in ended}
    site.start_succeeds()


class Resquatter:
    """A squatter that takes the key again as soon as its session is ended, in a loop."""

    def __init__(self, site: Site, key: int) -> None:
        self.site, self.key = site, key
        self.stop = threading.Event()
        self.sessions = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                with self.site.login(APP, dbname="postgres") as conn:
                    self.sessions += 1
                    conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
                    while not self.stop.is_set():
                        conn.execute("SELECT pg_sleep(0.05)")
            except psycopg.OperationalError:
                continue  # ended by bootstrap: reconnect at once

    def __enter__(self) -> Resquatter:
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.sessions == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def resquatter(site: Site) -> Iterator[Resquatter]:
    with Resquatter(site, bootstrap_key(site)) as squatter:
        yield squatter


def test_a_squatter_that_reconnects_at_once_loses_the_race(
    site: Site, resquatter: Resquatter
) -> None:
    """Queued behind the ended session, bootstrap is granted the key before the squatter's
    new session asks for it again."""
    time.sleep(0.3)  # the squatter holds the key
    result = site.run(MIGRATION_LOCK_TIMEOUT=LOCK_TIMEOUT)
    assert result.returncode == 0, result
    assert result.events_named(SQUATTER_EVENT)
    assert resquatter.sessions >= 2, "the squatter came back"


def test_the_admins_own_sessions_are_waited_for_not_ended(site: Site) -> None:
    """Another bootstrap (the admin's role) holding the key is a runner at work: wait (75)."""
    key = bootstrap_key(site)
    with site.admin("postgres") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        result = site.run(MIGRATION_LOCK_TIMEOUT="1")
        assert result.returncode == 75, result
        assert not result.events_named(SQUATTER_EVENT)
        assert holder.execute("SELECT 1").fetchone() == (1,)
    site.start_succeeds()
