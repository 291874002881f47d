from __future__ import annotations

from typing import Any

import psycopg

from tests.integration import schema_fixtures
from tests.integration.schema_fixtures import APP_ROLE, SchemaDatabase

schema_db = schema_fixtures.schema_db

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
PRIVILEGES = """
WITH r AS (SELECT %(role)s::regrole AS role),
rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
)
SELECT CASE relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
            WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence' ELSE 'table' END
       || ' ' || quote_ident(nspname) || '.' || quote_ident(relname) || ': ' || p
FROM rels, r, unnest(CASE WHEN relkind = 'S' THEN ARRAY['USAGE', 'SELECT', 'UPDATE']
                          ELSE %(table_privileges)s::text[] END) AS p
WHERE CASE WHEN relkind = 'S' THEN has_sequence_privilege(r.role, rels.oid, p)
           ELSE has_table_privilege(r.role, rels.oid, p) END
UNION ALL
SELECT 'column ' || quote_ident(nspname) || '.' || quote_ident(relname) || '.'
       || quote_ident(a.attname) || ': ' || p
FROM rels JOIN pg_attribute a ON a.attrelid = rels.oid AND a.attnum > 0 AND NOT a.attisdropped,
     r, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) AS p
WHERE rels.relkind <> 'S' AND has_column_privilege(r.role, rels.oid, a.attnum, p)
  AND NOT has_table_privilege(r.role, rels.oid, p)
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function'
            ELSE 'function' END || ' ' || quote_ident(n.nspname) || '.' || quote_ident(p.proname)
       || '(' || coalesce((SELECT string_agg(format_type(t, NULL), ', ' ORDER BY i)
                           FROM unnest(p.proargtypes) WITH ORDINALITY AS u(t, i)), '') || '): EXECUTE'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, r
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND has_function_privilege(r.role, p.oid, 'EXECUTE')
UNION ALL
SELECT 'schema ' || quote_ident(n.nspname) || ': ' || p
FROM pg_namespace n, r, unnest(ARRAY['USAGE', 'CREATE']) AS p
WHERE n.nspname !~ '^pg_(toast|temp_)' AND has_schema_privilege(r.role, n.oid, p)
UNION ALL
SELECT 'database: ' || p FROM r, unnest(ARRAY['CONNECT', 'TEMPORARY', 'CREATE']) AS p
WHERE has_database_privilege(r.role, current_database(), p)
"""


def privileges(conn: psycopg.Connection[Any], role: str) -> list[str]:
    rows = conn.execute(
        PRIVILEGES, {"role": role, "table_privileges": list(TABLE_PRIVILEGES)}
    ).fetchall()
    return sorted(row[0] for row in rows)


def test_print(schema_db: SchemaDatabase) -> None:
    with schema_db.superuser() as conn:
        conn.execute("SET search_path = pg_catalog, public")
        for line in privileges(conn, APP_ROLE):
            print(line)


TRIGGER_FUNCS = """SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
AND p.prorettype = 'trigger'::regtype"""


def workload(conn, user, client):
    import os

    conn.execute("SELECT set_config('app.current_user_id', %s, false)", (str(user),))
    conn.execute("UPDATE users SET display_name = 'x' WHERE id = %s", (user,))
    conn.execute(
        "UPDATE users SET password_hash = %s WHERE id = %s",
        (schema_fixtures.bcrypt_hash(int.from_bytes(os.urandom(4), "big")), user),
    )
    conn.execute(
        "INSERT INTO tokens (token_hash, client_id, user_id, expires_at) VALUES (%s, %s, %s, now() + interval '1 hour')",
        (os.urandom(32), client, user),
    )
    conn.execute("UPDATE tokens SET revoked_at = now() WHERE user_id = %s", (user,))
    conn.execute("INSERT INTO security_events (event_type, user_id) VALUES ('x', %s)", (user,))
    conn.execute(
        "INSERT INTO user_sessions (session_hash, user_id) VALUES (%s, %s)", (os.urandom(32), user)
    )
    conn.execute(
        "INSERT INTO api_keys (user_id, name, key_prefix, key_hash) VALUES (%s, 'k', 'abcd', %s)",
        (user, os.urandom(32)),
    )
    conn.execute(
        "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, %s)",
        (user, "zz@example.com", schema_fixtures.BCRYPT_HASH),
    ) if False else None
    conn.execute("UPDATE users SET status = 'disabled' WHERE id = %s", (user,))


def test_needed(schema_db: SchemaDatabase) -> None:
    client = schema_db.create_client()
    with schema_db.superuser() as conn:
        funcs = [r[0] for r in conn.execute(TRIGGER_FUNCS)]
    groups = {
        "triggers": funcs,
        **{
            f: [f]
            for f in [
                "acting_as_owner(oid)",
                "app_has_permission(text)",
                "is_modern_password_hash(text)",
                "app_current_user_id()",
                "app_current_client_id()",
                "redirect_uris_valid(text[])",
                "app_require_permission(text, text[])",
                "app_permissions()",
            ]
        },
    }
    for name, fs in groups.items():
        user = schema_db.create_user()
        with schema_db.superuser() as conn:
            conn.execute("BEGIN")
            for f in fs:
                conn.execute(f"REVOKE EXECUTE ON FUNCTION {f} FROM {APP_ROLE}")
            conn.execute(f"SET ROLE {APP_ROLE}")
            try:
                workload(conn, user, client)
                print(name, "NOT NEEDED")
            except psycopg.Error as e:
                print(name, "needed:", e.sqlstate, e)
            conn.execute("ROLLBACK")
