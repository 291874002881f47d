"""The owner plants code where the superuser of the next start would run it: it never runs as
the superuser. Planted objects are refused (77) before bootstrap changes anything; code the
owner attaches to its own history table runs in the owner's own session only."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.security.conftest import (
    ESCALATE,
    NOBODY,
    OWNER,
    UNDO_ESCALATE,
    Site,
    refused_and_unchanged,
)

TRIGGER = """
CREATE FUNCTION public.escalate_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); RETURN NEW; END $$;
CREATE TRIGGER sneaky BEFORE INSERT OR UPDATE ON public.schema_migrations
    FOR EACH ROW EXECUTE FUNCTION public.escalate_trigger();
"""
# The example: format(text, text) beats pg_catalog.format(text, VARIADIC "any") for
# format('...%I', name) wherever public is searched.
SHADOWING_FORMAT = """
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); RETURN pg_catalog.format($1, VARIADIC ARRAY[$2]); END $$;
"""
SHADOWING_HAS_ROLE = """
CREATE FUNCTION public.pg_has_role(text, text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); RETURN false; END $$;
"""
SHADOWING_OPERATOR = """
CREATE FUNCTION public.name_eq_text(name, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); RETURN $1::text = $2; END $$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.name_eq_text);
"""
RULE = """
CREATE RULE sneaky AS ON INSERT TO public.schema_migrations DO ALSO SELECT public.escalate();
"""
# The history table swapped for a view over a copy: a view is a table with a _RETURN rule.
VIEW = """
ALTER TABLE public.schema_migrations RENAME TO real_history;
CREATE VIEW public.schema_migrations AS SELECT * FROM public.real_history;
"""
UNDO_VIEW = """
DROP VIEW public.schema_migrations;
ALTER TABLE public.real_history RENAME TO schema_migrations;
"""
POLICY = """
CREATE FUNCTION public.allow() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); RETURN true; END $$;
ALTER TABLE public.schema_migrations ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY sneaky ON public.schema_migrations USING (public.allow()) WITH CHECK (public.allow());
"""
UNDO_POLICY = """
DROP POLICY sneaky ON public.schema_migrations;
ALTER TABLE public.schema_migrations NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY;
DROP FUNCTION public.allow();
"""

# What every new connection runs first (migrator.database.connect.SESSION_SETUP), shadowed behind the search
# path the owner sets on its database: the superuser's connection runs that query before
# bootstrap pins its own. Before the fix the owner became superuser at bootstrap's login.
OWNERS_SEARCH_PATH = """
DO $$ BEGIN EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = public, pg_catalog',
                                      pg_catalog.current_database()); END $$;
"""
UNDO_SEARCH_PATH = """
DO $$ BEGIN EXECUTE pg_catalog.format('ALTER DATABASE %I RESET ALL',
                                      pg_catalog.current_database()); END $$;
"""


def shadowing_session_setup(function: str, arguments: str, returns: str, passed: str) -> Any:
    """A case: the owner's ``public.<function>`` that the session setup would call (it escalates
    and then calls the real one), found first behind the search path the owner sets."""
    plant = (
        f"CREATE FUNCTION public.{function}({arguments}) RETURNS {returns} LANGUAGE plpgsql AS $$\n"
        f"BEGIN PERFORM public.escalate(); RETURN pg_catalog.{function}({passed}); END $$;\n"
    )
    undo = f"DROP FUNCTION public.{function}({arguments});"
    named = f"function public.{function}({arguments.replace(', ', ',')})"
    return pytest.param(
        plant + OWNERS_SEARCH_PATH, UNDO_SEARCH_PATH + undo, named, id=f"session-setup-{function}"
    )


PLANTED = [
    pytest.param(TRIGGER, "DROP TRIGGER sneaky ON public.schema_migrations;"
                 "DROP FUNCTION public.escalate_trigger();",
                 "trigger sneaky on public.schema_migrations", id="trigger-on-history"),
    pytest.param(RULE, "DROP RULE sneaky ON public.schema_migrations;",
                 "rule sneaky on public.schema_migrations", id="rule-on-history"),
    pytest.param(VIEW, UNDO_VIEW, 'rule "_RETURN" on public.schema_migrations',
                 id="history-replaced-by-a-view"),
    pytest.param(POLICY, UNDO_POLICY, "policy sneaky on public.schema_migrations",
                 id="policy-on-history"),
    pytest.param(SHADOWING_FORMAT, "DROP FUNCTION public.format(text, text);",
                 "function public.format(text,text)", id="shadowing-format"),
    pytest.param(SHADOWING_HAS_ROLE, "DROP FUNCTION public.pg_has_role(text, text, text);",
                 "function public.pg_has_role(text,text,text)", id="shadowing-pg_has_role"),
    pytest.param(SHADOWING_OPERATOR, "DROP OPERATOR public.= (name, text);"
                 "DROP FUNCTION public.name_eq_text(name, text);",
                 "operator public.=(name,text)", id="shadowing-operator"),
    shadowing_session_setup("pg_backend_pid", "", "integer", ""),
    shadowing_session_setup("set_config", "text, text, boolean", "text", "$1, $2, $3"),
    shadowing_session_setup("pg_is_in_recovery", "", "boolean", ""),
    shadowing_session_setup("current_setting", "text", "text", "$1"),
]  # fmt: skip


@pytest.mark.parametrize(("plant", "undo", "named"), PLANTED)
def test_an_object_the_owner_planted_is_refused_and_nothing_changes(
    site: Site, plant: str, undo: str, named: str
) -> None:
    site.as_role(OWNER, ESCALATE + plant)
    assert site.superusers() == ["postgres"]
    try:
        message = refused_and_unchanged(site, named, OWNER)
        assert "could run as the superuser" in message
        assert site.query("SELECT * FROM attack_trace") == [], "the planted code ran"
    finally:
        site.as_role(OWNER, undo + UNDO_ESCALATE)
    site.start_succeeds()


def test_a_function_in_the_owners_temporary_schema_is_refused(site: Site) -> None:
    """pg_temp is never searched for functions, but a pg_temp function named like the
    catalog's is refused as well while the session that made it lives."""
    with site.login(OWNER) as attacker:
        attacker.execute(ESCALATE)
        attacker.execute(
            "CREATE FUNCTION pg_temp.current_setting(text, boolean) RETURNS text "
            "LANGUAGE sql AS $$ SELECT public.escalate()::text $$"
        )
        try:
            refused_and_unchanged(site, "function pg_temp_", "current_setting(text,boolean)")
        finally:
            attacker.execute(UNDO_ESCALATE)
    site.start_succeeds()


