"""MariaDB dumps into the repository and restores from it, against the real server."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from app.agent.apps import (
    DumpFailed,
    MysqlConnection,
    RestoreFailed,
    TargetExists,
    backup_mysql_database,
    list_mysql_databases,
    restore_mysql_database,
)
from app.agent.apps.mysql_client import (
    MysqlClient,
    connection_options,
    ident,
    memory_directory,
)
from app.chunkstore import Repository
from app.chunkstore.cdc import CdcParams
from tests.agent.apps.conftest import damage_a_chunk

SMALL_CHUNKS = CdcParams.for_average(16 * 1024)

SCHEMA = """
CREATE TABLE customers (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    photo BLOB,
    balance DECIMAL(12, 2),
    created DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE orders (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    customer_id INT NOT NULL,
    note TEXT,
    audit VARCHAR(50),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE SEQUENCE invoice_numbers START WITH 1000;
INSERT INTO customers (name, photo, balance, created)
SELECT CONCAT('Kunde ', seq, ' Ünïcødé ✓ 日本'), UNHEX(CONCAT(MD5(seq), MD5(seq * 7))), seq * 1.25,
       '2025-01-01 00:00:00' + INTERVAL seq HOUR
FROM seq_1_to_400;
INSERT INTO customers (name, photo, created)
VALUES ('tab\\tnewline\\nquote''backslash\\\\', X'00FF00', NOW(6));
INSERT INTO orders (customer_id, note) SELECT 1 + seq % 400, REPEAT('x', seq % 50) FROM seq_1_to_2000;
SELECT NEXTVAL(invoice_numbers);
CREATE VIEW big_customers AS SELECT id, name FROM customers WHERE balance > 100;
CREATE VIEW big_customer_names AS SELECT name FROM big_customers;
CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
CREATE VIEW doubled AS SELECT id, double_it(id) AS twice FROM customers;
CREATE PROCEDURE add_order(c INT, n TEXT) INSERT INTO orders (customer_id, note) VALUES (c, n);
CREATE TRIGGER orders_stamp BEFORE INSERT ON orders FOR EACH ROW SET NEW.audit = 'by trigger';
CREATE TRIGGER customers_trim BEFORE INSERT ON customers FOR EACH ROW SET NEW.name = TRIM(NEW.name);
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM orders WHERE id < 0;
"""


def make_database(client: MysqlClient, name: str) -> None:
    client.execute(f"CREATE DATABASE {ident(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    client.execute(SCHEMA, database=name)


def contents(client: MysqlClient, name: str) -> dict[str, Any]:
    """Rows (binary as hex), object lists and definitions, all as the server reports them."""
    db = ident(name)
    where = f"_SCHEMA = '{name}'"
    out = client.execute(
        f"SELECT id, name, HEX(photo), balance, created FROM {db}.customers ORDER BY id;"  # noqa: S608
        f"SELECT id, customer_id, note, audit FROM {db}.orders ORDER BY id;"
        f"SELECT * FROM {db}.big_customer_names ORDER BY name;"
        f"SELECT SUM(twice) FROM {db}.doubled;"
        f"SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE{where} ORDER BY 1;"
        f"SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE{where} ORDER BY 1;"
        f"SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER{where};"
        f"SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT{where};"
        f"SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{name}';"
        f"SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT{where};"
    )
    return {"text": out}


def back_up(my: MysqlConnection, repo: Repository, name: str, point: str, **kwargs: Any) -> None:
    writer = repo.begin_restore_point(point, vm_config={})
    backup_mysql_database(my, writer, name, **kwargs)
    writer.commit()


def test_backup_then_restore_under_its_own_name_and_a_new_one(
    my: MysqlConnection, my_scope: str, repo: Repository
) -> None:
    client = MysqlClient(my)
    name = f"{my_scope}_shop"
    make_database(client, name)
    before = contents(client, name)
    assert name in list_mysql_databases(my)

    writer = repo.begin_restore_point("rp-1", vm_config={})
    result = backup_mysql_database(my, writer, name)
    point = writer.commit()
    assert result.name == f"mysql/{name}"
    meta = point.stream(result.name).metadata
    assert meta["engine"] == "mysql" and meta["format"] == "sql" and meta["flavor"] == "mariadb"
    assert meta["collation"] == "utf8mb4_unicode_ci"

    client.execute(
        "UPDATE customers SET name = 'changed' WHERE id < 10; CALL add_order(1, 'late');"
        " DROP VIEW big_customer_names; DROP PROCEDURE add_order; CREATE TABLE extra (x INT);",
        database=name,
    )
    restored = restore_mysql_database(my, repo, "rp-1", result.name)
    assert restored.database == name and restored.replaced
    assert contents(client, name) == before
    client.execute("CALL add_order(2, 'after restore');", database=name)
    assert "by trigger" in client.execute(
        "SELECT audit FROM orders WHERE note = 'after restore';", database=name
    )

    copy = f"{my_scope}_copy"
    restored = restore_mysql_database(my, repo, "rp-1", result.name, target=copy)
    assert restored.database == copy and not restored.replaced
    assert contents(client, copy) == before

    with pytest.raises(TargetExists):
        restore_mysql_database(my, repo, "rp-1", result.name, target=copy)
    restore_mysql_database(my, repo, "rp-1", result.name, target=copy, overwrite=True)


def test_a_damaged_chunk_fails_the_restore_and_leaves_the_database_alone(
    my: MysqlConnection, my_scope: str, tmp_path: Path, repo: Repository
) -> None:
    client = MysqlClient(my)
    name = f"{my_scope}_shop"
    make_database(client, name)
    back_up(my, repo, name, "rp-1", params=SMALL_CHUNKS)
    client.execute("INSERT INTO customers (name, created) VALUES ('after the backup', NOW());", database=name)
    live = contents(client, name)
    damage_a_chunk(tmp_path / "repo")

    with pytest.raises(RestoreFailed, match="was not changed"):
        restore_mysql_database(my, repo, "rp-1", f"mysql/{name}")
    assert contents(client, name) == live


def test_a_busy_target_is_left_as_it_was(my: MysqlConnection, my_scope: str, repo: Repository) -> None:
    """The tables cannot be swapped while an application holds them: the restore gives up after its
    lock timeout and the target keeps its data and its triggers (customers_trim, dropped before the
    busy orders_stamp timed out, is put back)."""
    client = MysqlClient(my)
    name = f"{my_scope}_shop"
    make_database(client, name)
    back_up(my, repo, name, "rp-1")
    client.execute("DELETE FROM orders WHERE id > 1000;", database=name)
    live = contents(client, name)

    with connection_options(my) as options:
        holder = subprocess.Popen(
            [
                my.client_tool(),
                *options,
                "--batch",
                "--skip-column-names",
                "--unbuffered",
                f"--database={name}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            holder.stdin.write(b"BEGIN; SELECT COUNT(*) FROM orders; SELECT 'holding';\n")
            holder.stdin.flush()
            holder.stdout.readline()
            assert holder.stdout.readline().strip() == b"holding"
            with pytest.raises(RestoreFailed, match="cannot move the restored tables into place"):
                restore_mysql_database(my, repo, "rp-1", f"mysql/{name}", lock_wait_timeout_s=1)
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)
    assert contents(client, name) == live


def test_a_password_travels_in_a_private_option_file(
    my: MysqlConnection, my_scope: str, repo: Repository
) -> None:
    client = MysqlClient(my)
    name = f"{my_scope}_shop"
    make_database(client, name)
    user = f"{my_scope}_u"
    password = "p@ss \"w'\\ord `x` #;"
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "''") + "'"
    client.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY {quoted}; GRANT ALL ON *.* TO '{user}'@'%';")
    as_user = dataclasses.replace(my, user=user, password=password)
    back_up(as_user, repo, name, "rp-1")
    restore_mysql_database(as_user, repo, "rp-1", f"mysql/{name}", target=f"{my_scope}_copy")
    with pytest.raises(DumpFailed, match="Access denied"):
        back_up(dataclasses.replace(as_user, password="wrong"), repo, name, "rp-2")


def test_a_failing_dump_is_reported_and_its_stream_released(
    my: MysqlConnection, my_scope: str, repo: Repository
) -> None:
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with pytest.raises(DumpFailed, match=f"unknown database '{my_scope}_nope'"):
        backup_mysql_database(my, writer, f"{my_scope}_nope")
    assert writer.commit().streams == ()


def test_the_password_file_lives_in_memory_and_goes_with_the_connection() -> None:
    """A dump runs for hours with the option file open: on a tmpfs it cannot be caught by an image
    backup of this VM's disks nor outlive a crash on disk."""
    where = memory_directory()
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        tmpfs = {line.split()[1] for line in mounts if line.split()[2] == "tmpfs"}
    assert where is None or where in tmpfs
    with connection_options(MysqlConnection(user="backup", password='se"cret')) as options:
        path = options[0].removeprefix("--defaults-file=")
        assert os.path.dirname(path) == (where or tempfile.gettempdir())
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert not os.path.exists(path)


def test_a_target_created_by_someone_else_meanwhile_is_not_dropped(
    my: MysqlConnection, my_scope: str, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the restore's check that the new name is free and its CREATE DATABASE, another
    party creates that database: the restore fails, and what the other party made stays."""
    client = MysqlClient(my)
    name = f"{my_scope}_race"
    make_database(client, name)
    back_up(my, repo, name, "rp-1")
    target = f"{my_scope}_taken"
    real_execute = MysqlClient.execute

    def racing(self: MysqlClient, sql: str, *, database: str | None = None) -> str:
        if sql.startswith(f"CREATE DATABASE {ident(target)}"):
            theirs = f"CREATE DATABASE {ident(target)}; CREATE TABLE {ident(target)}.theirs (x INT);"
            real_execute(self, theirs)
        return real_execute(self, sql, database=database)

    monkeypatch.setattr(MysqlClient, "execute", racing)
    with pytest.raises(RestoreFailed):
        restore_mysql_database(my, repo, "rp-1", f"mysql/{name}", target=target)
    monkeypatch.undo()
    assert client.names("TABLE_NAME", "TABLES", "TABLE_SCHEMA", target, "") == ["theirs"]


def test_non_transactional_tables_are_dumped_under_a_read_lock_and_said_so(
    my: MysqlConnection, my_scope: str, repo: Repository
) -> None:
    """--single-transaction snapshots InnoDB tables only; a MyISAM table would be read at another
    moment than the rest, so such a database is dumped with its tables locked for reading."""
    client = MysqlClient(my)
    name = f"{my_scope}_legacy"
    make_database(client, name)
    legacy = "CREATE TABLE hits (n INT) ENGINE=MyISAM; INSERT INTO hits VALUES (1), (2);"
    client.execute(legacy, database=name)
    before = client.execute("SELECT SUM(n) FROM hits;", database=name)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    result = backup_mysql_database(my, writer, name)
    writer.commit()
    assert any("non-transactional tables (hits)" in w for w in result.warnings), result.warnings
    client.execute("DELETE FROM hits;", database=name)
    restore_mysql_database(my, repo, "rp-1", result.name)
    assert client.execute("SELECT SUM(n) FROM hits;", database=name) == before
