"""baseline --verify: the live schema against the one the files build on a throwaway database.

For example, on connections to the live database and to the scratch one the files built::

    differences(live_conn, scratch_conn, config.history_table)
    # ['missing in the live database: index public.accounts_email ...']
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import closing
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from migrator.apply.applier import Applier
from migrator.config import Config
from migrator.database.catalog import MAINTENANCE_DATABASE
from migrator.database.connect import connect
from migrator.database.scratch import scratch_database
from migrator.errors import HistoryMismatchError
from migrator.files.migration import Migration
from migrator.history import table as history
from migrator.history.name import TableName
from migrator.logs import get_logger

log = get_logger("verify")

SCRATCH_PREFIX = "baseline_verify_"
SHOWN_DIFFERENCES = 3
# One line per object of the user's schemas, in a form two databases can be compared on.
SCHEMA_OBJECTS = """
WITH user_namespaces AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'
      -- The throttle's statistics functions, made by 000 as a superuser (the runner's own).
      AND NOT (nspname = 'migrator_stats'
               AND (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = nspowner))
), relations AS (
    SELECT c.oid, c.relkind, n.nspname || '.' || c.relname AS name
    FROM pg_class c JOIN user_namespaces n ON n.oid = c.relnamespace
    WHERE NOT (n.nspname = 'public' AND c.relname LIKE 'schema_migrations%')
      AND NOT (n.nspname = {schema} AND c.relname IN ({history}, {lock}, {batch}))
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
)
SELECT 'relation ' || name || ' (' || relkind::text || ')' FROM relations WHERE relkind <> 'i'
UNION ALL
SELECT 'column ' || r.name || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
FROM relations r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'index ' || pg_get_indexdef(r.oid) FROM relations r WHERE r.relkind = 'i'
UNION ALL
SELECT 'constraint ' || r.name || ' ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
FROM pg_constraint co JOIN relations r ON r.oid = co.conrelid
UNION ALL
SELECT 'view ' || r.name || ' ' || pg_get_viewdef(r.oid)
FROM relations r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN relations r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT 'routine ' || n.nspname || '.' || p.proname
       || '(' || pg_get_function_identity_arguments(p.oid) || ') ' || md5(pg_get_functiondef(p.oid))
FROM pg_proc p JOIN user_namespaces n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'type ' || n.nspname || '.' || t.typname || ' ' || coalesce(
    (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e
     WHERE e.enumtypid = t.oid), t.typtype::text)
FROM pg_type t JOIN user_namespaces n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT 'policy ' || pol.polname || ' on ' || r.name || ' '
       || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')
FROM pg_policy pol JOIN relations r ON r.oid = pol.polrelid
"""
LIVE_EXTENSIONS = "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'"

REMEDY = "grant CREATEDB, set DB_ADMIN_USER, or run baseline without --verify"
ERR_DIFFERENT = (
    "the live schema differs from what the files up to {version} build, so nothing was "
    "recorded: {shown}{more}"
)
MORE = " (and {count} more difference(s))"


def differences(
    live: psycopg.Connection[Any], scratch: psycopg.Connection[Any], table: TableName
) -> list[str]:
    """What one database has that the other lacks, named as the user reads it; the history
    table, the lock's view and the batch checkpoints (``table``'s) are the runner's, not the
    files'."""
    query = sql.SQL(SCHEMA_OBJECTS).format(
        schema=table.schema, history=table.name, lock=table.lock.name, batch=table.batch.name
    )
    mine = {row[0] for row in live.execute(query)}
    built = {row[0] for row in scratch.execute(query)}
    return [f"missing in the live database: {item}" for item in sorted(built - mine)] + [
        f"not built by the files: {item}" for item in sorted(mine - built)
    ]


def verify_baseline(
    config: Config, live: psycopg.Connection[Any], chosen: Sequence[Migration]
) -> None:
    """Build ``chosen`` on a throwaway database (the live extensions first, standing in for the
    bootstrap script) and refuse (exit 65) when its schema differs from the live one."""
    extensions = [row[0] for row in live.execute(LIVE_EXTENSIONS)]
    admin = config.bootstrap_enabled
    with (
        scratch_database(
            config.connect_kwargs(admin=admin, dbname=MAINTENANCE_DATABASE),
            SCRATCH_PREFIX + uuid.uuid4().hex[:12],
            config.wait_timeout,
            "baseline --verify",
            events="baseline_verify",
            owner=config.user if admin else None,
            remedy=REMEDY,
        ) as name,
        connect(config.connect_kwargs(dbname=name), config.wait_timeout) as scratch,
    ):
        for extension in extensions:
            scratch.execute(
                sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension))
            )
        history.ensure_schema(scratch, config.history_table)
        history.ensure_history_table(scratch, config.history_table)
        reopen = partial(connect, config.connect_kwargs(dbname=name), config.wait_timeout)
        applier = Applier(scratch, config, reopen=reopen)
        with closing(applier):
            for migration in chosen:
                applier.apply(migration)
            # A file may have made it a new login.
            found = differences(live, applier.conn, config.history_table)
    log.info("baseline_verified", versions=len(chosen), differences=len(found))
    if found:
        shown = "; ".join(found[:SHOWN_DIFFERENCES])
        more = (
            MORE.format(count=len(found) - SHOWN_DIFFERENCES) if found[SHOWN_DIFFERENCES:] else ""
        )
        version = chosen[-1].version if chosen else "(none)"
        raise HistoryMismatchError(
            ERR_DIFFERENT.format(version=version, shown=shown, more=more), differences=found
        )
