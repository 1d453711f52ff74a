"""The guest agent's own configuration file (TOML): how to reach the VM's databases, and hooks.

Credentials for the databases live here, inside the VM, and nowhere else: policies only name an
engine and an instance (``[postgresql.default]``). Passwords come from a file readable by the
agent alone (``password_file``), never from the configuration itself, so the file can be shared
in tickets without leaking them.

    [postgresql.default]
    host = "127.0.0.1"          # or a socket directory; omit for the local socket
    port = 5432
    user = "postgres"
    password_file = "/etc/vmrecovery/postgres.password"

    [mysql.default]
    socket = "/run/mysqld/mysqld.sock"
    user = "root"

    [hooks]
    pre_freeze = "/usr/local/sbin/before-snapshot"   # run with the argument "pre-freeze"
    post_thaw = "/usr/local/sbin/after-snapshot"     # run with "post-thaw", also after a failed freeze
    timeout_s = 60
    thaw_marker = "/var/lib/vmrecovery/thaw-pending"  # post-thaw is owed while it exists

    [restore]
    allowed_roots = ["/"]       # file-set restores may only extract below these directories
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.agent.apps.mysql_client import MysqlConnection
from app.agent.apps.postgres_client import PostgresConnection


class ConfigError(Exception):
    """The configuration file is wrong; the message names the file, the key and what to write."""


#: Exists from just before the pre-freeze script until the post-thaw script has run: an agent
#: killed while the guest was frozen finds it at its next start and runs post-thaw then.
DEFAULT_THAW_MARKER = "/var/lib/vmrecovery/thaw-pending"


@dataclass(frozen=True)
class Hooks:
    pre_freeze: str | None = None
    post_thaw: str | None = None
    timeout_s: float = 60.0
    thaw_marker: str = DEFAULT_THAW_MARKER


@dataclass(frozen=True)
class GuestConfig:
    postgresql: dict[str, PostgresConnection] = field(default_factory=dict)
    mysql: dict[str, MysqlConnection] = field(default_factory=dict)
    hooks: Hooks = field(default_factory=Hooks)
    allowed_roots: tuple[str, ...] = ("/",)

    def postgres(self, instance: str) -> PostgresConnection:
        try:
            return self.postgresql[instance]
        except KeyError:
            raise ConfigError(
                f"no [postgresql.{instance}] section in the guest agent's configuration; add one"
            ) from None

    def mariadb(self, instance: str) -> MysqlConnection:
        try:
            return self.mysql[instance]
        except KeyError:
            raise ConfigError(
                f"no [mysql.{instance}] section in the guest agent's configuration; add one"
            ) from None


_PG_KEYS = {
    "host",
    "port",
    "user",
    "password_file",
    "maintenance_db",
    "sslmode",
    "bindir",
    "connect_timeout_s",
}
_MY_KEYS = {"host", "port", "socket", "user", "password_file", "client", "dump", "connect_timeout_s"}


def _password(path: str | None, where: str) -> str | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{where}: {path} is readable by others; chmod 600 it")
        return Path(path).read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read password_file {path}: {exc.strerror}") from None


def _section(data: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(data) - keys
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(keys)}")
    return dict(data)


def parse_config(text: str, source: str = "<config>") -> GuestConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    unknown = set(doc) - {"postgresql", "mysql", "hooks", "restore"}
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}")
    postgresql: dict[str, PostgresConnection] = {}
    for name, raw in _section(
        doc.get("postgresql", {}), f"{source} [postgresql]", set(doc.get("postgresql", {}))
    ).items():
        where = f"{source} [postgresql.{name}]"
        values = _section(raw, where, _PG_KEYS)
        password = _password(values.pop("password_file", None), where)
        try:
            postgresql[name] = PostgresConnection(password=password, **values)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    mysql: dict[str, MysqlConnection] = {}
    for name, raw in _section(doc.get("mysql", {}), f"{source} [mysql]", set(doc.get("mysql", {}))).items():
        where = f"{source} [mysql.{name}]"
        values = _section(raw, where, _MY_KEYS)
        password = _password(values.pop("password_file", None), where)
        try:
            mysql[name] = MysqlConnection(password=password, **values)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    hooks_raw = _section(
        doc.get("hooks", {}), f"{source} [hooks]", {"pre_freeze", "post_thaw", "timeout_s", "thaw_marker"}
    )
    for stage in ("pre_freeze", "post_thaw", "thaw_marker"):
        if stage in hooks_raw and not (isinstance(hooks_raw[stage], str) and os.path.isabs(hooks_raw[stage])):
            raise ConfigError(f"{source} [hooks] {stage} must be an absolute path")
    hooks = Hooks(
        pre_freeze=hooks_raw.get("pre_freeze"),
        post_thaw=hooks_raw.get("post_thaw"),
        timeout_s=float(hooks_raw.get("timeout_s", 60.0)),
        thaw_marker=hooks_raw.get("thaw_marker", DEFAULT_THAW_MARKER),
    )
    restore = _section(doc.get("restore", {}), f"{source} [restore]", {"allowed_roots"})
    roots = tuple(os.path.normpath(str(r)) for r in restore.get("allowed_roots", ("/",)))
    if not all(os.path.isabs(r) for r in roots):
        raise ConfigError(f"{source} [restore] allowed_roots must be absolute paths")
    return GuestConfig(postgresql=postgresql, mysql=mysql, hooks=hooks, allowed_roots=roots)


def load_config(path: Path | None) -> GuestConfig:
    """The configuration at ``path``; an agent without one protects file sets only."""
    if path is None:
        return GuestConfig()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, str(path))
