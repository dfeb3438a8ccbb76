"""OIDC tokens as MySQL passwords through the real gateway, with real clients: the token
is asked for in clear text over TLS only, verified against the provider's keys, and its
identity, subject, groups and token id are on the session's ledger records."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import mysql.connector
import pymysql
import pytest
import sqlalchemy
from cryptography.hazmat.primitives import serialization
from lab.clients import ledger_records, run_mariadb, run_node
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import AUDIENCE, ISSUER, USER, Provider, identity_toml
from pymysql.constants import COMMAND

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Provider:
    return Provider(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB, provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw"),
        mariadb,
        mariadb.pki,
        extra_toml=identity_toml(provider),
        appliance_extra="failed_logins_free = 1000",  # this module fails logins on purpose
    ).start()
    yield gw
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log
    assert mariadb.native_password not in log


def tls_connect(gw: GatewayProcess, mariadb: MariaDB, password: str, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "host": gw.host,
        "port": gw.port,
        "user": USER,
        "password": password,
        "database": "shop",
        "ssl": {"ca": str(mariadb.pki.ca_cert)},
        "connect_timeout": 10,
    }
    args.update(kw)
    return pymysql.connect(**args)


def test_pymysql_logs_in_with_a_token_and_the_ledger_knows_who(
    gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    jti = "token-for-pymysql"
    with tls_connect(gw, mariadb, provider.token(jti=jti)) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM customers")
        assert cur.fetchone()[0] > 0
    recs = [r for r in ledger_records(gw.ledger) if r.get("token_id") == jti]
    kinds = {r["kind"] for r in recs}
    assert {"session_start", "statement", "result", "session_end"} <= kinds
    for r in recs:
        assert r["identity"] == USER and r["subject"] == "user-42"
        assert r["groups"] == ["agents"]
    (start,) = [r for r in recs if r["kind"] == "session_start"]
    assert start["method"] == "token"


def test_other_clients_log_in_with_a_token(
    gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    conn = mysql.connector.connect(
        host=gw.host,
        port=gw.port,
        user=USER,
        password=provider.token(),
        database="shop",
        auth_plugin="mysql_clear_password",
        ssl_ca=str(mariadb.pki.ca_cert),
        use_pure=True,
    )
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]
    finally:
        conn.close()
    out = run_mariadb(
        "SELECT 2",
        host=gw.host,
        port=gw.port,
        user=USER,
        password=provider.token(),
        ssl=True,
        ssl_ca=mariadb.pki.ca_cert,
        column_names=False,  # MariaDB's client allows the clear-text plugin by default
    )
    assert out.strip() == "2"
    result = run_node(
        {
            "host": gw.host,
            "port": gw.port,
            "user": USER,
            "password": provider.token(),
            "ssl": {"ca": str(mariadb.pki.ca_cert)},
            "queries": ["SELECT 3 AS n"],
            "options": {"enableCleartextPlugin": True},
        }
    )
    assert result["results"][0]["rows"] == [[3]]


def refusal(gw: GatewayProcess, mariadb: MariaDB, password: str, **kw: Any) -> str:
    with pytest.raises(pymysql.err.OperationalError) as info:
        tls_connect(gw, mariadb, password, **kw)
    code, message = info.value.args
    assert code == 1045, message
    return str(message)


@pytest.mark.parametrize(
    ("claims", "fragment"),
    [
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid before"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"aud": [AUDIENCE, "another"]}, "audience"),
        ({"exp": None}, "exp"),
        ({"exp": int(time.time()) + 400 * 86400}, "lifetime"),
        ({"email": "mallory@example.com"}, "mallory@example.com"),
        ({"groups": ["visitors"]}, "may not reach target"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-issuer",
        "wrong-audience",
        "extra-audiences",
        "missing-exp",
        "absurd-lifetime",
        "user-mismatch",
        "group-not-allowed",
    ],
)
def test_refused_tokens_get_1045_and_an_auth_failed_record(
    gw: GatewayProcess, mariadb: MariaDB, provider: Provider, claims: dict[str, Any], fragment: str
) -> None:
    jti = uuid.uuid4().hex
    message = refusal(gw, mariadb, provider.token(jti=jti, **claims))
    assert message.startswith("sqlgate: access denied: ") and fragment in message
    time.sleep(0.05)
    failed = [
        r
        for r in ledger_records(gw.ledger)
        if r["kind"] == "auth_failed" and r["reason"] in message
    ]
    assert failed and failed[-1]["identity"] == USER


def test_forged_and_malformed_tokens_are_refused(
    gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "email": USER, "iat": now, "exp": now + 600}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": provider.kid})
    assert "none" in refusal(gw, mariadb, unsigned)
    # HS256 "signed" with the public key as the secret: the classic key-confusion forgery
    public_pem = provider.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": provider.kid}
    signing_input = b".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
        for part in (header, claims)
    )
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    assert "HS256" in refusal(gw, mariadb, forged)
    stranger = Provider(provider.jwks.parent / "other")
    other = jwt.encode(claims, stranger.key, algorithm="RS256", headers={"kid": "who-knows"})
    assert "who-knows" in refusal(gw, mariadb, other)
    assert "token" in refusal(gw, mariadb, "x" * 20_000)  # oversized
    time.sleep(0.05)
    reasons = [r["reason"] for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    for fragment in ("none", "HS256", "who-knows", "16384"):
        assert any(fragment in reason for reason in reasons), fragment


def test_a_token_larger_than_a_login_packet_is_refused_and_recorded(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """A "token" over 64 KiB: a failed login, with its auth_failed record (there was none,
    so no backoff either) and a 1045 the client can read, in sequence (it got a packet
    sequence error, or a reset: the rest of its packet is now read before closing)."""
    for token in ("x" * 100_000, "y" * 1_000_000):
        message = refusal(gw, mariadb, token)
        assert message.startswith("sqlgate: access denied: the login packet is longer")
    time.sleep(0.1)
    failed = [
        r
        for r in ledger_records(gw.ledger)
        if r["kind"] == "auth_failed" and "login packet is longer" in r["reason"]
    ]
    assert len(failed) == 2 and all(r["identity"] == USER for r in failed)


def test_a_token_over_a_plain_connection_is_refused(
    gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    before = len([r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"])
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(
            host=gw.host,
            port=gw.port,
            user=USER,
            password=provider.token(),
            ssl_disabled=True,
            connect_timeout=10,
        )
    code, message = info.value.args
    assert code == 1045 and "only over TLS" in message
    time.sleep(0.05)
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    assert len(failed) == before + 1 and "only over TLS" in failed[-1]["reason"]


# A session lasts as long as its token. Once the token's time is up the gateway ends the
# session as MariaDB ends one (wait_timeout, KILL): the connection closes with nothing
# sent, which drivers and pools take for a lost connection.


@pytest.fixture(scope="module")
def expiring_gw(
    mariadb: MariaDB, provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw-expiry"),
        mariadb,
        mariadb.pki,
        extra_toml=identity_toml(provider) + "leeway_s = 0\n",
    ).start()
    mariadb.admin_sql("CREATE TABLE IF NOT EXISTS shop.expiry_probe (id INT PRIMARY KEY)")
    yield gw
    assert gw.stop() == 0
    assert "Traceback" not in gw.log()


def short_token(provider: Provider, jti: str, seconds: int = 5) -> str:
    now = int(time.time())
    return provider.token(iat=now, exp=now + seconds, jti=jti)


def session_end(gw: GatewayProcess, jti: str) -> dict[str, Any]:
    """The session_end of the session that logged in with token ``jti``, once written."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        recs = ledger_records(gw.ledger)
        ends = [r for r in recs if r["kind"] == "session_end" and r.get("token_id") == jti]
        if ends:
            return ends[0]
        time.sleep(0.2)
    pytest.fail(f"the session of token {jti} did not end")