DEFAULT_CALLING_THE_OWNER = """
CREATE FUNCTION public.stamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); RETURN pg_catalog.now(); END $$;
ALTER TABLE public.schema_migrations ALTER applied_at SET DEFAULT public.stamp();
"""
UNDO_DEFAULT = """
ALTER TABLE public.schema_migrations ALTER applied_at SET DEFAULT now();
DROP FUNCTION public.stamp();
"""


def test_code_the_owner_attaches_to_its_history_table_runs_as_the_owner_only(site: Site) -> None:
    """A column default is not refused: bootstrap writes 000's row over the owner's own login,
    so the function runs with the owner's rights, and RESET ROLE leads back to the owner."""
    site.as_role(OWNER, ESCALATE + DEFAULT_CALLING_THE_OWNER)
    try:
        result = site.run()
        assert result.returncode == 0, result
        assert site.superusers() == ["postgres"]
        trace = set(site.query("SELECT * FROM attack_trace"))
        assert trace == {(OWNER, OWNER)}, "the default ran, and only in the owner's session"
    finally:
        site.as_role(OWNER, UNDO_DEFAULT + UNDO_ESCALATE)
    site.start_succeeds()


def test_database_settings_the_owner_sets_do_not_reach_the_superuser(site: Site) -> None:
    """The owner owns the database, so it can ALTER DATABASE ... SET what every session
    inherits, the superuser's too: a search path that puts public first, and its own role."""
    name = site.db.name
    site.as_role(OWNER, ESCALATE + SHADOWING_FORMAT)
    site.as_role(OWNER, f'ALTER DATABASE "{name}" SET search_path = public, pg_catalog')
    site.as_role(OWNER, f'ALTER DATABASE "{name}" SET role = {OWNER}')
    try:
        refused_and_unchanged(site, "function public.format(text,text)")
        site.as_role(OWNER, "DROP FUNCTION public.format(text, text);")
        result = site.run()
        assert result.returncode == 0, result
        assert site.superusers() == ["postgres"]
        assert site.query("SELECT * FROM attack_trace") == []
        applied_by = "SELECT applied_by FROM schema_migrations WHERE version = '000_init_database'"
        assert site.query(applied_by) == [("postgres",)]
    finally:
        site.as_role(OWNER, f'ALTER DATABASE "{name}" RESET ALL;' + UNDO_ESCALATE)
    site.start_succeeds()


EVENT_TRIGGER_FUNCTION = """
CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate(); END $$;
"""


def test_an_event_trigger_calling_a_function_the_owner_owns_is_refused(site: Site) -> None:
    """Only a superuser creates event triggers; one that calls a function the owner can
    redefine would run the owner's code on the superuser's DDL."""
    site.as_role(OWNER, ESCALATE + EVENT_TRIGGER_FUNCTION)
    with site.login(OWNER) as owner, pytest.raises(psycopg.errors.InsufficientPrivilege):
        owner.execute(
            "CREATE EVENT TRIGGER sneaky ON ddl_command_end EXECUTE FUNCTION public.on_ddl()"
        )
    site.as_admin(
        "CREATE EVENT TRIGGER careless ON ddl_command_end EXECUTE FUNCTION public.on_ddl()"
    )
    try:
        refused_and_unchanged(site, "event trigger careless", "public.on_ddl()", OWNER)
    finally:
        site.as_admin("DROP EVENT TRIGGER careless")
        site.as_role(OWNER, "DROP FUNCTION public.on_ddl();" + UNDO_ESCALATE)
    site.start_succeeds()


@pytest.mark.parametrize("attacker", [NOBODY, "sec_app"])
def test_roles_below_the_owner_cannot_plant_anything(site: Site, attacker: str) -> None:
    """The runtime role and a role with only CONNECT create nothing the superuser could reach."""
    attempts = [
        SHADOWING_FORMAT.replace("PERFORM public.escalate();", ""),
        "CREATE FUNCTION pg_temp.format(text, text) RETURNS text LANGUAGE sql AS $$ SELECT $1 $$",
        "CREATE RULE sneaky AS ON INSERT TO public.schema_migrations DO ALSO NOTHING",
        "CREATE TRIGGER sneaky BEFORE INSERT ON public.schema_migrations "
        "FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()",
        f'ALTER DATABASE "{site.db.name}" SET search_path = public, pg_catalog',
        "ALTER TABLE public.schema_migrations ALTER applied_at SET DEFAULT now()",
    ]
    with site.login(attacker) as conn:
        for statement in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    site.start_succeeds()
