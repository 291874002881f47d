"""The commands: one thin module each over the core, each with ``run(config, files) -> str``.

The list is written here once: the command line's choices come from it, and the entrypoint
imports a command's module only when it is chosen (migrator.cli.run).

>>> "baseline" in NAMES, "status" in READ_ONLY
(True, True)
"""

NAMES = ("migrate", "status", "wait", "lint", "adopt", "baseline", "rollback", "cleanup")
# The commands that never write: they neither ask for a writable server nor take the lock.
READ_ONLY = ("status", "wait")
