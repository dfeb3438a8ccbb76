"""Real clients through a real gateway to a real MariaDB: plain and TLS, text and binary."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
import sqlalchemy
from lab.clients import (
    ClientError,
    ledger_records,
    node_spec,
    parse_batch,
    run_mariadb,
    run_node,
)
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import SHOP_CUSTOMERS, MariaDB
from mysql.connector import errors as myerrors
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration


CUSTOMERS = [tuple(row) for row in SHOP_CUSTOMERS]


# ----------------------------------------------------------------------- PyMySQL


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_pymysql_reads_through_the_gateway(gateway: GatewayProcess, tls: bool) -> None:
    ssl = {"ca": str(gateway.pki.ca_cert), "check_hostname": True} if tls else None
    with gateway.connect(ssl=ssl) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name, email, card_number FROM customers ORDER BY id")
            assert cur.fetchall() == tuple(CUSTOMERS)
            # the backend leg is TLS too (the lab server offers it)
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            row = cur.fetchone()
            assert row is not None and row[1].startswith("TLSv1")
        sock = conn._sock
        assert (sock.version() is not None) if tls else not hasattr(sock, "version")


def test_pymysql_writes_multi_statements_and_many_result_sets(gateway: GatewayProcess) -> None:
    from pymysql.constants import CLIENT

    with gateway.connect(client_flag=CLIENT.MULTI_STATEMENTS) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS notes (id INT PRIMARY KEY, body TEXT)")
            cur.execute("DELETE FROM notes WHERE id > 0")
            cur.execute("INSERT INTO notes VALUES (1, 'a'), (2, 'b'); SELECT COUNT(*) FROM notes")
            assert cur.rowcount == 2
            assert cur.nextset()
            assert cur.fetchall() == ((2,),)
            cur.execute("SELECT 1; SELECT 2, 3; UPDATE notes SET body = 'c' WHERE id = 1")
            assert cur.fetchall() == ((1,),)
            assert cur.nextset() and cur.fetchall() == ((2, 3),)
            assert cur.nextset() and cur.rowcount == 1
            assert not cur.nextset()


def test_wrong_password_is_refused_with_1045(gateway: GatewayProcess) -> None:
    with pytest.raises(pymysql.err.OperationalError) as err:
        gateway.connect(password="not-it")
    assert err.value.args[0] == 1045
    assert "sqlgate: access denied: wrong password for gateway account 'agent'" in err.value.args[1]


def test_unknown_user_is_refused_with_1045(gateway: GatewayProcess) -> None:
    with pytest.raises(pymysql.err.OperationalError) as err:
        pymysql.connect(
            host=gateway.host, port=gateway.port, user="nobody", password="x", ssl_disabled=True
        )
    assert err.value.args[0] == 1045
    assert "not a gateway account" in err.value.args[1]


def test_an_unknown_database_is_refused_as_the_server_says(gateway: GatewayProcess) -> None:
    """Not "access denied": the client named a database the target does not have."""
    with pytest.raises(pymysql.err.OperationalError) as err:
        gateway.connect(database="no_such_db")
    assert err.value.args[0] == 1049
    assert err.value.args[1] == "sqlgate: target 'orders': Unknown database 'no_such_db'"
    with gateway.connect() as conn, conn.cursor() as cur:  # the gateway serves on
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_a_client_that_claims_compression_is_refused_at_login(gateway: GatewayProcess) -> None:
    """As PHP's mysqlnd does with MYSQLI_CLIENT_COMPRESS: it would then send compressed
    commands, and it waited for ever."""
    with pytest.raises(pymysql.err.OperationalError) as err:
        gateway.connect(client_flag=CLIENT.COMPRESS)
    assert err.value.args[0] == 1158
    assert "connect without compression" in err.value.args[1]


def test_group_without_access_to_the_target_is_refused(gateway: GatewayProcess) -> None:
    with pytest.raises(pymysql.err.OperationalError) as err:
        gateway.connect(user="outsider")
    assert err.value.args[0] == 1045
    assert "may not reach target 'orders'" in err.value.args[1]


def test_backend_password_is_never_sent_to_clients_or_logs(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    with pytest.raises(pymysql.err.OperationalError) as err:
        gateway.connect(password="wrong")
    assert mariadb.native_password not in str(err.value)
    with gateway.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        row = cur.fetchone()
        assert row is not None and row[0].startswith("sqlgate_native@")
    assert mariadb.native_password not in gateway.log()


# ----------------------------------------------------------- mysql-connector-python


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "c-ext"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_mysql_connector_prepared_cursor(gateway: GatewayProcess, pure: bool, tls: bool) -> None:
    acct = gateway.account()
    kwargs: dict[str, Any] = {
        "host": gateway.host,
        "port": gateway.port,
        "user": acct.user,
        "password": acct.password,
        "database": "shop",
        "use_pure": pure,
    }
    if tls:
        kwargs.update(ssl_ca=str(gateway.pki.ca_cert), ssl_verify_cert=True)
    else:
        kwargs["ssl_disabled"] = True
    conn = mysql.connector.connect(**kwargs)
    try:
        if not pure:
            assert type(conn).__name__ == "CMySQLConnection"
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, name, card_number FROM customers WHERE id >= %s ORDER BY id", (2,))
        assert [tuple(r) for r in cur.fetchall()] == [(r[0], r[1], r[3]) for r in CUSTOMERS[1:]]
        cur.execute("SELECT total, created FROM orders WHERE id = %s", (2,))
        total, created = cur.fetchone()
        assert str(total) == "99.99" and created.isoformat() == "2024-02-03T11:30:00"
        cur.close()
        plain = conn.cursor()
        plain.execute("SELECT COUNT(*) FROM customers")
        assert plain.fetchall() == [(3,)]
        plain.close()
    finally:
        conn.close()


def test_mysql_connector_caching_sha2_full_then_fast_auth(gateway: GatewayProcess) -> None:
    """caching_sha2_password: the first login is a full one (over TLS), the next is fast."""
    acct = gateway.account("dba")
    kwargs: dict[str, Any] = {
        "host": gateway.host,
        "port": gateway.port,
        "user": acct.user,
        "password": acct.password,
        "use_pure": True,
        "auth_plugin": "caching_sha2_password",
        "ssl_ca": str(gateway.pki.ca_cert),
    }
    for _ in range(2):
        conn = mysql.connector.connect(**kwargs)
        cur = conn.cursor()
        cur.execute("SELECT 7")
        assert cur.fetchall() == [(7,)]
        conn.close()
    wrong = dict(kwargs, password="nope")
    with pytest.raises(myerrors.ProgrammingError) as err:
        mysql.connector.connect(**wrong)
    assert err.value.errno == 1045


def test_caching_sha2_without_tls_falls_back_to_native(gateway: GatewayProcess) -> None:
    acct = gateway.account()
    conn = mysql.connector.connect(
        host=gateway.host,
        port=gateway.port,
        user=acct.user,
        password=acct.password,
        use_pure=True,
        auth_plugin="caching_sha2_password",
        ssl_disabled=True,
    )
    cur = conn.cursor()
    cur.execute("SELECT 8")
    assert cur.fetchall() == [(8,)]
    conn.close()


@pytest.fixture
def sha2_gateway(mariadb: MariaDB, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway of its own, so that the first caching_sha2 login of each account is a
    full authentication and the next one a fast one (the cache lives in the process)."""
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        accounts=[GatewayAccount("cli", "cli-secret-4"), GatewayAccount("cext", "cext-secret-5")],
    ).start()
    yield gw
    assert gw.stop() == 0
    assert "Traceback" not in gw.log()


