"""What the superuser checks before bootstrap trusts the roles and objects it works with.

The admin session is pinned (``search_path``, role), the owner and the runtime role are refused
when they hold more than their place, and objects a less privileged role could have planted
where the superuser would run them are refused, all before bootstrap changes anything.
For example, on the admin's connection::

    pin_admin_session(conn)
    refuse_privileged_roles(conn, owner="auth_service", app="auth_service_app", admin="postgres")
    refuse_planted_objects(conn, config.history_table)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from migrator.database.lock import _key_halves
from migrator.errors import PermissionDeniedError
from migrator.history.name import TableName
from migrator.logs import get_logger

log = get_logger("trust")

# Only the catalog, then the session's temporary schema, which PostgreSQL never searches for
# functions or operators: nothing another role can create is found by an unqualified name.
PINNED_SEARCH_PATH = "SET search_path = pg_catalog, pg_temp"
# A database-level "ALTER DATABASE ... SET role" (the owner owns the database) would run the
# superuser's session as another role; NONE is the session user itself.
PINNED_ROLE = "SET ROLE NONE"
# Put back after each file's session reset (RESET ALL would return to the database defaults).
ADMIN_SESSION_PIN = (PINNED_ROLE, PINNED_SEARCH_PATH)
# Statement sampling is decided when a transaction starts: switch it off for the session so
# that the password transaction cannot be sampled into the server's log.
NO_TRANSACTION_SAMPLING = "SET log_transaction_sample_rate = 0"
# For the transaction that sets passwords: no statement text in the server's log, not even
# on error or for a slow statement (SUSET settings: superusers only).
QUIET_TRANSACTION = (
    "SET LOCAL log_statement = 'none'",
    "SET LOCAL log_min_duration_statement = -1",
    "SET LOCAL log_min_duration_sample = -1",
    "SET LOCAL log_duration = off",
    "SET LOCAL log_min_error_statement = 'panic'",
)

OWNER_KIND = "owner"
APP_KIND = "runtime"
CLEANUP_KIND = "cleanup"
STATS_KIND = "stats"
# The one role the stats role may be a member of: its functions (000) read the statistics
# views with it, and hand out numbers only.
STATS_GROUP = "pg_read_all_stats"
# Attributes neither the owner nor the runtime role may hold, with what each lets it do.
FORBIDDEN_ATTRIBUTES = {
    "SUPERUSER": "it bypasses every permission check",
    "BYPASSRLS": "it bypasses row level security",
    "CREATEROLE": "it can create roles and grant itself other roles",
    "CREATEDB": "it can create databases, outside what bootstrap set up",
    "REPLICATION": "it can stream every row of the cluster",
}
# Predefined roles that read or write past row level security and grants, run programs or
# files as the server, see other sessions' statements, or end them. pg_monitor is caught
# through pg_read_all_stats; names a server does not know (older versions) are skipped.
FORBIDDEN_PREDEFINED_ROLES = {
    "pg_read_all_data": "it reads every table, past grants and row level security",
    "pg_write_all_data": "it writes every table, past grants and row level security",
    "pg_execute_server_program": "it runs programs on the server as the server's user",
    "pg_read_server_files": "it reads any file the server can read",
    "pg_write_server_files": "it writes any file the server can write",
    "pg_signal_backend": "it can cancel and end other roles' sessions",
    "pg_read_all_stats": "it sees every session's statements",
    "pg_maintain": "it can lock and rewrite every table",
    "pg_create_subscription": "it can make the server connect out and write replicated rows",
}

ROLE_ATTRIBUTES = """
SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication
FROM pg_catalog.pg_roles WHERE rolname = %s
"""
# Every role ``%s`` is a member of, directly or through other roles, with its attributes.
ROLE_MEMBERSHIPS = """
SELECT g.rolname, g.rolsuper, g.rolbypassrls, g.rolcreaterole, g.rolcreatedb, g.rolreplication
FROM pg_catalog.pg_roles g
WHERE g.rolname <> %(role)s
  AND pg_catalog.pg_has_role(%(role)s::pg_catalog.name, g.oid, 'MEMBER')
ORDER BY g.rolname
"""

# The stats role: whether it can log in, its first direct member (000 makes neither), and the
# attributes of ROLE_ATTRIBUTES.
STATS_ROLE = """
SELECT r.rolcanlogin,
       (SELECT pg_catalog.pg_get_userbyid(m.member) FROM pg_catalog.pg_auth_members m
        WHERE m.roleid = r.oid ORDER BY 1 LIMIT 1),
       r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication
