"""Connecting the postgres sink: libpq parameters from options and secrets, errors without them.

A password reaches the sink only through ``{{ secret('NAME') }}`` (in ``password`` or inside
``dsn``), or from libpq's own ``PGPASSWORD`` / ``~/.pgpass``. A password written in the
pipeline, or rendered by ``env_var()``, is refused: load-time values are copied into
``target/plan.json``, and a password must not be. Every resolved secret is registered with the
redactor, so no log line or error shows it; libpq's messages are scrubbed once more here,
because some of them quote the connection string they could not parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from etrmflow.errors import SinkError
from etrmflow.secrets import MASK, REDACTOR, SecretStore, redact
from etrmflow.templating import SECRET_MARKER

if TYPE_CHECKING:
    import psycopg

CONNECTION_KEYS = ("host", "port", "dbname", "user", "password")
"""Options that override the matching parameter of ``dsn``."""

_DEFAULTS = {"connect_timeout": "10", "application_name": "etrmflow"}
_QUOTED_CONNINFO = re.compile(r'"[^"]*(?:@|=|://)[^"]*"')
"""A quoted connection string in a libpq message (it may hold a password)."""
_QUOTED = re.compile(r'"(?!\w+")[^"]*"')
"""Any quoted fragment but a bare name (``invalid connection option "pasword"`` stays)."""


def _psycopg(label: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise SinkError(f"{label}: the psycopg driver is not installed: "
                        f"python -m pip install \"etrmflow[postgres]\"") from None
    return psycopg


def scrub(message: str, *, quoted: bool = False) -> str:
    """A driver message fit to show, on one line: secrets masked, quoted connection strings
    cut, and with ``quoted`` every quoted fragment but a bare name (a parse error of a
    connection string quotes the piece it stopped at, which may be part of a password)."""
    pattern = _QUOTED if quoted else _QUOTED_CONNINFO
    return " ".join(pattern.sub(f'"{MASK}"', redact(message)).split())


class ConnectionSpec:
    """The libpq parameters of one sink, resolved at open; ``where`` names them safely."""

    def __init__(self, options: Mapping[str, Any], secrets: SecretStore | None, label: str) -> None:
        self.label = label
        store = secrets if secrets is not None else SecretStore()
        self._secret_values: list[str] = []
        self.params = self._parameters(options, store)
        password = self.params.get("password")
        if password:
            REDACTOR.add(password)
            if not any(password in value for value in self._secret_values):
                raise SinkError(f"{label}: the password is written in the pipeline (or comes from env_var()), "
                                f"so it would be copied into target/plan.json; give it as "
                                f"password: \"{{{{ secret('PGPASSWORD') }}}}\", or leave it out and let "
                                f"libpq read PGPASSWORD or ~/.pgpass")

    @property
    def where(self) -> str:
        """``user@host:port/dbname`` as far as known: never the password."""
        params = self.params
        host = params.get("host") or params.get("hostaddr") or "the default host"
        user = f"{params['user']}@" if params.get("user") else ""
        port = f":{params['port']}" if params.get("port") else ""
        dbname = f"/{params['dbname']}" if params.get("dbname") else ""
        return redact(f"{user}{host}{port}{dbname}")

    def connect(self) -> psycopg.Connection[Any]:
        """An autocommit connection (transactions are opened per batch), session time zone UTC."""
        psycopg = _psycopg(self.label)
        try:
            connection = psycopg.connect(**self.params, autocommit=True)
        except psycopg.Error as exc:
            # from None: the driver's exception and its traceback may hold the connection string.
            raise SinkError(f"{self.label}: cannot connect to {self.where}: {scrub(str(exc))}") from None
        try:
            connection.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            connection.close()
            raise SinkError(f"{self.label}: connected to {self.where}, but the session failed: "
                            f"{scrub(str(exc))}") from None
        return connection

    def _resolve(self, text: str, store: SecretStore) -> str:
        for name in SECRET_MARKER.findall(text):
            try:
                self._secret_values.append(store.value(name))
            except KeyError:
                raise SinkError(f"{self.label}: secret '{name}' is not set; "
                                f"export {name}=... in the environment that runs etrmflow") from None
        return store.resolve(text)

    def _parameters(self, options: Mapping[str, Any], store: SecretStore) -> dict[str, str]:
        psycopg = _psycopg(self.label)
        params: dict[str, str] = {}
        if options.get("dsn"):
            dsn = self._resolve(str(options["dsn"]), store)
            try:
                params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items()}
            except psycopg.Error as exc:
                raise SinkError(f"{self.label}: dsn is not a libpq connection string (key=value ...) nor "
                                f"a postgresql:// URI: {scrub(str(exc), quoted=True)}") from None
        for key in CONNECTION_KEYS:
            if options.get(key) is not None:
                params[key] = self._resolve(str(options[key]), store)
        return {**_DEFAULTS, **params}


def describe_server(options: Mapping[str, Any]) -> str:
    """``host/dbname`` from the options as written (no secret resolved), or '' if unknown."""
    params: dict[str, Any] = {}
    if options.get("dsn"):
        try:
            import psycopg

            params = psycopg.conninfo.conninfo_to_dict(str(options["dsn"]))
        except Exception:  # noqa: BLE001 - no driver, or a dsn that open() will report
            params = {}
    host, dbname = options.get("host") or params.get("host"), options.get("dbname") or params.get("dbname")
    if SECRET_MARKER.search(f"{host}{dbname}"):
        return ""
    return redact("/".join(str(part) for part in (host, dbname) if part))
