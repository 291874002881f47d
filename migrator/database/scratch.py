"""A scratch database: created empty on the target's server for one run, dropped at its end,
whatever happens in between. The lint builds the files in one; ``baseline --verify`` builds
the schema the files make and compares it with the live one. For example, with
``admin_kwargs`` a superuser's (or a CREATEDB role's) connection to the maintenance database::

    with scratch_database(admin_kwargs, "auth_service_lint_1a2b3c4d5e", 30, "lint") as name:
        conn = connect({**admin_kwargs, "dbname": name}, 30)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from migrator.database.connect import connect
from migrator.errors import PermissionDeniedError
from migrator.logs import get_logger

log = get_logger("scratch")

CREATE = "CREATE DATABASE {name}"
OWNED_BY = " OWNER {owner}"
# FORCE: a session the run left behind (a pooler's, a cancelled build) must not keep it.
DROP = "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
ERR_CANNOT_CREATE = (
    "{purpose} needs a throwaway database and {user} cannot create one ({reason}): {remedy}"
)


@contextmanager
def scratch_database(
    admin_kwargs: dict[str, Any],
    name: str,
    wait_timeout: float,
    purpose: str,
    *,
    events: str = "",
    owner: str | None = None,
    remedy: str = "set DB_ADMIN_USER to a role that has CREATEDB",
) -> Iterator[str]:
    """Create database ``name`` (owned by ``owner`` when given) over ``admin_kwargs`` (the
    maintenance database); yield its name; drop it at the end. ``purpose`` is what the user
    ran (it names the refusal); ``events`` prefixes the log events (``lint_scratch_created``)."""
    with connect(admin_kwargs, wait_timeout) as admin:
        statement = sql.SQL(CREATE).format(name=sql.Identifier(name))
        if owner is not None:
            statement += sql.SQL(OWNED_BY).format(owner=sql.Identifier(owner))
        try:
            admin.execute(statement)
        except psycopg.errors.InsufficientPrivilege as error:
            message = ERR_CANNOT_CREATE.format(
                purpose=purpose,
                user=admin_kwargs["user"],
                reason=error.diag.message_primary,
                remedy=remedy,
            )
            raise PermissionDeniedError(message) from None
        log.info(f"{events or purpose}_scratch_created", scratch=name)
        try:
            yield name
        finally:
            admin.execute(sql.SQL(DROP).format(name=sql.Identifier(name)))
            log.info(f"{events or purpose}_scratch_dropped", scratch=name)