def test_an_idle_session_whose_token_expires_is_closed_and_its_transaction_lost(
    expiring_gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    """BUG: the session stayed open for ever, refusing each command with 1227; a pool's
    pre-ping read that as an error, not as a dead connection, and did not reconnect."""
    jti = f"idle-{uuid.uuid4().hex}"
    row = int(time.time_ns() % 1_000_000_000)
    conn = tls_connect(expiring_gw, mariadb, short_token(provider, jti), autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO expiry_probe VALUES ({row})")  # not committed
        end = session_end(expiring_gw, jti)
        assert "token expired" in end["reason"] and "ended_by" not in end
        with pytest.raises(pymysql.err.OperationalError) as caught, conn.cursor() as cur:
            cur.execute("SELECT 1")
        assert caught.value.args[0] in (2006, 2013), caught.value.args  # a lost connection
    finally:
        conn.close()
    assert mariadb.admin_sql(f"SELECT COUNT(*) FROM shop.expiry_probe WHERE id = {row}") == [(0,)]


def test_a_pool_reconnects_with_a_fresh_token_once_the_first_expired(
    expiring_gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    """SQLAlchemy's pre-ping of a pooled connection whose token expired raised 1227
    instead of reconnecting; now it finds the connection lost and connects anew."""
    gw = expiring_gw
    tokens: list[str] = []

    engine = sqlalchemy.create_engine(
        f"mysql+pymysql://{USER.replace('@', '%40')}@{gw.host}:{gw.port}/shop",
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"ssl": {"ca": str(mariadb.pki.ca_cert)}, "connect_timeout": 10},
    )

    @sqlalchemy.event.listens_for(engine, "do_connect")
    def fresh_token(dialect: Any, rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        jti = f"pool-{len(tokens)}-{uuid.uuid4().hex}"
        tokens.append(jti)
        cparams["password"] = short_token(provider, jti, 5 if len(tokens) == 1 else 600)

    try:
        with engine.connect() as conn:
            first = conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar()
        assert "token expired" in session_end(gw, tokens[0])["reason"]
        with engine.connect() as conn:  # the pre-ping finds it gone and reconnects
            again = conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar()
        assert again != first and len(tokens) == 2
    finally:
        engine.dispose()


def test_a_command_after_the_token_expired_is_refused_once_then_the_session_ends(
    expiring_gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    """The session is busy when its token expires (a SLEEP sent before); a command the
    client sends after is refused with 1227 token-expired, recorded, and once that is
    answered the connection closes. (pymysql's own calls send the command without
    waiting for the answer before it.)"""
    jti = f"busy-{uuid.uuid4().hex}"
    now = int(time.time())
    conn = tls_connect(
        expiring_gw, mariadb, provider.token(iat=now, exp=now + 5, jti=jti), read_timeout=30
    )
    try:
        conn._execute_command(COMMAND.COM_QUERY, "SELECT SLEEP(7) AS slept")
        time.sleep(max(0.0, now + 5.5 - time.time()))  # the token expired meanwhile
        conn._execute_command(COMMAND.COM_QUERY, "SELECT 'after' AS late")
        conn._read_query_result()  # the SLEEP's answer, sent before the token expired
        conn._next_seq_id = 1  # (pymysql expects one answer at a time)
        with pytest.raises(pymysql.err.OperationalError) as caught:
            conn._read_query_result()
        code, message = caught.value.args
        assert code == 1227 and "token-expired" in message and "Log in again" in message
        with pytest.raises(pymysql.err.OperationalError) as lost:
            conn.ping(reconnect=False)
        assert lost.value.args[0] in (2006, 2013), lost.value.args
    finally:
        conn.close()
    end = session_end(expiring_gw, jti)
    assert "token expired" in end["reason"]
    recs = [r for r in ledger_records(expiring_gw.ledger) if r.get("token_id") == jti]
    refused = [r for r in recs if r["kind"] == "statement" and r["rule"] == "token-expired"]
    assert len(refused) == 1 and refused[0]["decision"] == "blocked"
    assert "'after'" in refused[0]["sql"]


def test_an_email_the_provider_did_not_verify_names_nobody(
    gw: GatewayProcess, mariadb: MariaDB, provider: Provider
) -> None:
    """A token whose email is marked unverified could name a person it is not."""
    token = provider.token(email_verified=False)
    with pytest.raises(pymysql.err.OperationalError) as caught:
        tls_connect(gw, mariadb, token)
    assert caught.value.args[0] == 1045 and "email_verified" in caught.value.args[1]
    with tls_connect(gw, mariadb, provider.token(email_verified=True)) as conn:
        conn.ping()


def test_a_valid_token_logs_in_while_others_behind_its_address_fail(
    mariadb: MariaDB, provider: Provider, tmp_path: Path
) -> None:
    """Agents behind one NAT share its address. BUG: another client's failures held up
    an agent whose token was valid: three bad tokens sent in its name made it wait, and
    failures for a dozen names (one misbehaving agent) refused every agent of the
    address, unread, for up to five minutes at a time. A token cannot be guessed, so one
    that verifies is admitted whatever waits; so is an account that logged in from the
    address before. A failing login in a wait is refused saying so, recorded once."""
    gw = GatewayProcess(
        tmp_path / "gw",
        mariadb,
        mariadb.pki,
        extra_toml=identity_toml(provider),
        appliance_extra="failed_logins_free = 2\nfailed_login_max_wait_s = 300",
    ).start()
    try:
        with gw.connect("agent") as conn, conn.cursor() as cur:  # known from this address
            cur.execute("SELECT 1")
        for _ in range(3):  # someone else sends bad tokens in the agent's name
            assert "a JWT is three" in refusal(gw, mariadb, "not-a-token")
        message = refusal(gw, mariadb, "not-a-token")
        assert f"too many failed logins as '{USER}'" in message
        with tls_connect(gw, mariadb, provider.token()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")  # the agent's own token is not held up
        for i in range(20):  # a misbehaving client cycles through user names
            message = refusal(gw, mariadb, "not-a-token", user=f"guess{i}@example.com")
            if "for many user names" in message:
                break
        assert "too many failed logins from 127.0.0.1 (for many user names)" in message
        assert i <= 11, i
        for _ in range(5):  # it keeps trying: refused each time, recorded once
            assert "for many user names" in refusal(gw, mariadb, "x.y.z", user="guess0@x")
        with tls_connect(gw, mariadb, provider.token()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")  # a valid token still logs in
        with gw.connect("agent") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")  # and so does an account known from this address
        with pytest.raises(pymysql.err.OperationalError) as info:  # one never seen waits
            gw.connect("dba")
        assert "for many user names" in info.value.args[1]
    finally:
        assert gw.stop() == 0
    assert "Traceback" not in gw.log()
    failed = [r for r in ledger_records(gw.ledger) if r["kind"] == "auth_failed"]
    waits = [r for r in failed if "refused unrecorded" in r["reason"]]
    assert len(waits) == 2, waits  # one per wait: the name's, the address's