FROM pg_catalog.pg_roles r WHERE r.rolname = %s
"""

# Objects that run code and that a role which is not a superuser owns (so can redefine):
# functions and operators named like pg_catalog's (found by an unqualified name wherever the
# search path reaches their schema, e.g. in an extension's script), event triggers whose
# function such a role owns (they fire on the superuser's DDL), and triggers, rules and
# policies on the history table (bootstrap records 000 there).
# A function or operator (``kind``) named like one of pg_catalog's, owned by a non-superuser.
SHADOW = """
SELECT '{kind} ' || x.oid::pg_catalog.{reg}::pg_catalog.text, o.rolname
FROM pg_catalog.{table} x
JOIN pg_catalog.pg_namespace n ON n.oid = x.{prefix}namespace
JOIN pg_catalog.pg_roles o ON o.oid = x.{prefix}owner
WHERE NOT o.rolsuper
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND EXISTS (SELECT FROM pg_catalog.{table} c
              WHERE c.{prefix}namespace = 'pg_catalog'::pg_catalog.regnamespace
                AND c.{prefix}name = x.{prefix}name)
"""
# A trigger, rule or policy (``kind``) on the history table.
ON_HISTORY = """
SELECT '{kind} ' || pg_catalog.quote_ident(x.{name}) || ' on ' || %(history_name)s,
       pg_catalog.pg_get_userbyid(c.relowner)
FROM pg_catalog.{table} x JOIN pg_catalog.pg_class c ON c.oid = x.{rel}
WHERE x.{rel} = pg_catalog.to_regclass(%(history)s) {only}
"""
PLANTED_OBJECTS = (
    SHADOW.format(kind="function", reg="regprocedure", table="pg_proc", prefix="pro")
    + "UNION ALL"
    + SHADOW.format(kind="operator", reg="regoperator", table="pg_operator", prefix="opr")
    + """UNION ALL
SELECT 'event trigger ' || pg_catalog.quote_ident(e.evtname) || ' (function '
       || e.evtfoid::pg_catalog.regprocedure::pg_catalog.text || ')', o.rolname
FROM pg_catalog.pg_event_trigger e
JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
WHERE NOT o.rolsuper
UNION ALL"""
    + "UNION ALL".join(
        ON_HISTORY.format(kind=kind, name=name, table=table, rel=rel, only=only)
        for kind, name, table, rel, only in (
            ("trigger", "tgname", "pg_trigger", "tgrelid", "AND NOT x.tgisinternal"),
            ("rule", "rulename", "pg_rewrite", "ev_class", ""),
            ("policy", "polname", "pg_policy", "polrelid", ""),
        )
    )
    + """
