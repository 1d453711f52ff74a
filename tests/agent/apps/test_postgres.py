"""PostgreSQL dumps into the repository and restores from it, against the real server."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.agent.apps import (
    DumpFailed,
    PostgresConnection,
    RestoreFailed,
    TargetExists,
    ToolMissing,
    backup_postgres_database,
    list_postgres_databases,
    restore_postgres_database,
)
from app.agent.apps.postgres_client import Psql, conninfo
from app.chunkstore import Repository
from app.chunkstore.cdc import CdcParams
from app.chunkstore.errors import StreamDamaged
from tests.agent.apps.conftest import damage_a_chunk

SMALL_CHUNKS = CdcParams.for_average(16 * 1024)

SCHEMA = """
CREATE ROLE :"app" NOLOGIN;
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    photo bytea,
    balance numeric(12, 2),
    created timestamptz NOT NULL DEFAULT '2025-01-01 00:00:00+00'
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    note text,
    audit text
);
ALTER TABLE orders OWNER TO :"app";
INSERT INTO customers (name, photo, balance, created)
SELECT 'Kunde ' || i || ' Ünïcødé ✓ 日本', decode(md5(i::text) || md5((i * 7)::text), 'hex'),
       i * 1.25, timestamptz '2025-01-01 00:00:00+00' + i * interval '1 hour'