def test_mysql_connector_c_extension_with_caching_sha2_over_tls(
    sha2_gateway: GatewayProcess,
) -> None:
    """libmysqlclient sends no scramble for a greeting that names another plugin and waits
    for the plugin's challenge (an auth switch); it failed with 2000 Unknown MySQL error."""
    try:
        import _mysql_connector  # noqa: F401  (the C extension: its absence is a failure)
    except ImportError as exc:
        pytest.fail(f"mysql-connector-python's C extension is missing: {exc}", pytrace=False)
    acct = sha2_gateway.account("cext")
    kwargs: dict[str, Any] = {
        "host": sha2_gateway.host,
        "port": sha2_gateway.port,
        "user": acct.user,
        "password": acct.password,
        "use_pure": False,
        "auth_plugin": "caching_sha2_password",
        "ssl_ca": str(sha2_gateway.pki.ca_cert),
        "ssl_verify_cert": True,
    }
    for expected in (11, 12):  # full authentication, then fast
        conn = mysql.connector.connect(**kwargs)
        try:
            assert type(conn).__name__ == "CMySQLConnection"
            cur = conn.cursor()
            cur.execute(f"SELECT {expected}")
            assert cur.fetchall() == [(expected,)]
            cur.close()
        finally:
            conn.close()
    with pytest.raises(myerrors.ProgrammingError) as err:
        mysql.connector.connect(**dict(kwargs, password="nope"))
    assert err.value.errno == 1045


