"""Refused logins do not get the gateway's address blocked by the target.

The gateway dials the target as a client connects and logs in there only once the client
has proven itself. MariaDB and MySQL count a connection that ends in the middle of its
handshake as an error of the connecting host, and block the host after
``max_connect_errors`` of them in a row (error 1129, until ``FLUSH HOSTS``): the gateway
is one host to the target, so refused logins alone would lock every agent out. The
server counts only for hosts it resolved by name, so the MariaDB here runs without
``skip-name-resolve`` and its namespace's ``/etc/hosts`` names the gateway's address
(``ip netns exec`` mounts ``/etc/netns/NS/hosts`` over ``/etc/hosts``).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from lab.mariadb import MariaDB
from lab.topology import LabEnv, LabGateway, ns_argv

from netconfig import nft

MAX_CONNECT_ERRORS = 5
PORT = 3316  # a second server in the db namespace, beside the lab's own on 3306
GATEWAY_LISTEN = "[::]:3317"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def strict_db(lab: LabEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """MariaDB that resolves the gateway's address by name and blocks it after
    ``MAX_CONNECT_ERRORS`` handshake errors, in the lab's db namespace."""
    etc = Path("/etc/netns") / lab.ns("db")
    etc.mkdir(parents=True, exist_ok=True)
    try:
        (etc / "hosts").write_text(
            f"127.0.0.1 localhost\n{lab.lab.gw_db_side_v4} sqlgate-gateway.lab\n"
        )
        (etc / "resolv.conf").write_text("")  # no name server: only the hosts file
        db = MariaDB(
            tmp_path_factory.mktemp("strict-db"),
            bind=lab.lab.db_v4,
            port=PORT,
            pki=lab.pki,
            command_prefix=ns_argv(lab.ns("db"), []),
            extra_args=("--skip-name-resolve=OFF", f"--max-connect-errors={MAX_CONNECT_ERRORS}"),
        )
        db.start()
        try:
            yield db
        finally:
            db.stop()
    finally:
        shutil.rmtree(etc, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(
    lab: LabEnv, strict_db: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabGateway]:
    gw = LabGateway(
        tmp_path_factory.mktemp("gateway"),
        lab.lab,
        backend_user=strict_db.native_user,
        backend_password=strict_db.native_password,
        pki=lab.pki,
        listen=GATEWAY_LISTEN,
        db_port=PORT,
    )
    try:
        gw.start()
        yield gw
    finally:
        try:
            gw.stop()
        finally:
            nft.remove(lab.ns("gw"))


def _status(db: MariaDB, name: str) -> int:
    rows = db.admin_sql(f"SHOW GLOBAL STATUS LIKE '{name}'")
    return int(rows[0][1])


def _gateway_connections(db: MariaDB, gw_address: str) -> int:
    rows = db.admin_sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        f"WHERE HOST LIKE '{gw_address}:%' OR HOST LIKE 'sqlgate-gateway.lab:%'"
    )
    return int(rows[0][0])


def _agent_socket(lab: LabEnv) -> socket.socket:
    with lab.in_ns("agent"):
        return socket.create_connection((lab.lab.db_v4, PORT), timeout=10)


def _login(lab: LabEnv, user: str, password: str) -> Any:
    """A login through the gateway: the agent dials the database's own address."""
    return lab.connect("agent", lab.lab.db_v4, PORT, user, password)


def test_refused_and_abandoned_logins_do_not_get_the_gateway_blocked(
    lab: LabEnv, strict_db: MariaDB, gateway: LabGateway
) -> None:
    assert strict_db.admin_sql("SELECT @@skip_name_resolve, @@max_connect_errors") == [
        (0, MAX_CONNECT_ERRORS)
    ]
    dba = gateway.account("dba")
    with _login(lab, dba.user, dba.password) as conn:  # known from this address
        conn.ping()
    aborted = _status(strict_db, "Aborted_connects")
    idle = _agent_socket(lab)  # reads the greeting and sends nothing: 1043 after 8 s
    idle.settimeout(WAIT_S)
    refusals = 3 * MAX_CONNECT_ERRORS
    for i in range(refusals):
        kind = i % 3
        if kind == 0:  # a wrong password (later ones are refused by the login backoff)
            with pytest.raises(pymysql.err.OperationalError) as refused:
                _login(lab, "agent", "not-the-password")
            assert refused.value.args[0] == 1045, refused.value.args
        elif kind == 1:  # a client that reads the greeting and leaves
            sock = _agent_socket(lab)
            assert sock.recv(4096)
            sock.close()
        else:  # a port scanner: connects and closes at once
            _agent_socket(lab).close()
    with idle:
        answer = b""
        while chunk := idle.recv(4096):
            answer += chunk
    assert b"\xff\x13\x04" in answer  # ERR 1043: the login did not complete in time
    deadline = time.monotonic() + WAIT_S
    while _gateway_connections(strict_db, lab.lab.gw_db_side_v4):
        assert time.monotonic() < deadline, "the gateway's connections to the target stay"
        time.sleep(0.05)
    assert _status(strict_db, "Aborted_connects") == aborted
    with _login(lab, dba.user, dba.password) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)


def test_a_target_that_blocks_the_gateway_is_an_alert(
    lab: LabEnv, strict_db: MariaDB, gateway: LabGateway
) -> None:
    """Handshakes broken off by something other than the gateway from its address (here:
    the test, with the gateway's mark) still get it blocked: the client reads the
    target's 1129, and the operator gets an error in the log and a target_blocked alert
    saying how to clear it."""
    try:
        for _ in range(MAX_CONNECT_ERRORS + 1):
            with lab.in_ns("gw"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x5147)  # not redirected
                sock.settimeout(10)
                sock.connect((lab.lab.db_v4, PORT))
                assert sock.recv(4096)
        gateway.mark_log()
        with pytest.raises(pymysql.err.OperationalError) as refused:
            _login(lab, "dba", gateway.account("dba").password)
        assert refused.value.args[0] == 1129, refused.value.args
        assert gateway.wait_log(r"ERROR .*target orders blocks the gateway's address", WAIT_S)
        done = lab.sqlgate(
            "gw",
            "ledger",
            "export",
            "--ledger",
            str(gateway.workdir / "ledger.db"),
            "--kind",
            "alert",
        )
        assert done.returncode == 0, done.stderr
        alerts = [json.loads(line) for line in done.stdout.splitlines()]
        blocked = [a for a in alerts if a.get("alert") == "target_blocked"]
        assert blocked and blocked[0]["target"] == "orders", alerts
        assert "FLUSH HOSTS" in blocked[0]["reason"]
    finally:
        strict_db.admin_sql("FLUSH HOSTS")
    with _login(lab, "dba", gateway.account("dba").password) as conn:
        conn.ping()