LIMIT 1
"""
)

ERR_ATTRIBUTE = (
    "{kind} role {role} has {attribute} ({why}): bootstrap changed nothing; "
    "run ALTER ROLE {role} NO{attribute}, then start again"
)
ERR_MEMBERSHIP = (
    "{kind} role {role} is a member of {group}, directly or through other roles ({why}): "
    "bootstrap changed nothing; REVOKE {group} FROM {role} (or from the role it is "
    "granted through), then start again"
)
# Whoever logs in as the stats role, or is a member of it, sees every session's statements
# (and the secrets in them) through pg_read_all_stats.
ERR_STATS_LOGIN = (
    "stats role {role} can log in (whoever does sees every session's statements, through "
    "pg_read_all_stats): bootstrap changed nothing; run ALTER ROLE {role} NOLOGIN, then "
    "start again"
)
ERR_STATS_MEMBER = (
    "stats role {role} has member {member} (a member sees every session's statements, "
    "through pg_read_all_stats): bootstrap changed nothing; REVOKE {role} FROM {member}, "
    "then start again"
)
STATS_MEMBERSHIP_WHY = (
    "the migrator_stats functions it owns run with every role it is a member of; "
    "pg_read_all_stats is the only one it may have"
)
OWNER_MEMBERSHIP_WHY = "the owner bypasses row level security on its own tables"
GROUP_ATTRIBUTE_WHY = "{group} has {attribute}, which the member can take with SET ROLE"
ERR_PLANTED = (
    "{what}, owned by {owner}, could run as the superuser during bootstrap: bootstrap "
    "changed nothing; drop it, then start again"
)
WARN_OWNER_IS_ADMIN = "DB_USER is DB_ADMIN_USER: the schema is owned by the superuser"


def pin_admin_session(conn: psycopg.Connection[Any]) -> None:
    """Run first on every superuser connection, before anything else is sent (one round trip:
    without parameters psycopg sends the statements as one simple query)."""
    sampling = (NO_TRANSACTION_SAMPLING,) if is_superuser(conn) else ()
    conn.execute("; ".join((*ADMIN_SESSION_PIN, *sampling)))


def is_superuser(conn: psycopg.Connection[Any]) -> bool:
    # The server reports it with every connection: no query needed.
    return conn.info.parameter_status("is_superuser") == "on"


def quiet_transaction(conn: psycopg.Connection[Any]) -> bool:
    """Keep the rest of the current transaction's statements out of the server's log.

    Returns False, having changed nothing, when the admin may not change these settings
    (a managed service's admin is often no superuser).
    """
    if not is_superuser(conn):
        return False
    conn.execute("; ".join(QUIET_TRANSACTION))
    return True


@dataclass(frozen=True)
class RoleRefusal:
    """Why a role is refused: an attribute of its own, or a role it is a member of."""

    message: str
    role: str
    attribute: str | None = None
    member_of: str | None = None
    member: str | None = None  # a role that is a member of this one (the stats role has none)

    def error(self) -> PermissionDeniedError:
        named = {"attribute": self.attribute, "member_of": self.member_of, "member": self.member}
        fields = {name: value for name, value in named.items() if value}
        return PermissionDeniedError(self.message, role=self.role, **fields)


def refuse_privileged_roles(
    conn: psycopg.Connection[Any],
    owner: str,
    app: str,
    admin: str | None,
    cleanup: str | None = None,
    stats: str | None = None,
) -> None:
    """Raise PermissionDeniedError (77) for the first excess found; roles not yet created pass.

    For example, on the admin's connection, when the runtime role was given CREATEROLE::

        refuse_privileged_roles(conn, "auth_service", "auth_service_app", admin="postgres")
        # PermissionDeniedError: runtime role auth_service_app has CREATEROLE (...)
    """
    if owner != admin:  # the admin as owner: no lower role to confine (see warn_owner_is_admin)
        refuse_excess(conn, OWNER_KIND, owner, extra_groups={})
    refuse_excess(conn, APP_KIND, app, extra_groups={owner: OWNER_MEMBERSHIP_WHY})
    if cleanup is not None:  # it may delete expired rows through 004's functions, nothing else
        refuse_excess(conn, CLEANUP_KIND, cleanup, extra_groups={owner: OWNER_MEMBERSHIP_WHY})
    if stats is not None:  # 000 checks it too, but only once bootstrap is under way (65)
        refusal = stats_refusal(conn, stats)
        if refusal is not None:
            raise refusal.error()


def warn_owner_is_admin(owner: str, admin: str | None) -> None:
    if owner == admin:
        log.warning("owner_is_admin", role=owner, reason=WARN_OWNER_IS_ADMIN)


def refuse_excess(
    conn: psycopg.Connection[Any], kind: str, role: str, extra_groups: dict[str, str]
) -> None:
    refusal = role_refusal(conn, kind, role, extra_groups)
    if refusal is not None:
        raise refusal.error()


def role_refusal(
    conn: psycopg.Connection[Any], kind: str, role: str, extra_groups: dict[str, str]
) -> RoleRefusal | None:
    own = conn.execute(ROLE_ATTRIBUTES, (role,)).fetchone()
    if own is None:
        return None  # 000 creates it, without any of these
    for attribute in held(own):
        reason = FORBIDDEN_ATTRIBUTES[attribute]
        message = ERR_ATTRIBUTE.format(kind=kind, role=role, attribute=attribute, why=reason)
        return RoleRefusal(message, role, attribute=attribute)
    forbidden = {**FORBIDDEN_PREDEFINED_ROLES, **extra_groups}
    for group, *attributes in conn.execute(ROLE_MEMBERSHIPS, {"role": role}):
        why = forbidden.get(group) or next(
            (GROUP_ATTRIBUTE_WHY.format(group=group, attribute=a) for a in held(attributes)),
            None,
        )
        if why:
            message = ERR_MEMBERSHIP.format(kind=kind, role=role, group=group, why=why)
            return RoleRefusal(message, role, member_of=group)
    return None


def stats_refusal(conn: psycopg.Connection[Any], role: str) -> RoleRefusal | None:
    """Why the stats role is refused: it can log in, has an attribute of FORBIDDEN_ATTRIBUTES,
    has a member, or is a member of a role other than pg_read_all_stats (directly or through
    other roles); None when it is as 000 makes it, or not created yet."""
    row = conn.execute(STATS_ROLE, (role,)).fetchone()
    if row is None:
        return None
    can_login, member, *attributes = row
    if can_login:
        return RoleRefusal(ERR_STATS_LOGIN.format(role=role), role, attribute="LOGIN")
    for attribute in held(attributes):
        reason = FORBIDDEN_ATTRIBUTES[attribute]
        message = ERR_ATTRIBUTE.format(kind=STATS_KIND, role=role, attribute=attribute, why=reason)
        return RoleRefusal(message, role, attribute=attribute)
    if member is not None:
        return RoleRefusal(ERR_STATS_MEMBER.format(role=role, member=member), role, member=member)
    for group, *_ in conn.execute(ROLE_MEMBERSHIPS, {"role": role}):
        if group != STATS_GROUP:
            why = STATS_MEMBERSHIP_WHY
            message = ERR_MEMBERSHIP.format(kind=STATS_KIND, role=role, group=group, why=why)
            return RoleRefusal(message, role, member_of=group)
    return None


def held(flags: Iterable[bool]) -> list[str]:
    """The forbidden attributes set in a row of ROLE_ATTRIBUTES' columns, in their order."""
    return [name for name, flag in zip(FORBIDDEN_ATTRIBUTES, flags, strict=True) if flag]


def refuse_planted_objects(conn: psycopg.Connection[Any], history: TableName) -> None:
    """Raise PermissionDeniedError (77) naming an object that could run as the superuser;
    ``history`` is the history table (MIGRATIONS_TABLE), whose triggers, rules and policies
    count.

    For example, on the admin's connection, after the owner created ``public.format``::

        refuse_planted_objects(conn, config.history_table)
        # PermissionDeniedError: function public.format(text,text), owned by auth_service, ...
    """
    names = {"history": history.regclass, "history_name": str(history)}
    row = conn.execute(PLANTED_OBJECTS, names).fetchone()
    if row is not None:
        what, owner = row
        message = ERR_PLANTED.format(what=what, owner=owner)
        raise PermissionDeniedError(message, role=owner, object=what)


@dataclass(frozen=True)
class LockSquatters:
    """Ends the sessions of roles that are neither a superuser nor the admin holding or
    queued for the bootstrap lock, then waits for it in the queue, all in one round trip.

    Queued behind the squatter when it exits, the admin is granted the lock before any
    session that asks for it afterwards: a squatter that reconnects loses the race.
    For example, on the admin's connection::

        LockSquatters(admin="postgres")(conn, key)  # True when the lock was taken
    """

    admin: str | None
    queue_timeout_ms: int = 2000

    def __call__(self, conn: psycopg.Connection[Any], key: int) -> bool:
        high, low = _key_halves(key)
        squatters = conn.execute(SQUATTERS, (high, low, self.admin)).fetchall()
        if not squatters:
            return False
        for pid, role in squatters:
            log.warning("bootstrap_lock_squatter_terminated", pid=pid, role=role, key=key)
        evict = sql.SQL(EVICT_AND_QUEUE).format(
            timeout=sql.Literal(f"{self.queue_timeout_ms}ms"),
            pids=sql.Literal([pid for pid, _ in squatters]),
            key=sql.Literal(key),
        )
        try:
            conn.execute(evict)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.InsufficientPrivilege) as error:
            log.info("bootstrap_lock_still_busy", reason=error.diag.message_primary)
            return False
        return True


SQUATTERS = """
SELECT DISTINCT l.pid, a.usename
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_catalog.pg_database
                   WHERE datname = pg_catalog.current_database())
  AND l.classid::pg_catalog.int8 = %s
  AND l.objid::pg_catalog.int8 = %s
  AND l.pid <> pg_catalog.pg_backend_pid()
  AND r.rolsuper IS NOT TRUE
  AND a.usename IS DISTINCT FROM %s
"""
# One simple-query round trip (one implicit transaction): the session lock outlives it.
EVICT_AND_QUEUE = (
    "SET LOCAL lock_timeout = {timeout}; "
    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.unnest({pids}::int[]) AS pid; "
    "SELECT pg_catalog.pg_advisory_lock({key})"
)