def test_mariadb_cli_with_caching_sha2_as_its_plugin(sha2_gateway: GatewayProcess) -> None:
    """MariaDB Connector/C with --default-auth=caching_sha2_password: over TLS it failed
    with 2012 Error in server handshake; over a plain connection it is switched to native."""
    acct = sha2_gateway.account("cli")
    common: dict[str, Any] = {
        "host": sha2_gateway.host,
        "port": sha2_gateway.port,
        "user": acct.user,
        "column_names": False,
        "extra_args": ["--default-auth=caching_sha2_password"],
    }
    tls: dict[str, Any] = {"ssl_ca": sha2_gateway.pki.ca_cert, "verify_server_cert": True}
    for n in (21, 22):  # full authentication, then fast
        out = run_mariadb(f"SELECT {n}", password=acct.password, **common, **tls)
        assert parse_batch(out) == [[str(n)]]
    out = run_mariadb("SELECT 23", password=acct.password, **common)
    assert parse_batch(out) == [["23"]]
    with pytest.raises(ClientError) as err:
        run_mariadb("SELECT 1", password="bad", **common, **tls)
    assert "1045" in err.value.stderr and "wrong password" in err.value.stderr


# ---------------------------------------------------------------- mariadb CLI


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_mariadb_cli(gateway: GatewayProcess, tls: bool) -> None:
    acct = gateway.account()
    out = run_mariadb(
        "SELECT id, email FROM customers ORDER BY id; SHOW STATUS LIKE 'Ssl_cipher'",
        host=gateway.host,
        port=gateway.port,
        user=acct.user,
        password=acct.password,
        database="shop",
        ssl_ca=gateway.pki.ca_cert if tls else None,
        verify_server_cert=tls,
    )
    rows = parse_batch(out)
    assert rows[0] == ["id", "email"]
    assert rows[1:4] == [[str(r[0]), r[2]] for r in CUSTOMERS]


def test_mariadb_cli_wrong_password(gateway: GatewayProcess) -> None:
    with pytest.raises(ClientError) as err:
        run_mariadb("SELECT 1", host=gateway.host, port=gateway.port, user="agent", password="bad")
    assert "1045" in err.value.stderr and "sqlgate: access denied" in err.value.stderr


# ---------------------------------------------------------------- Perl DBD::MariaDB

PERL_CLIENT = r"""
use strict; use warnings; use DBI;
my ($host, $port, $user, $password) = @ARGV;
my $dbh = DBI->connect("DBI:MariaDB:database=shop;host=$host;port=$port;mariadb_ssl=0",
    $user, $password, { RaiseError => 1, PrintError => 0 });
my $sth = $dbh->prepare("SELECT id, email FROM customers WHERE id <= ? ORDER BY id");
$sth->execute(2);
while (my @row = $sth->fetchrow_array) { print join(",", @row), "\n"; }
$dbh->disconnect;
"""


