"""Database-level properties a ``pg_dump`` of one database leaves out, captured and re-applied.

A dump without ``--create`` holds the database's contents only; what belongs to the database object
itself (encoding and locale, owner, ``ALTER DATABASE ... SET`` settings, database GRANTs) is not in
it. ``--create`` would put them in, but under the original name, and a restore goes into a temporary
database first, so these are recorded in the stream's metadata at backup time instead and applied to
the restored copy before it takes its final name.

Values are passed as psql variables (quoted by psql); setting names, which cannot be, are checked
against what a setting name may look like. List-valued settings (search_path...) are split and each
element quoted, as pg_dump does, or a restored search_path would become one odd schema name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: Settings whose value is a list of quoted identifiers (pg_dump's variable_is_guc_list_quote).
LIST_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)
DATABASE_PRIVILEGES = frozenset({"CREATE", "CONNECT", "TEMPORARY"})
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

FACTS_SQL = """
SELECT json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'encoding', pg_encoding_to_char(d.encoding),
  'row', to_jsonb(d) - 'datacl',
  'owner', pg_get_userbyid(d.datdba),
  'acl', CASE WHEN d.datacl IS NULL THEN NULL ELSE (
      SELECT coalesce(json_agg(json_build_object(
          'grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
          'privilege', a.privilege_type, 'grantable', a.is_grantable)), '[]'::json)
      FROM aclexplode(d.datacl) a) END,
  'settings', (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0)
) FROM pg_database d WHERE d.datname = :'db';
"""


@dataclass(frozen=True, slots=True)
class Grant:
    privilege: str  # CREATE | CONNECT | TEMPORARY
    grantee: str | None  # None: PUBLIC
    grantable: bool = False


@dataclass(frozen=True, slots=True)
class DatabaseProperties:
    encoding: str
    collate: str
    ctype: str
    locale_provider: str = "c"  # c (libc), i (ICU), b (builtin, PostgreSQL 17)
    locale: str | None = None  # the ICU or builtin locale
    owner: str | None = None
    acl: tuple[Grant, ...] | None = None  # None: the default privileges
    settings: tuple[str, ...] = field(default_factory=tuple)  # "name=value", as pg_db_role_setting has them

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> DatabaseProperties:
        row = facts["row"]
        acl = facts.get("acl")
        return cls(
            encoding=str(facts["encoding"]),
            collate=str(row["datcollate"]),
            ctype=str(row["datctype"]),
            locale_provider=str(row.get("datlocprovider") or "c"),
            locale=row.get("datlocale") or row.get("daticulocale"),
            owner=facts.get("owner"),
            acl=None
            if acl is None
            else tuple(Grant(str(a["privilege"]), a["grantee"], bool(a["grantable"])) for a in acl),
            settings=tuple(facts.get("settings") or ()),
        )

    def to_metadata(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "collate": self.collate,
            "ctype": self.ctype,
            "locale_provider": self.locale_provider,
            "locale": self.locale,
            "owner": self.owner,
            "acl": None
            if self.acl is None
            else [
                {"privilege": g.privilege, "grantee": g.grantee, "grantable": g.grantable} for g in self.acl
            ],
            "settings": list(self.settings),
        }

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> DatabaseProperties:
        acl = data.get("acl")
        return cls(
            encoding=str(data["encoding"]),
            collate=str(data["collate"]),
            ctype=str(data["ctype"]),
            locale_provider=str(data.get("locale_provider") or "c"),
            locale=data.get("locale"),
            owner=data.get("owner"),
            acl=None
            if acl is None
            else tuple(Grant(str(a["privilege"]), a.get("grantee"), bool(a.get("grantable"))) for a in acl),
            settings=tuple(data.get("settings") or ()),
        )


def create_database_sql(props: DatabaseProperties, *, owner: str | None) -> tuple[str, dict[str, str]]:
    """``CREATE DATABASE :"db"`` with the recorded encoding and locale (set variable ``db`` too)."""
    sql = "CREATE DATABASE :\"db\" TEMPLATE template0 ENCODING :'enc' LC_COLLATE :'coll' LC_CTYPE :'ctype'"
    variables = {"enc": props.encoding, "coll": props.collate, "ctype": props.ctype}
    if props.locale_provider == "i" and props.locale:
        sql += " LOCALE_PROVIDER icu ICU_LOCALE :'loc'"
        variables["loc"] = props.locale
    elif props.locale_provider == "b" and props.locale:
        sql += " LOCALE_PROVIDER builtin BUILTIN_LOCALE :'loc'"
        variables["loc"] = props.locale
    if owner:
        sql += ' OWNER :"owner"'
        variables["owner"] = owner
    return sql + ";\n", variables


def apply_properties_sql(props: DatabaseProperties, *, grants: bool) -> tuple[str, dict[str, str]]:
    """Settings (always) and database GRANTs (``grants``) for database ``:"db"``."""
    lines: list[str] = []
    variables: dict[str, str] = {}
    for n, entry in enumerate(props.settings):
        name, sep, value = entry.partition("=")
        if not sep or not _SETTING_NAME.fullmatch(name):
            raise ValueError(f"unexpected database setting {entry!r}")
        values = split_list_setting(value) if name.lower() in LIST_SETTINGS else [value]
        refs = []
        for m, item in enumerate(values):
            variables[f"s{n}_{m}"] = item
            refs.append(f":'s{n}_{m}'")
        lines.append(f'ALTER DATABASE :"db" SET {name} TO {", ".join(refs)};')
    if grants and props.acl is not None:
        lines.append('REVOKE ALL ON DATABASE :"db" FROM PUBLIC;')
        for n, grant in enumerate(props.acl):
            if grant.privilege not in DATABASE_PRIVILEGES:
                raise ValueError(f"unexpected database privilege {grant.privilege!r}")
            if grant.grantee is None:
                to = "PUBLIC"
            else:
                to = f':"g{n}"'
                variables[f"g{n}"] = grant.grantee
            option = " WITH GRANT OPTION" if grant.grantable else ""
            lines.append(f'GRANT {grant.privilege} ON DATABASE :"db" TO {to}{option};')
    return "".join(line + "\n" for line in lines), variables


def split_list_setting(value: str) -> list[str]:
    """``"$user", public, "we ird"`` -> ["$user", "public", "we ird"] (PostgreSQL's SplitGUCList)."""
    items: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            item = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        item.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                item.append(value[i])
                i += 1
            items.append("".join(item))
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            items.append(value[start:i])
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            return items
        if value[i] != ",":
            raise ValueError(f"cannot split list setting {value!r}")
        i += 1
