"""The lab itself works: real clients reach the private MariaDB server directly."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pymysql
import pytest
from cryptography import x509
from lab.certs import Pki, make_pki
from lab.clients import ClientError, node_spec, parse_batch, run_mariadb, run_node
from lab.mariadb import SHOP_CUSTOMERS, MariaDB

pytestmark = pytest.mark.integration

CUSTOMERS_SQL = "SELECT id, name, email, card_number FROM shop.customers ORDER BY id"


def _connect_native(db: MariaDB, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=db.host,
        port=db.port,
        user=db.native_user,
        password=db.native_password,
        connect_timeout=10,
        **kwargs,
    )


def _query(conn: pymysql.connections.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_pki_server_certificate_names_and_chain(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ["10.77.2.10", "db.lab"])
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.77.2.10")
    }
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "db.lab"}
    assert pki.server_key.stat().st_mode & 0o777 == 0o600
    # The key matches the certificate and the CA loads as a trust anchor.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    assert client_ctx.cert_store_stats()["x509_ca"] == 1


def test_users_exist_with_their_plugins(mariadb: MariaDB) -> None:
    rows = mariadb.admin_sql("SELECT User, Host, plugin FROM mysql.user ORDER BY User, Host")
    assert set(rows) == {
        ("mariadb.sys", "localhost", "mysql_native_password"),
        ("root", "%", "mysql_native_password"),
        ("root", "localhost", "mysql_native_password"),
        ("sqlgate_ed25519", "%", "ed25519"),
        ("sqlgate_native", "%", "mysql_native_password"),
    }
    assert set(mariadb.users) == {"root", "sqlgate_native", "sqlgate_ed25519"}


def test_pymysql_native_plain(mariadb: MariaDB) -> None:
    # PyMySQL >= 1.2 tries TLS by default ("preferred") when the server offers it.
    with _connect_native(mariadb, database="shop", ssl_disabled=True) as conn:
        assert _query(conn, CUSTOMERS_SQL) == list(SHOP_CUSTOMERS)
        assert _query(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'") == [("Ssl_cipher", "")]


def test_pymysql_native_tls_verified(mariadb: MariaDB) -> None:
    tls = {"ca": str(mariadb.pki.ca_cert), "check_hostname": True}
    with _connect_native(mariadb, ssl=tls) as conn:
        assert _query(conn, CUSTOMERS_SQL) == list(SHOP_CUSTOMERS)
        ((_, cipher),) = _query(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cipher


def test_pymysql_tls_rejects_a_foreign_ca(mariadb: MariaDB, tmp_pki: Pki) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect_native(mariadb, ssl={"ca": str(tmp_pki.ca_cert), "check_hostname": True})
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_wrong_password_is_refused(mariadb: MariaDB) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(host=mariadb.host, port=mariadb.port, user="root", password="nope")
    assert info.value.args[0] == 1045


def test_root_over_tcp(mariadb: MariaDB) -> None:
    with pymysql.connect(
        host=mariadb.host, port=mariadb.port, user="root", password=mariadb.root_password
    ) as conn:
        assert _query(conn, "SELECT CURRENT_USER()") == [("root@%",)]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_mariadb_cli_native(mariadb: MariaDB, tls: bool) -> None:
    out = run_mariadb(
        CUSTOMERS_SQL + "; SHOW SESSION STATUS LIKE 'Ssl_version'",
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.native_user,
        password=mariadb.native_password,
        ssl_ca=mariadb.pki.ca_cert if tls else None,
        verify_server_cert=tls,
        column_names=False,
    )
    rows = parse_batch(out)
    assert rows[:3] == [[str(v) for v in row] for row in SHOP_CUSTOMERS]
    assert rows[3][0] == "Ssl_version"
    assert (rows[3][1] != "") == tls


def test_mariadb_cli_ed25519(mariadb: MariaDB) -> None:
    out = run_mariadb(
        "SELECT CURRENT_USER(); SELECT COUNT(*) FROM shop.customers",
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.ed25519_user,
        password=mariadb.ed25519_password,
        column_names=False,
    )
    assert parse_batch(out) == [["sqlgate_ed25519@%"], ["3"]]


def test_mariadb_cli_ed25519_wrong_password(mariadb: MariaDB) -> None:
    with pytest.raises(ClientError) as info:
        run_mariadb(
            "SELECT 1",
            host=mariadb.host,
            port=mariadb.port,
            user=mariadb.ed25519_user,
            password="wrong",
        )
    assert "1045" in info.value.stderr


@pytest.mark.parametrize("prepared", [False, True], ids=["text", "prepared"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_node_mysql2(mariadb: MariaDB, node_client: Path, prepared: bool, tls: bool) -> None:
    spec = node_spec(
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.native_user,
        password=mariadb.native_password,
        database="shop",
        queries=[CUSTOMERS_SQL, "SELECT total, created FROM orders WHERE id = 1"],
        ssl_ca=mariadb.pki.ca_pem() if tls else None,
        prepared=prepared,
    )
    out = run_node(spec)
    customers, order = out["results"]
    assert customers["fields"] == ["id", "name", "email", "card_number"]
    assert customers["rows"] == [list(row) for row in SHOP_CUSTOMERS]
    assert order["rows"] == [["12.50", "2024-01-02 10:00:00"]]


def test_node_mysql2_reports_errors(mariadb: MariaDB, node_client: Path) -> None:
    spec = node_spec(
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.native_user,
        password=mariadb.native_password,
        queries=["SELECT * FROM shop.nope", "SELECT 1"],
        continue_on_error=True,
    )
    out = run_node(spec)
    assert out["results"][0]["error"]["errno"] == 1146
    assert out["results"][1]["rows"] == [[1]]
    with pytest.raises(ClientError) as info:
        run_node({**spec, "continueOnError": False})
    assert info.value.errno == 1146
    assert info.value.error["sqlState"] == "42S02"


def test_a_starting_server_leaves_the_others_temporary_files(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """A starting MariaDB deletes every #sql file in its tmpdir. In a shared /tmp those
    were the internal temporary tables of other servers' running statements, which then
    failed ("Error on delete of '/tmp/#sql-temptable-...MAI'", error 6): each lab
    server has a tmpdir of its own."""
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@tmpdir")
        assert cur.fetchone() == (str(mariadb.tmpdir),)
    running = mariadb.tmpdir / "#sql-temptable-lab-1-1.MAI"  # as a running query's
    running.write_bytes(b"")
    try:
        with MariaDB(tmp_path / "other", pki=mariadb.pki) as other:
            assert other.tmpdir != mariadb.tmpdir
            assert running.exists()
    finally:
        running.unlink(missing_ok=True)
