"""Connection settings as libpq reads them: a URL's parts, TLS modes and certificate files.
Checked while the configuration is read, so a bad value fails before anything connects and
no error repeats a password.

>>> parse_url("postgresql://owner@db:5432/auth?sslmode=verify-full", "DATABASE_URL")["sslmode"]
'verify-full'
"""

from __future__ import annotations

import re
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from migrator.errors import ConfigError

DEFAULT_SSLMODE = "prefer"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Only verify-full checks both the CA and the host name; the others log tls_not_verified.
VERIFIED_SSLMODE = "verify-full"
CHANNEL_BINDINGS = ("disable", "prefer", "require")
# Certificate files: (libpq parameter, our variable, libpq's own variable), in that precedence
# after DATABASE_URL.
TLS_FILE_SETTINGS = (
    ("sslrootcert", "DB_SSLROOTCERT", "PGSSLROOTCERT"),
    ("sslcert", "DB_SSLCERT", "PGSSLCERT"),
    ("sslkey", "DB_SSLKEY", "PGSSLKEY"),
    ("sslcrl", "DB_SSLCRL", "PGSSLCRL"),
)
# Values libpq understands without a file: the system's trust store (libpq 16+).
SSLROOTCERT_SYSTEM = "system"
# URL parameters that Config holds in fields of its own; the other libpq ones pass through.
URL_FIELDS = frozenset(
    {"host", "port", "dbname", "user", "password", "sslmode", "channel_binding", "application_name"}
    | {setting[0] for setting in TLS_FILE_SETTINGS}
)
# libpq parameters whose values are secrets: kept out of repr and redacted from the logs.
SECRET_PARAMETERS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
# libpq names the parameter it does not know (never its value) in these messages.
UNKNOWN_PARAMETER_RE = re.compile(
    r'invalid (?:URI query parameter:?|connection option) "(?P<name>[A-Za-z0-9_.-]{1,64})"'
)
# Commands that only read: any server will do, a hot standby too. Every other command's
# connections ask for one that takes writes (WRITABLE_SESSION, libpq's words; with one host
# the server itself is asked, migrator/database/connect.py open_connection).
WRITABLE_SESSION = {"target_session_attrs": "read-write"}
URL_SCHEMES = ("postgresql://", "postgres://")
URL_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
ERR_URL_SCHEME = "{name} must start with postgresql:// or postgres://, not {scheme}://"
ERR_BAD_URL = "DATABASE_URL is not a valid PostgreSQL URL or connection string"
ERR_UNKNOWN_URL_PARAMETER = (
    "{name} has the parameter {parameter}, which libpq does not know: remove it or fix its "
    "spelling (the parameters are listed in PostgreSQL's libpq documentation)"
)
ERR_TLS_FILE = "{name} points to {path}, which {problem}"


def tls_file(parameter: str, name: str, value: str) -> str | None:
    """A certificate, key or CRL path: it must name a file libpq can open, or be unset."""
    if not value or (parameter == "sslrootcert" and value == SSLROOTCERT_SYSTEM):
        return value or None
    path = Path(value)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(ERR_TLS_FILE.format(name=name, path=path, problem=problem))
    return value


def parse_url(url: str | None, name: str) -> dict[str, str]:
    if not url:
        return {}
    scheme = URL_SCHEME_RE.match(url)
    if scheme and not url.startswith(URL_SCHEMES):  # libpq's own error would quote the URL
        raise ConfigError(ERR_URL_SCHEME.format(name=name, scheme=scheme["scheme"]))
    try:
        return {key: str(value) for key, value in conninfo_to_dict(url).items()}
    except Exception as error:
        # The exception text would quote the URL, password included: only a parameter's name,
        # which libpq quotes when it does not know it, is repeated.
        unknown = UNKNOWN_PARAMETER_RE.search(str(error))
        if unknown:
            raise ConfigError(
                ERR_UNKNOWN_URL_PARAMETER.format(name=name, parameter=unknown["name"])
            ) from None
        raise ConfigError(ERR_BAD_URL) from None