FROM generate_series(1, 400) i;
INSERT INTO customers (name, photo) VALUES (E'tab\\tnewline\\nquote''backslash\\\\', '\\x00ff00'::bytea);
INSERT INTO orders (customer_id, note)
SELECT 1 + i % 400, repeat('x', i % 50) FROM generate_series(1, 2000) i;
CREATE VIEW big_customers AS SELECT id, name FROM customers WHERE balance > 100;
CREATE FUNCTION double_it(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x * 2';
CREATE PROCEDURE add_order(c int, n text) LANGUAGE sql
  AS 'INSERT INTO orders (customer_id, note) VALUES (c, n)';
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.audit := 'by trigger'; RETURN NEW; END $$;
CREATE TRIGGER orders_stamp BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION stamp();
COMMENT ON TABLE customers IS 'Kunden ✓';
"""


def make_database(pg: PostgresConnection, name: str, prefix: str) -> None:
    psql = Psql(pg)
    psql.execute('CREATE DATABASE :"db";', db=name)
    psql.execute(SCHEMA, database=name, app=f"{prefix}_app")
    psql.execute(
        "ALTER DATABASE :\"db\" SET work_mem = '8MB';\n"
        'ALTER DATABASE :"db" SET search_path = "$user", public, "odd schema";\n'
        'REVOKE ALL ON DATABASE :"db" FROM PUBLIC;\n'
        'GRANT CONNECT ON DATABASE :"db" TO :"app";\n',
        db=name,
        app=f"{prefix}_app",
    )


def contents(pg: PostgresConnection, name: str) -> dict[str, Any]:
    """Everything the tests compare: rows, objects, owners, database settings and privileges."""
    psql = Psql(pg)
    inside = psql.query_json(
        "SELECT json_build_object("
        " 'customers', (SELECT json_agg(c ORDER BY id) FROM customers c),"
        " 'orders', (SELECT json_agg(o ORDER BY id) FROM orders o),"
        " 'view', (SELECT json_agg(v ORDER BY id) FROM big_customers v),"
        " 'function', double_it(21),"
        " 'owner', (SELECT tableowner FROM pg_tables WHERE tablename = 'orders'),"
        " 'comment', obj_description('customers'::regclass),"
        " 'sequence', (SELECT last_value FROM orders_id_seq));",
        database=name,
    )
    outside = psql.query_json(
        "SELECT json_build_object('settings', (SELECT setconfig FROM pg_db_role_setting s"
        "  WHERE s.setdatabase = d.oid AND s.setrole = 0), 'acl', d.datacl::text[],"
        " 'owner', pg_get_userbyid(d.datdba), 'encoding', pg_encoding_to_char(d.encoding))"
        " FROM pg_database d WHERE datname = :'db';",
        db=name,
    )
    return {"inside": inside, "outside": outside}


def back_up(pg: PostgresConnection, repo: Repository, name: str, point: str, **kwargs: Any) -> None:
    writer = repo.begin_restore_point(point, vm_config={})
    backup_postgres_database(pg, writer, name, **kwargs)
    writer.commit()


def test_backup_then_restore_under_its_own_name_and_a_new_one(
    pg: PostgresConnection, pg_scope: str, repo: Repository
) -> None:
    name = f"{pg_scope}_shop"
    make_database(pg, name, pg_scope)
    before = contents(pg, name)
    psql = Psql(pg)
    assert name in list_postgres_databases(pg)

    writer = repo.begin_restore_point("rp-1", vm_config={})
    result = backup_postgres_database(pg, writer, name)
    point = writer.commit()
    assert result.name == f"postgresql/{name}"
    meta = point.stream(result.name).metadata
    assert meta["engine"] == "postgresql" and meta["format"] == "pg_dump-custom"
    assert meta["database"] == name and meta["server_version_num"] >= 100000
    assert meta["tool_version"].startswith("pg_dump")

    # The live database moves on, then loses a table: restoring brings back the backed-up state.
    psql.execute(
        "UPDATE customers SET name = 'changed' WHERE id < 10; CALL add_order(1, 'late');"
        " DROP VIEW big_customers; DROP TABLE orders;",
        database=name,
    )
    restored = restore_postgres_database(pg, repo, "rp-1", result.name)
    assert restored.database == name and restored.replaced
    assert contents(pg, name) == before
    # The code came back working: the trigger fires, the procedure runs.
    psql.execute("CALL add_order(2, 'after restore');", database=name)
    assert (
        psql.query_json("SELECT to_json(audit) FROM orders WHERE note = 'after restore';", database=name)
        == "by trigger"
    )

    copy = f"{pg_scope}_copy"
    restored = restore_postgres_database(pg, repo, "rp-1", result.name, target=copy)
    assert restored.database == copy and not restored.replaced
    assert contents(pg, copy)["inside"] == before["inside"]
    assert contents(pg, copy)["outside"]["settings"] == before["outside"]["settings"]

    with pytest.raises(TargetExists):
        restore_postgres_database(pg, repo, "rp-1", result.name, target=copy)
    psql.execute("DROP TABLE orders;", database=copy)
    restore_postgres_database(pg, repo, "rp-1", result.name, target=copy, overwrite=True)
    assert contents(pg, copy)["inside"] == before["inside"]


def test_restore_without_owners_gives_everything_to_the_restoring_user(
    pg: PostgresConnection, pg_scope: str, repo: Repository
) -> None:
    name = f"{pg_scope}_shop"
    make_database(pg, name, pg_scope)
    back_up(pg, repo, name, "rp-1")
    copy = f"{pg_scope}_noown"
    restore_postgres_database(pg, repo, "rp-1", f"postgresql/{name}", target=copy, keep_owners=False)
    got = contents(pg, copy)
    assert got["inside"]["owner"] == "postgres"
    assert got["inside"]["customers"] == contents(pg, name)["inside"]["customers"]


def test_a_damaged_chunk_fails_the_restore_and_leaves_the_database_alone(
    pg: PostgresConnection, pg_scope: str, tmp_path: Path, repo: Repository
) -> None:
    name = f"{pg_scope}_shop"
    make_database(pg, name, pg_scope)
    back_up(pg, repo, name, "rp-1", params=SMALL_CHUNKS)
    Psql(pg).execute("INSERT INTO customers (name) VALUES ('after the backup');", database=name)
    live = contents(pg, name)
    damage_a_chunk(tmp_path / "repo")

    with pytest.raises(RestoreFailed, match="was not changed") as caught:
        restore_postgres_database(pg, repo, "rp-1", f"postgresql/{name}")
    assert contents(pg, name) == live
    del caught


def test_damage_found_only_at_the_end_of_the_stream_still_fails(
    pg: PostgresConnection, pg_scope: str, repo: Repository
) -> None:
    """pg_restore may well have restored everything when the whole-stream check fails at EOF: the
    restore is still a failure, and the live database is still untouched."""
    name = f"{pg_scope}_shop"
    make_database(pg, name, pg_scope)
    back_up(pg, repo, name, "rp-1")
    point = repo.read_restore_point("rp-1")
    record = point.streams[0]
    forged = dataclasses.replace(
        point,
        id="rp-forged",
        streams=(dataclasses.replace(record, digest="00" * (len(record.digest) // 2)),),
    )
    repo.write_manifest(forged)
    Psql(pg).execute("INSERT INTO customers (name) VALUES ('after the backup');", database=name)
    live = contents(pg, name)

    with pytest.raises(RestoreFailed, match="was not changed") as caught:
        restore_postgres_database(pg, repo, "rp-forged", record.name)
    assert isinstance(caught.value.__cause__, StreamDamaged)
    assert contents(pg, name) == live

    with pytest.raises(RestoreFailed, match="was not created"):
        restore_postgres_database(pg, repo, "rp-forged", record.name, target=f"{pg_scope}_new")
    assert not Psql(pg).database_exists(f"{pg_scope}_new")


def test_a_failing_pg_dump_is_reported_and_its_stream_released(
    pg: PostgresConnection, pg_scope: str, repo: Repository
) -> None:
    name = f"{pg_scope}_shop"
    make_database(pg, name, pg_scope)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with pytest.raises(DumpFailed, match=f'database "{pg_scope}_nope" does not exist'):
        backup_postgres_database(pg, writer, f"{pg_scope}_nope")

    # pg_dump itself fails half-way in: a table locked exclusively by another session.
    holder = subprocess.Popen(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo(name)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=pg.env(),
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        holder.stdin.write(b"BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(DumpFailed, match=r"(?s)pg_dump failed.*LOCK TABLE"):
            backup_postgres_database(pg, writer, name, lock_wait_timeout_s=1)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    point = writer.commit()  # the failed streams were released: the restore point commits without them
    assert point.streams == ()


def test_a_missing_tool_names_the_package(pg: PostgresConnection, pg_scope: str, repo: Repository) -> None:
    writer = repo.begin_restore_point("rp-1", vm_config={})
    no_tools = dataclasses.replace(pg, bindir="/nonexistent")
    with pytest.raises(ToolMissing, match="install the Debian package postgresql-client"):
        backup_postgres_database(no_tools, writer, "test")
