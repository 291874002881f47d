"""The image's entrypoint: configuration, logging and signals in; exit code and message out.

$ python entrypoint.py                 # migrate
$ python entrypoint.py --dry-run       # print the plan, change nothing
$ python entrypoint.py status --json   # applied and pending versions
$ python entrypoint.py adopt | baseline --version V | rollback --to V   # by hand, see README
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from migrator.cli.report import write_termination_message
from migrator.cli.run import run
from migrator.cli.signals import install_signal_handlers
from migrator.config import DEFAULT_TERMINATION_LOG, Config, load_config
from migrator.errors import EX_OK, EX_SOFTWARE, Interrupted, MigratorError
from migrator.logs import Redactor, configure_logging, get_logger
from migrator.version import revision, version_line

log = get_logger("entrypoint")


def asks_for_version(argv: Sequence[str]) -> bool:
    """``--version`` alone; ``baseline --version V`` gives it a value instead."""
    if "--version" not in argv:
        return False
    following = argv[argv.index("--version") + 1 : argv.index("--version") + 2]
    return not following or following[0].startswith("-")


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    if asks_for_version(argv):
        print(version_line(revision(environ)))
        return EX_OK
    # `status --json` keeps stdout for its one JSON document: the log goes to stderr.
    stream = sys.stderr if "--json" in argv else sys.stdout
    configure_logging("console" if stream.isatty() else "json", "info", stream=stream)
    try:
        config = load_config(argv, environ)
    except MigratorError as error:
        log.error(error.event, error=error.message, exit_code=error.exit_code)
        # No Config yet: the termination message path comes straight from the environment.
        termination_log = Path(environ.get("TERMINATION_LOG") or DEFAULT_TERMINATION_LOG)
        write_termination_message(termination_log, error.message, Redactor())
        return error.exit_code
    names = (config.user, config.dbname, config.host, config.admin_user, config.app_user)
    redactor = configure_logging(
        config.log_format,
        config.log_level,
        config.secrets,
        stream,
        public_names=[n for n in names if n],
    )
    install_signal_handlers()
    warn_unknown_settings(config)
    exit_code, message = _run_and_classify(config)
    write_termination_message(config.termination_log, message, redactor)
    return exit_code


def warn_unknown_settings(config: Config) -> None:
    """Once per variable: a typo (DB_SSL_MODE) left its setting at the default."""
    for name, closest in config.unknown_settings:
        log.warning(
            "unknown_setting",
            variable=name,
            closest=closest,
            hint=f"not a setting of the runner: did you mean {closest}?"
            if closest
            else "not a setting of the runner (see docs/configuration.md)",
        )


def _run_and_classify(config: Config) -> tuple[int, str]:
    log.info(
        "run_started",
        command=config.command,
        version=config.version,
        revision=config.revision,
        host=config.host,
        port=config.port,
        dbname=config.dbname,
        user=config.user,
        dry_run=config.dry_run,
        bootstrap=config.bootstrap_enabled,
        migrations_dir=str(config.migrations_dir),
    )
    try:
        return EX_OK, run(config)
    except MigratorError as error:
        log.error(error.event, error=error.message, exit_code=error.exit_code, **_fields(error))
        return error.exit_code, error.message
    except Interrupted as interruption:
        message = f"interrupted by {interruption.signal_name}: statement cancelled, lock released"
        log.error(
            "interrupted",
            signal=interruption.signal_name,
            exit_code=interruption.exit_code,
            error=message,
        )
        return interruption.exit_code, message
    except Exception:
        log.exception("internal_error", exit_code=EX_SOFTWARE)
        return EX_SOFTWARE, "internal error: see the log for the traceback"


def _fields(error: MigratorError) -> dict[str, Any]:
    return {key: value for key, value in error.fields.items() if key not in {"error", "exit_code"}}


def exit_now(code: int) -> None:
    """Flush and leave without the interpreter's teardown.

    Tearing down psycopg, structlog and asyncio takes about 25 ms, a tenth of a start with
    nothing to do; by now every connection is closed, the lock released, the thread joined and
    the termination message written, so only the output buffers are left to flush.
    """
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:], os.environ))
