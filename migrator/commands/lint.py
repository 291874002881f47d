"""The lint command: the pending files applied on a scratch database, hazards reported.

For example, with admin credentials (or ``--shadow-url``) for the scratch database::

    run(config, find_migrations(Path("migrations")))
    # 'lint: 1 file(s), 0 hazard(s), 0 waived, 0 on small tables, 0 unwaived'
"""

from __future__ import annotations

from migrator.config import Config
from migrator.files.folder import MigrationSet
from migrator.lint.linter import lint


def run(config: Config, files: MigrationSet) -> str:
    return lint(config, files)