def test_perl_dbd_mariadb(gateway: GatewayProcess) -> None:
    """DBD::MariaDB sets character_set_server at connect, which was refused: no login."""
    acct = gateway.account()
    perl = shutil.which("perl")
    assert perl is not None, "perl not found: install the Debian package libdbd-mariadb-perl"
    done = subprocess.run(
        [perl, "-e", PERL_CLIENT, gateway.host, str(gateway.port), acct.user, acct.password],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{r[0]},{r[2]}" for r in CUSTOMERS[:2]]


# ---------------------------------------------------------------- SQLAlchemy


def test_sqlalchemy_orm_style_session(gateway: GatewayProcess) -> None:
    acct = gateway.account()
    url = f"mysql+pymysql://{acct.user}:{acct.password}@{gateway.host}:{gateway.port}/shop"
    engine = sqlalchemy.create_engine(url, pool_size=2)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE IF NOT EXISTS sa_t (id INT PRIMARY KEY)"))
            conn.execute(sqlalchemy.text("DELETE FROM sa_t WHERE id > 0"))
            conn.execute(sqlalchemy.text("INSERT INTO sa_t VALUES (:a), (:b)"), {"a": 1, "b": 2})
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT id FROM sa_t ORDER BY id")).all()
            assert [r[0] for r in rows] == [1, 2]
            meta = sqlalchemy.MetaData()
            customers = sqlalchemy.Table("customers", meta, autoload_with=conn)
            assert [c.name for c in customers.columns] == ["id", "name", "email", "card_number"]
    finally:
        engine.dispose()


# When the target ends the backend session (wait_timeout, KILL, a failover) the client is
# told as MariaDB tells it: its connection closes. Pools then see a lost connection.

_DRIVERS = {
    "pymysql": {"ssl_disabled": True},
    "mysqlconnector": {"ssl_disabled": True, "use_pure": True},
}


def _engine(gateway: GatewayProcess, driver: str, **kw: Any) -> sqlalchemy.Engine:
    acct = gateway.account()
    url = f"mysql+{driver}://{acct.user}:{acct.password}@{gateway.host}:{gateway.port}/shop"
    return sqlalchemy.create_engine(
        url, pool_size=1, max_overflow=0, connect_args=_DRIVERS[driver], **kw
    )


def _wait_for_session_end(gateway: GatewayProcess, marker: str) -> None:
    """Until the ledger has the end of the session that ran the statement with ``marker``
    (the gateway has closed its client connection)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = ledger_records(gateway.ledger)
        sessions = {r["session"] for r in records if marker in (r.get("sql") or "")}
        if any(r["kind"] == "session_end" and r["session"] in sessions for r in records):
            return
        time.sleep(0.2)
    pytest.fail(f"no session_end for the session of {marker}")


def test_sqlalchemy_pre_ping_reconnects_after_the_target_ended_an_idle_session(
    gateway: GatewayProcess, mariadb: MariaDB
) -> None:
    """BUG: the gateway sent an idle client ERR 1105 (was lost; reconnect), which the
    pre-ping then read as the answer to its ping and raised instead of reconnecting.
    (mysql-connector's ping calls any error "not available", which SQLAlchemy took for
    a disconnect: it was not caught.)"""
    engine = _engine(gateway, "pymysql", pool_pre_ping=True)
    marker = f"idle-{time.time_ns()}"
    try:
        with engine.connect() as conn:
            sql = f"SELECT CONNECTION_ID() /* {marker} */"
            backend_id = conn.execute(sqlalchemy.text(sql)).scalar()
        mariadb.admin_sql(f"KILL CONNECTION {backend_id}")  # the pooled session is idle
        _wait_for_session_end(gateway, marker)
        with engine.connect() as conn:  # the pre-ping finds it gone and reconnects
            assert conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar() != backend_id
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", list(_DRIVERS))
def test_sqlalchemy_invalidates_a_connection_whose_target_is_lost_during_a_statement(
    gateway: GatewayProcess, mariadb: MariaDB, driver: str
) -> None:
    """BUG: the statement's error was ERR 1105, not a lost connection: the pool kept the
    dead connection and leaving the block raised again (its rollback)."""
    engine = _engine(gateway, driver)
    try:
        with engine.connect() as conn:
            backend_id = conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar()

            def kill_while_it_sleeps() -> None:
                sleeping = (
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    f"WHERE ID = {backend_id} AND INFO LIKE 'SELECT SLEEP%'"
                )
                deadline = time.monotonic() + 30
                while not mariadb.admin_sql(sleeping)[0][0] and time.monotonic() < deadline:
                    time.sleep(0.05)
                mariadb.admin_sql(f"KILL CONNECTION {backend_id}")

            killer = threading.Thread(target=kill_while_it_sleeps)
            killer.start()
            try:
                with pytest.raises(sqlalchemy.exc.DBAPIError) as caught:
                    conn.execute(sqlalchemy.text("SELECT SLEEP(10)"))
            finally:
                killer.join()
            orig = caught.value.orig
            errno = orig.errno if driver == "mysqlconnector" else orig.args[0]
            assert errno == 2013, orig  # CR_SERVER_LOST, as from MariaDB itself
            assert caught.value.connection_invalidated
        with engine.connect() as conn:  # the pool connects anew
            assert conn.execute(sqlalchemy.text("SELECT 7")).scalar() == 7
    finally:
        engine.dispose()


# ---------------------------------------------------------------- Node mariadb


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_node_mariadb_connector_executes_new_texts(
    gateway: GatewayProcess, node_client: Path, tls: bool
) -> None:
    """MariaDB Connector/Node.js (npm mariadb, pipelining on by default) sends
    COM_STMT_PREPARE and COM_STMT_EXECUTE with statement id 0xFFFFFFFF in one write for
    each text it has not prepared: every such first execute was refused (1227)."""
    acct = gateway.account()
    spec = node_spec(
        host=gateway.host,
        port=gateway.port,
        user=acct.user,
        password=acct.password,
        database="shop",
        queries=[
            "SELECT id, email FROM customers WHERE id >= ? ORDER BY id",
            "SELECT id, email FROM customers WHERE id >= ? ORDER BY id",
            "SELECT ? + 1 AS two",
        ],
        prepared=True,
        ssl_ca=gateway.pki.ca_cert if tls else None,
        driver="mariadb",
    )
    out = run_node(spec | {"params": [[1], [2], [1]]})
    first, again, two = out["results"]
    assert first["fields"] == ["id", "email"]
    assert first["rows"] == [[r[0], r[2]] for r in CUSTOMERS]
    assert again["rows"] == [[r[0], r[2]] for r in CUSTOMERS if r[0] >= 2]
    assert two["fields"] == ["two"] and two["rows"] == [["2"]]  # a BIGINT


# ---------------------------------------------------------------- Node mysql2


@pytest.mark.parametrize("prepared", [False, True], ids=["query", "execute"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_node_mysql2(gateway: GatewayProcess, node_client: Path, prepared: bool, tls: bool) -> None:
    acct = gateway.account()
    out = run_node(
        node_spec(
            host=gateway.host,
            port=gateway.port,
            user=acct.user,
            password=acct.password,
            database="shop",
            queries=["SELECT id, email FROM customers ORDER BY id", "SELECT 1 + 1 AS two"],
            prepared=prepared,
            ssl_ca=gateway.pki.ca_cert if tls else None,
        )
    )
    first, second = out["results"]
    assert first["fields"] == ["id", "email"]
    assert first["rows"] == [[r[0], r[2]] for r in CUSTOMERS]
    assert second["rows"] == [[2]]
