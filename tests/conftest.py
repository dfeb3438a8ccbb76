"""Shared fixtures: the lab MariaDB server, a throwaway PKI, free ports, the node client,
and the three-namespace lab (agent, gateway, db) with MariaDB in its db namespace.

Missing tools make these fixtures fail, never skip: a test that cannot run is a red test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The lab package is imported as ``lab`` whether or not tests/ ever becomes a package.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from lab.certs import Pki, make_pki  # noqa: E402
from lab.clients import ClientError, ensure_node_client  # noqa: E402
from lab.gateway import GatewayProcess  # noqa: E402
from lab.mariadb import MariaDB, MariaDBError, free_port  # noqa: E402
from lab.topology import LabEnv, start_lab  # noqa: E402

from netconfig.lab import LabError  # noqa: E402


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """One private MariaDB server for the whole session, on 127.0.0.1 and a free port."""
    server = MariaDB(tmp_path_factory.mktemp("mariadb"))
    try:
        server.start()
    except MariaDBError as exc:
        pytest.fail(f"cannot start the lab MariaDB server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tmp_pki(tmp_path: Path) -> Pki:
    """A fresh CA and server certificate (127.0.0.1, ::1, localhost) in tmp_path/pki."""
    return make_pki(tmp_path / "pki", [])


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that was free when the test started."""
    return free_port()


@pytest.fixture(scope="session")
def node_client() -> Path:
    """Path of tests/clients/node/run.js, its dependencies installed (npm ci)."""
    try:
        return ensure_node_client()
    except ClientError as exc:
        pytest.fail(f"cannot set up the node mysql2 client: {exc}\n{exc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabEnv]:
    """The three-namespace lab under a unique prefix (``sgtXXXX-agent``, ``-gw``, ``-db``)
    with the private MariaDB listening on the db's addresses, port 3306, in its namespace.

    ``lab.lab`` is the :class:`netconfig.lab.Lab` (addresses, namespace names),
    ``lab.db`` the :class:`MariaDB`; ``lab.in_ns(role)`` and ``lab.run_in(role, argv)``
    act inside a namespace. Everything is torn down at the end of the session.
    """
    try:
        env = start_lab(tmp_path_factory.mktemp("lab"))
    except (MariaDBError, LabError, OSError) as exc:
        pytest.fail(f"cannot build the three-namespace lab: {exc}", pytrace=False)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture(scope="module")
def gateway(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """``sqlgate run`` in front of the lab MariaDB for one test module; it must stop
    cleanly (exit 0) and never log a traceback."""
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki).start()
    yield gw
    assert gw.stop() == 0
    assert "Traceback" not in gw.log()


from lab.broker import Broker, BrokerError  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One private Mosquitto for the whole session, on 127.0.0.1 and a free port, with
    per-client passwords and ACLs (``sqlgate`` gateway, ``operator``) and a TLS listener
    (``broker.tls_port``, the session's own PKI). Tests that stop it must start it again.
    """
    workdir = tmp_path_factory.mktemp("broker")
    server = Broker(workdir, pki=make_pki(workdir / "pki", []))
    try:
        server.start()
    except BrokerError as exc:
        pytest.fail(f"cannot start the lab Mosquitto broker: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
