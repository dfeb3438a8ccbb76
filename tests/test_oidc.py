"""Logins with tokens from a real OpenID Connect provider (issue 6, SPEC §5).

The provider is the ``oidc-provider`` npm package run by node (``tests/clients/idp``,
``lab.idp.Provider``), serving discovery, its JWKS and the token endpoint over HTTPS with
a certificate of its own test CA. Agents get their tokens by the client credentials
grant; the gateway is configured with the issuer, the audience and that CA only, so it
finds the keys through the discovery document, as it would in production.

- On loopback, PyMySQL, mysql-connector-python, the ``mariadb`` CLI and Node mysql2 log
  in with such tokens, and the ledger names the token's identity, subject and id.
- Through the transparent path of the three-namespace lab, the provider runs in the
  gateway's namespace on its agent-side address; the agent asks it for a token and the
  four clients dial the database's own address with it.
- Key rotation: the provider restarts signing with a new key (the old one withdrawn) and
  the running gateway, which had the old keys cached, accepts the new kid once it may
  fetch the keys again (at most once a minute), without a restart.

The rotation's gateway is started and first used before anything else in the module, so
its minute of key caching passes while the other tests run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from lab.certs import Pki, make_pki
from lab.clients import ledger_records, run_mariadb, run_node
from lab.gateway import GatewayProcess
from lab.idp import OidcClient, Provider, ProviderError, claims_of, kid_of
from lab.mariadb import MariaDB
from lab.topology import DB_PORT, LabEnv, LabGateway

from appliance.identity import REFRESH_INTERVAL_S
from netconfig import nft

pytestmark = pytest.mark.integration

AUDIENCE = "sqlgate"
CAROL = "carol-agent"  # client id (the tokens' sub)
CAROL_EMAIL = "carol@example.com"  # the MySQL user name (username_claim "email")
VISITOR = "vic-visitor"
VISITOR_EMAIL = "vic@example.com"
LAB_IDP_PORT = 8443
COUNT_SQL = "SELECT COUNT(*) FROM shop.customers"


def make_clients() -> list[OidcClient]:
    return [
        OidcClient.make(CAROL, CAROL_EMAIL, ("agents",)),
        OidcClient.make(VISITOR, VISITOR_EMAIL, ("visitors",)),
    ]


def identity_toml(provider: Provider) -> str:
    """``[identity]`` by discovery: the issuer, the audience and the provider's CA only."""
    return f"""
[identity]
issuer = "{provider.issuer}"
audience = "{AUDIENCE}"
ca_file = "{provider.pki.ca_cert}"
"""


def start_provider(provider: Provider) -> Provider:
    try:
        return provider.start()
    except ProviderError as exc:
        pytest.fail(f"cannot start the OIDC provider: {exc}", pytrace=False)


def start_gateway(mariadb: MariaDB, provider: Provider, workdir: Path) -> GatewayProcess:
    return GatewayProcess(workdir, mariadb, mariadb.pki, extra_toml=identity_toml(provider)).start()


def stop_gateway(gw: GatewayProcess, mariadb: MariaDB, secrets: dict[str, str]) -> None:
    """Stopped cleanly, no traceback, and no backend password, token or client secret in
    its log (``secrets`` by name: only the names of what leaked are shown)."""
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log
    leaked = [name for name, secret in secrets.items() if secret in log]
    assert mariadb.native_password not in log
    assert not leaked, f"in the gateway log: {leaked}"


