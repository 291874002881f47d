"""A failing file's statement, with a password the runner never knew, in every SQL quoting.

The statement's text travels in migration_failed (its excerpt, the server's context) and in
the termination message. The redactor knew only PASSWORD '...': a password in $tag$, $$, E''
or U&'' quoting, in OPTIONS (password E'...'), or in a connection string passed to dblink
went out as written. The literals are now found by the SQL lexer, whatever their quoting.
"""

from __future__ import annotations

import pytest

from tests.conftest import remember_secret

# Each file fails (the role, server or function does not exist) with its statement quoted.
FAILING = {
    "dollar_tag": f"ALTER ROLE no_such_role PASSWORD $p${remember_secret('Sekr1t-tag-4b1d')}$p$;",
    "dollar": f"ALTER ROLE no_such_role PASSWORD $${remember_secret('Sekr1t-dollar-77ce')}$$;",
    "escape": f"ALTER ROLE no_such_role PASSWORD E'{remember_secret('Sekr1t-esc-09af')}\\'x';",
    "unicode": f"ALTER ROLE no_such_role PASSWORD U&'{remember_secret('Sekr1t-uni-5e2a')}';",
    "options": "CREATE USER MAPPING FOR CURRENT_USER SERVER no_such_server "
    f"OPTIONS (user 'u', password E'{remember_secret('Sekr1t-opt-c3d8')}');",
    "conninfo": "SELECT no_such_dblink_connect("
    f"'host=127.0.0.1 password={remember_secret('Sekr1t-conn-61f0')}');",
}


@pytest.mark.parametrize("quoting", sorted(FAILING))
def test_a_failing_statements_password_is_never_shown(quoting, database, run_runner, migrations):
    migrations.write("001_leaky.sql", "SELECT 1;\n" + FAILING[quoting] + "\n")
    result = run_runner(env=database.env(MIGRATIONS_DIR=str(migrations.path)))
    # run_runner's checks refuse any remembered secret in stdout, stderr and the termination
    # message; what the user sees of the statement is there, its literal masked.
    assert result.returncode == 65, result
    failed = result.events_named("migration_failed")[0]
    assert failed["line"] == 2 and "'***'" in failed["statement"], failed
