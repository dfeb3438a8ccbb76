"""A fault of the gateway's own while it serves a session (a bug) ends that session
cleanly, logged and recorded, instead of leaving its client waiting for an answer that
never comes; other sessions go on. The fault is injected into the real gateway process
through a sitecustomize module on its PYTHONPATH."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import pymysql
import pytest
from lab.clients import ledger_records
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB

FAULTS = """
import functools

import appliance.server as server

def _fault(name):
    original = getattr(server.ClientLeg, name)

    @functools.wraps(original)
    def faulty(self, *args):
        if any(b"inject-fault-" + name.encode() in getattr(a, "payload", b"") for a in args):
            raise RuntimeError("injected fault")
        return original(self, *args)

    setattr(server.ClientLeg, name, faulty)

for name in ("_recorded", "_decide_or_offload"):
    _fault(name)
"""


@pytest.fixture(scope="module")
def faulty_gateway(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(textwrap.dedent(FAULTS))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki, env={"PYTHONPATH": path}
    )
    gw.start()
    yield gw
    assert gw.stop() == 0


@pytest.mark.parametrize(
    "where",
    [
        "_recorded",  # a callback: once the statement's record is committed
        "_decide_or_offload",  # reading the client's bytes
    ],
)
def test_a_fault_in_the_gateway_ends_only_its_session(
    faulty_gateway: GatewayProcess, where: str
) -> None:
    gw = faulty_gateway
    other = gw.connect()
    with gw.connect(read_timeout=20) as conn, conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        with pytest.raises(pymysql.err.OperationalError) as lost:
            cur.execute(f"SELECT 1 /* inject-fault-{where} */")
        assert lost.value.args[0] == 2013 and "timed out" not in str(lost.value)
    with other.cursor() as cur:
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)  # the others go on
    other.close()
    log = gw.log()
    assert f"internal error while running {where}" in log or (
        where == "_decide_or_offload" and "internal error while reading the client" in log
    )
    assert "RuntimeError: injected fault" in log
    ends = [r for r in ledger_records(gw.ledger, "--kind", "session_end")]
    assert any(
        r.get("ended_by") == "sqlgate" and "internal error" in r.get("reason", "") for r in ends
    )
