"""Running the chosen command: the files read first, a lost session made the user's error.

For example, against a reachable database (``load_config`` is in migrator.config)::

    run(load_config(["status"], os.environ))  # '3 applied or recorded, 0 pending'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

import psycopg

from migrator import commands
from migrator.config import Config
from migrator.database.connect import pooler_refused, reason_of
from migrator.errors import AuthenticationError, ConnectionLostError
from migrator.files.folder import MigrationSet, find_migrations, refuse_empty

Command = Callable[[Config, MigrationSet], str]

ERR_CONNECTION_LOST = "lost the connection to PostgreSQL ({reason}); run again"
# A fresh server without DB_ADMIN_USER: the owner's login fails because the role is not there.
HINT_NO_ROLE = (
    "; on a new server the role may not exist yet: bootstrap creates it, "
    "set DB_ADMIN_USER and DB_ADMIN_PASSWORD"
)
ERR_POOLER_DROPPED = (
    "the connection pooler ended the runner's connection ({reason}): its pool is exhausted "
    "or it lost PostgreSQL; nothing half-applied is recorded — run again"
)


def run(config: Config) -> str:
    files = find_migrations(config.migrations_dir)  # bad files fail before touching the database
    refuse_empty(files, config.migrations_dir)
    try:
        return load(config.command)(config, files)
    except AuthenticationError as error:
        if config.bootstrap_enabled or error.fields.get("user") != config.user:
            raise
        raise AuthenticationError(error.message + HINT_NO_ROLE, **error.fields) from None
    except psycopg.OperationalError as error:
        # Between files (reading the history, polling the lock): the session simply ended.
        if error.sqlstate and not error.sqlstate.startswith(("08", "57P")):
            raise
        template = ERR_POOLER_DROPPED if pooler_refused(error) else ERR_CONNECTION_LOST
        raise ConnectionLostError(template.format(reason=reason_of(error))) from None


def load(name: str) -> Command:
    """The ``run`` of command ``name``, its module imported now: a start with nothing to do
    loads the migrate path alone.

    >>> load("status").__module__
    'migrator.commands.status'
    """
    if name not in commands.NAMES:
        raise ValueError(f"unknown command {name!r}")
    return cast(Command, importlib.import_module(f"{commands.__name__}.{name}").run)