def records_of(ledger: Path, token: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The ledger records of the session that logged in with ``token`` (found by its jti),
    once its session_start and a statement are there."""
    jti = claims_of(token)["jti"]
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in ledger_records(ledger) if r.get("token_id") == jti]
        kinds = {r["kind"] for r in recs}
        if {"session_start", "statement"} <= kinds or time.monotonic() >= deadline:
            return recs
        time.sleep(0.1)


def assert_ledger_knows(ledger: Path, token: str, client: str | None = None) -> None:
    recs = records_of(ledger, token)
    kinds = {r["kind"] for r in recs}
    assert {"session_start", "statement"} <= kinds, kinds
    for r in recs:
        assert r["identity"] == CAROL_EMAIL
        assert r["subject"] == CAROL
        assert r["groups"] == ["agents"]
    (start,) = [r for r in recs if r["kind"] == "session_start"]
    assert start["method"] == "token"
    if client is not None:
        assert start["client"].rpartition(":")[0].strip("[]").removeprefix("::ffff:") == client


def pymysql_login(gw: GatewayProcess, token: str) -> int:
    """Log in with ``token`` over TLS and count the customers."""
    with (
        pymysql.connect(
            host=gw.host,
            port=gw.port,
            user=CAROL_EMAIL,
            password=token,
            database="shop",
            ssl={"ca": str(gw.pki.ca_cert)},
            connect_timeout=10,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(COUNT_SQL)
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def refusal(gw: GatewayProcess, token: str, user: str = CAROL_EMAIL) -> str:
    """The 1045 message the gateway answers a login with ``token``."""
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(
            host=gw.host,
            port=gw.port,
            user=user,
            password=token,
            ssl={"ca": str(gw.pki.ca_cert)},
            connect_timeout=10,
        )
    code, message = info.value.args
    assert code == 1045, message
    return str(message)


# --------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def idp_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The provider's own CA (not the database's): the gateway trusts it by ca_file."""
    return make_pki(tmp_path_factory.mktemp("idp-pki"))


@pytest.fixture(scope="module")
def provider(idp_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    idp = start_provider(Provider(tmp_path_factory.mktemp("idp"), idp_pki, make_clients()))
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB, provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = start_gateway(mariadb, provider, tmp_path_factory.mktemp("gw"))
    yield gw
    stop_gateway(gw, mariadb, provider.secrets())


@dataclass
class Rotation:
    """A provider and a gateway of their own for the rotation test, and the first login:
    the gateway fetched the provider's keys during it (between the two times)."""

    provider: Provider
    gw: GatewayProcess
    old_token: str
    first_login_started: float
    first_login_done: float


@pytest.fixture(scope="module", autouse=True)
def rotation(
    mariadb: MariaDB, idp_pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rotation]:
    """Started first (autouse) so that the minute before the gateway may fetch the keys
    again runs while the other tests do; the rotation test comes last."""
    idp = start_provider(Provider(tmp_path_factory.mktemp("idp-rot"), idp_pki, make_clients()))
    gw = start_gateway(mariadb, idp, tmp_path_factory.mktemp("gw-rot"))
    try:
        token = idp.token(CAROL)
        started = time.time()
        assert pymysql_login(gw, token) > 0
        done = time.time()
        yield Rotation(idp, gw, token, started, done)
    finally:
        try:
            stop_gateway(gw, mariadb, idp.secrets())
        finally:
            idp.stop()


# --------------------------------------------------------------------------------------
# the provider


def test_the_provider_issues_what_sqlgate_expects(provider: Provider) -> None:
    discovery = provider.discovery()
    assert discovery["issuer"] == provider.issuer
    assert discovery["jwks_uri"].startswith("https://")
    assert "client_credentials" in discovery["grant_types_supported"]
    jwks = provider.jwks()["keys"]
    assert [k["kid"] for k in jwks] == [provider.kid]
    assert all("d" not in k for k in jwks)  # public keys only
    token = provider.token(CAROL)
    claims = claims_of(token)
    assert kid_of(token) == provider.kid
    assert claims["iss"] == provider.issuer and claims["aud"] == AUDIENCE
    assert claims["sub"] == CAROL and claims["email"] == CAROL_EMAIL
    assert claims["groups"] == ["agents"]
    assert claims["jti"] and 0 < claims["exp"] - claims["iat"] <= 600
    with pytest.raises(ProviderError, match="HTTP 401 invalid_client"):
        provider.token(CAROL, secret="not-the-secret")


# --------------------------------------------------------------------------------------
# four clients on loopback, keys by discovery


def test_pymysql_logs_in_with_a_provider_token(gw: GatewayProcess, provider: Provider) -> None:
    token = provider.token(CAROL)
    assert pymysql_login(gw, token) > 0
    assert_ledger_knows(gw.ledger, token, "127.0.0.1")


def test_mysql_connector_logs_in_with_a_provider_token(
    gw: GatewayProcess, provider: Provider, mariadb: MariaDB
) -> None:
    token = provider.token(CAROL)
    conn = mysql.connector.connect(
        host=gw.host,
        port=gw.port,
        user=CAROL_EMAIL,
        password=token,
        database="shop",
        auth_plugin="mysql_clear_password",
        ssl_ca=str(mariadb.pki.ca_cert),
        use_pure=True,
        connection_timeout=10,
    )
    try:
        cur = conn.cursor()
        cur.execute(COUNT_SQL)
        assert cur.fetchall()[0][0] > 0
    finally:
        conn.close()
    assert_ledger_knows(gw.ledger, token)


def test_mariadb_cli_logs_in_with_a_provider_token(
    gw: GatewayProcess, provider: Provider, mariadb: MariaDB
) -> None:
    token = provider.token(CAROL)
    out = run_mariadb(
        COUNT_SQL,
        host=gw.host,
        port=gw.port,
        user=CAROL_EMAIL,
        password=token,
        ssl=True,
        ssl_ca=mariadb.pki.ca_cert,
        verify_server_cert=True,
        column_names=False,
    )
    assert int(out.strip()) > 0
    assert_ledger_knows(gw.ledger, token)


def test_node_mysql2_logs_in_with_a_provider_token(
    gw: GatewayProcess, provider: Provider, mariadb: MariaDB, node_client: Path
) -> None:
    token = provider.token(CAROL)
    result = run_node(
        {
            "host": gw.host,
            "port": gw.port,
            "user": CAROL_EMAIL,
            "password": token,
            "ssl": {"ca": str(mariadb.pki.ca_cert)},
            "queries": [COUNT_SQL],
            "options": {"enableCleartextPlugin": True},
        }
    )
    assert result["results"][0]["rows"][0][0] > 0
    assert_ledger_knows(gw.ledger, token)


def test_a_provider_token_for_a_group_without_access_is_refused(
    gw: GatewayProcess, provider: Provider
) -> None:
    token = provider.token(VISITOR)
    message = refusal(gw, token, VISITOR_EMAIL)
    assert "may not reach target" in message and "visitors" in message
    time.sleep(0.05)
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert any(r["identity"] == VISITOR_EMAIL and r["reason"] in message for r in failed)


# --------------------------------------------------------------------------------------
# the transparent path: agent namespace -> the database's address, gateway in between


@pytest.fixture(scope="module")
def lab_idp(lab: LabEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """The provider in the gateway's namespace, on its agent-side address (which its
    certificate names): the gateway reaches it locally, the agent over its link."""
    host = lab.lab.gw_agent_side_v4
    pki = make_pki(tmp_path_factory.mktemp("lab-idp-pki"), [host])
    idp = Provider(
        tmp_path_factory.mktemp("lab-idp"),
        pki,
        make_clients(),
        host=host,
        port=LAB_IDP_PORT,
        netns=lab.ns("gw"),
    )
    start_provider(idp)
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def lab_gateway(
    lab: LabEnv, lab_idp: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabGateway]:
    gw = LabGateway(
        tmp_path_factory.mktemp("lab-gw"),
        lab.lab,
        backend_user=lab.db.native_user,
        backend_password=lab.db.native_password,
        pki=lab.pki,
        extra_toml=identity_toml(lab_idp),
    )
    try:
        gw.start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the gateway in its namespace: {exc}", pytrace=False)
    try:
        if not gw.rules_ready:
            pytest.fail("the gateway's interception rules did not appear", pytrace=False)
        yield gw
    finally:
        try:
            code = gw.stop()
            log = gw.log()
            leaked = [name for name, secret in lab_idp.secrets().items() if secret in log]
            assert code == 0 and "Traceback" not in log, log[-4000:]
            assert lab.db.native_password not in log
            assert not leaked, f"in the gateway log: {leaked}"
        finally:
            nft.remove(lab.ns("gw"))


def test_logins_refused_while_the_provider_is_down_are_not_held_against_the_agent(
    mariadb: MariaDB, idp_pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The provider was unreachable as the gateway started: every token login was
    refused, rightly, but counted as the agent's own failure, so once the provider was
    back an agent that had retried meanwhile was refused for minutes more ("too many
    failed logins"), and a host whose agents retried under many names waited as a whole."""
    idp = start_provider(Provider(tmp_path_factory.mktemp("idp-down"), idp_pki, make_clients()))
    token = idp.token(CAROL)
    idp.stop()
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw-down"),
        mariadb,
        mariadb.pki,
        extra_toml=identity_toml(idp),
        appliance_extra="failed_logins_free = 1",
    ).start()
    try:
        for _ in range(3):
            assert "keys cannot be fetched from" in refusal(gw, token)
        start_provider(idp)
        deadline = time.monotonic() + 60  # the keys are fetched again within 10 s
        while True:
            try:
                assert pymysql_login(gw, token) > 0
                break
            except pymysql.err.OperationalError as exc:
                message = str(exc.args[1])
                assert "keys cannot be fetched from" in message, message
                assert time.monotonic() < deadline, message
                time.sleep(0.5)
        failed = ledger_records(gw.ledger, "--kind", "auth_failed")
        assert len(failed) >= 3  # each refusal is recorded all the same
        assert all("keys cannot be fetched from" in r["reason"] for r in failed)
    finally:
        try:
            stop_gateway(gw, mariadb, idp.secrets())
        finally:
            idp.stop()


def test_the_transparent_path_takes_provider_tokens_from_four_clients(
    lab: LabEnv, lab_idp: Provider, lab_gateway: LabGateway, node_client: Path
) -> None:
    db = lab.lab.db_v4
    agent = lab.lab.agent_v4
    ca = lab.pki.ca_cert

    def token() -> str:  # asked for from the agent's namespace, as the agent would
        with lab.in_ns("agent"):
            return lab_idp.token(CAROL)

    ledger = lab_gateway.workdir / "ledger.db"

    issued = token()
    conn = lab.connect("agent", db, DB_PORT, CAROL_EMAIL, issued, ssl={"ca": str(ca)})
    try:
        with conn.cursor() as cur:
            cur.execute(COUNT_SQL)
            assert cur.fetchone()[0] > 0
    finally:
        conn.close()
    assert_ledger_knows(ledger, issued, agent)

    issued = token()
    with lab.in_ns("agent"):
        cconn = mysql.connector.connect(
            host=db,
            port=DB_PORT,
            user=CAROL_EMAIL,
            password=issued,
            auth_plugin="mysql_clear_password",
            ssl_ca=str(ca),
            use_pure=True,
            connection_timeout=10,
        )
    try:
        cur = cconn.cursor()
        cur.execute(COUNT_SQL)
        assert cur.fetchall()[0][0] > 0
    finally:
        cconn.close()
    assert_ledger_knows(ledger, issued, agent)

    issued = token()
    out = lab.mariadb_cli(
        "agent",
        COUNT_SQL,
        host=db,
        port=DB_PORT,
        user=CAROL_EMAIL,
        password=issued,
        ssl=True,
        ssl_ca=ca,
        verify_server_cert=True,
        column_names=False,
    )
    assert int(out.strip()) > 0
    assert_ledger_knows(ledger, issued, agent)

    issued = token()
    with lab.in_ns("agent"):
        result = run_node(
            {
                "host": db,
                "port": DB_PORT,
                "user": CAROL_EMAIL,
                "password": issued,
                "ssl": {"ca": str(ca)},
                "queries": [COUNT_SQL],
                "options": {"enableCleartextPlugin": True},
            }
        )
    assert result["results"][0]["rows"][0][0] > 0
    assert_ledger_knows(ledger, issued, agent)


# --------------------------------------------------------------------------------------
# key rotation (last: it waits out the minute the rotation fixture started)


def test_a_key_rotation_needs_no_gateway_restart(rotation: Rotation) -> None:
    idp, gw = rotation.provider, rotation.gw
    assert gw.proc is not None
    pid = gw.proc.pid
    old_kid = kid_of(rotation.old_token)
    new_kid = idp.rotate().kid
    assert idp.published_kids() == [new_kid]  # the old key is withdrawn
    new_token = idp.token(CAROL)
    assert kid_of(new_token) == new_kid != old_kid

    if time.time() - rotation.first_login_started < REFRESH_INTERVAL_S - 5:
        # Within a minute of the gateway's last fetch of the keys it may not fetch them
        # again: the new kid is refused for now, saying to try again in a minute, and
        # the old kid is still honoured from the cache. (When the tests before took more
        # than the minute, the gateway fetches at once and this step has nothing to show.)
        message = refusal(gw, new_token)
        assert "unknown signing key id" in message and new_kid in message
        assert "try again in a minute" in message
        assert pymysql_login(gw, rotation.old_token) > 0

    time.sleep(max(0.0, rotation.first_login_done + REFRESH_INTERVAL_S + 0.5 - time.time()))
    # The unknown kid makes the running gateway fetch the JWKS again: the new key.
    assert pymysql_login(gw, new_token) > 0
    assert_ledger_knows(gw.ledger, new_token, "127.0.0.1")
    assert gw.proc is not None and gw.proc.pid == pid and gw.proc.poll() is None

    # The old key: the provider no longer publishes it, and the gateway's keys are now
    # the JWKS it fetched after the rotation. A token signed with a withdrawn key is
    # refused even though it has not expired: a provider withdraws a key so that what it
    # signed stops being trusted (a leaked key is rotated out exactly this way), and a
    # gateway that kept honouring it would defeat the rotation. The refusal names the
    # kid and the keys the provider does publish.
    message = refusal(gw, rotation.old_token)
    assert "unknown signing key id" in message and old_kid in message and new_kid in message
    time.sleep(0.05)
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert failed and old_kid in failed[-1]["reason"]
    assert failed[-1]["identity"] == CAROL_EMAIL
