"""The lint's settings: LINT_MIN_ROWS, LINT_BEFORE_APPLY, the shadow URL (its password a secret)."""

from __future__ import annotations

import pytest

from migrator.config import load_config
from migrator.errors import ConfigError

ENV = {"DB_PASSWORD": "pw"}


def test_defaults():
    config = load_config(["lint"], ENV, interactive=False)
    assert (config.command, config.lint_min_rows, config.lint_before_apply) == ("lint", None, False)
    assert config.shadow_url is None


def test_settings_are_read():
    env = {**ENV, "LINT_MIN_ROWS": "500", "LINT_BEFORE_APPLY": "yes"}
    config = load_config([], env, interactive=False)
    assert (config.lint_min_rows, config.lint_before_apply) == (500, True)


def test_the_shadow_password_is_a_secret_and_not_in_repr():
    url = "postgresql://lint:sh4dow-pw@127.0.0.1:5433/scratch"
    config = load_config(["lint", "--shadow-url", url], ENV, interactive=False)
    assert "sh4dow-pw" in config.secrets
    assert "sh4dow-pw" not in repr(config)
    from_env = load_config(["lint"], {**ENV, "LINT_SHADOW_URL": url}, interactive=False)
    assert from_env.shadow_url == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LINT_MIN_ROWS": "many"}, "LINT_MIN_ROWS must be a whole number"),
        ({"LINT_BEFORE_APPLY": "perhaps"}, "LINT_BEFORE_APPLY must be true or false"),
        ({"LINT_SHADOW_URL": "mysql://x:secret@h/db"}, "must start with postgresql://"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config(["lint"], {**ENV, **env}, interactive=False)
    assert "secret" not in error.value.message


def test_lint_batch_rows_defaults_to_a_hundred_thousand_and_is_read():
    assert load_config(["lint"], ENV, interactive=False).lint_batch_rows == 100_000
    env = {**ENV, "LINT_BATCH_ROWS": "1000"}
    assert load_config(["lint"], env, interactive=False).lint_batch_rows == 1000
    with pytest.raises(ConfigError, match="LINT_BATCH_ROWS must be a whole number"):
        load_config(["lint"], {**ENV, "LINT_BATCH_ROWS": "lots"}, interactive=False)
