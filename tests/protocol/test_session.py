"""Protocol stories of the session core, told as transcripts (see ``playbook.py``).

Each story drives one ``Session`` with no I/O and states byte for byte what it must send
on each leg and which events it must report; a story fails when the behaviour it tells
breaks. Scrambles and nonces are fixed, so every byte is deterministic (except RSA and TLS
ciphertext, which the tests decrypt).
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.mysql import auth, packets
from appliance.mysql.constants import (
    CACHING_SHA2_PASSWORD,
    CLEAR_PASSWORD,
    CLIENT_ED25519,
    GATEWAY_CAPABILITIES,
    MAX_PAYLOAD,
    NATIVE_PASSWORD,
    Capability,
    Command,
    ErrorCode,
    FieldType,
    ServerStatus,
)
from appliance.mysql.relay import (
    SQL_MODE_QUERY,
    UNENDED_FIELD_LIST,
    Account,
    AuthFailed,
    Backend,
    ClientAuthenticated,
    ClientCommand,
    CommandCompleted,
    CommandReceived,
    CommandRefused,
    Identity,
    Phase,
    Session,
    SessionClosed,
    SessionReady,
    SessionSettings,
    TokenPresented,
    new_scramble,
)
from appliance.mysql.wire import Packet, PacketReader, frame

from .playbook import (
    AUTOCOMMIT,
    SERVER_CAPABILITIES,
    Playbook,
    Reply,
    Step,
    TlsFiles,
    allow,
    client,
    client_closes,
    client_hello,
    client_tls,
    column,
    command,
    expect_client,
    expect_closed,
    expect_event,
    expect_phase,
    expect_server,
    make_rsa_key,
    make_tls_files,
    query,
    refuse,
    server,
    server_closes,
    server_greeting,
    server_tls,
    shell,
    ssl_request,
)

# ------------------------------------------------------------------------------ the cast

SCRAMBLE = b"gateway-scramble-20b"  # the gateway's own challenge to its clients
NONCE = b"server-nonce-0123456"  # the backend's challenge to the gateway
assert len(SCRAMBLE) == len(NONCE) == 20

ALICE_PW = b"alice-secret"
BOB_PW = b"bob-secret"
BACKEND_PW = b"vaulted-backend-secret"
MAX_PACKET = 64 * 1024 * 1024  # SessionSettings.max_payload, announced in the backend login

ATTRS = ((b"_client_name", b"libmysql"), (b"program_name", b"story"))

C = Capability
CLIENT_CAPS = int(
    C.LONG_PASSWORD
    | C.LONG_FLAG
    | C.LOCAL_FILES  # every libmysql sets it; the gateway must never pass it on
    | C.PROTOCOL_41
    | C.INTERACTIVE
    | C.TRANSACTIONS
    | C.SECURE_CONNECTION
    | C.MULTI_STATEMENTS
    | C.MULTI_RESULTS
    | C.PS_MULTI_RESULTS
    | C.PLUGIN_AUTH
    | C.CONNECT_ATTRS
    | C.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | C.CAN_HANDLE_EXPIRED_PASSWORDS
    | C.SESSION_TRACK
    | C.DEPRECATE_EOF
    | C.QUERY_ATTRIBUTES  # not offered by the gateway: a pushy client asks anyway
)
"""What a MySQL 8 client asks for (plus a flag the gateway never offers)."""

REQUIRED = int(C.PROTOCOL_41 | C.SECURE_CONNECTION | C.PLUGIN_AUTH)
OFFERED = int((SERVER_CAPABILITIES & GATEWAY_CAPABILITIES) | REQUIRED)
"""What the gateway offers its client in front of a server that offers everything."""
CLIENT_SIDE = CLIENT_CAPS & OFFERED
"""The capabilities of the client's leg once it logged in without a database."""

STORY_SERVER_CAPS = SERVER_CAPABILITIES & ~int(C.INTERACTIVE)
"""A server that lacks one flag both the client and the allow-list have."""
LOGIN_CAPS = int(
    C.LONG_PASSWORD
    | C.LONG_FLAG
    | C.CONNECT_WITH_DB
    | C.PROTOCOL_41
    | C.TRANSACTIONS
    | C.SECURE_CONNECTION
    | C.MULTI_STATEMENTS
    | C.MULTI_RESULTS
    | C.PS_MULTI_RESULTS
    | C.PLUGIN_AUTH
    | C.CONNECT_ATTRS
    | C.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | C.SESSION_TRACK
    | C.DEPRECATE_EOF
)
"""client's ∩ allow-list ∩ STORY_SERVER_CAPS, with the database flag: written out by hand."""
assert LOGIN_CAPS == (CLIENT_CAPS & GATEWAY_CAPABILITIES & STORY_SERVER_CAPS) | int(
    C.CONNECT_WITH_DB
)

NEVER_NEGOTIATED = int(
    C.COMPRESS
    | C.ZSTD_COMPRESSION
    | C.LOCAL_FILES
    | C.QUERY_ATTRIBUTES
    | C.OPTIONAL_RESULTSET_METADATA
    | C.CAN_HANDLE_EXPIRED_PASSWORDS
    | C.MULTI_FACTOR_AUTH
    | C.NO_SCHEMA
)

MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
LAST_ROW_SENT = int(ServerStatus.LAST_ROW_SENT)


def _stage2(password: bytes) -> bytes:
    return auth.parse_native_password_hash(auth.native_password_hash(password))


ACCOUNTS = {
    "alice": Account("alice", _stage2(ALICE_PW), frozenset({"dba"})),
    "bob": Account("bob", _stage2(BOB_PW), frozenset({"sales"})),
}


def make_settings(
    *,
    backend_tls: str = "disabled",
    backend_ctx: object = None,
    client_tls: object = None,
    tokens: bool = False,
) -> SessionSettings:
    backend = Backend(
        name="db1",
        host="localhost",
        user="gw_svc",
        password=BACKEND_PW,
        tls=backend_tls,
        tls_context=backend_ctx,  # type: ignore[arg-type]
        allow_groups=frozenset({"dba", "ops"}),
    )
    return SessionSettings(
        backend=backend,
        accounts=ACCOUNTS,
        client_tls=client_tls,  # type: ignore[arg-type]
        tokens=tokens,
    )


def new_session(settings: SessionSettings | None = None, **kw: object) -> Session:
    return Session(settings or make_settings(**kw), scramble=SCRAMBLE)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[bytes, bytes]:
    return make_rsa_key()


# ------------------------------------------------------------------------ packet checks


def ok_for_client(seq: int, caps: int = CLIENT_SIDE, status: int = AUTOCOMMIT) -> bytes:
    """The OK the gateway itself sends its client at the end of the login."""
    return frame(seq, packets.build_ok(packets.OkPacket(status=status), caps))


def local_err(code: int, message: str, seq: int = 1) -> bytes:
    return frame(seq, packets.build_err(code, message))


def is_err(seq: int, code: int | None, *fragments: str) -> Callable[[Packet], None]:
    """A check: an ERR packet with this sequence id, code and message fragments."""

    def check(pkt: Packet) -> None:
        assert pkt.payload[:1] == b"\xff", f"not an ERR packet: {pkt.payload[:40]!r}"
        err = packets.parse_err(pkt.payload)
        assert pkt.seq == seq, f"ERR with sequence id {pkt.seq}, expected {seq}"
        if code is not None:
            assert err.code == code, f"ERR {err.code} ({err.message}), expected {code}"
        for fragment in fragments:
            assert fragment in err.message, f"{fragment!r} not in {err.message!r}"

    check.__name__ = f"ERR {code} seq={seq}"
    return check


def native(password: bytes, nonce: bytes = SCRAMBLE) -> bytes:
    return auth.native_scramble(password, nonce)


def _named(check: Callable[[object], bool], name: str) -> Callable[[object], bool]:
    check.__name__ = name
    return check


def received(cmd_id: int, raw: bytes) -> Step:
    return expect_event(
        CommandReceived,
        cmd=_named(lambda c: (c.id, c.raw) == (cmd_id, raw), f"id={cmd_id} raw={raw[:24]!r}"),
    )


def completed(
    cmd_id: int,
    rows: int = 0,
    affected: int = 0,
    error: int | None = None,
    **fields: object,
) -> Step:
    return expect_event(
        CommandCompleted,
        cmd=_named(lambda c: c.id == cmd_id, f"id={cmd_id}"),
        rows=rows,
        affected=affected,
        error=error,
        **fields,
    )


def alice_hello(*, caps: int = CLIENT_CAPS, seq: int = 1, **kw: object) -> bytes:
    kw.setdefault("attributes", ATTRS)
    return client_hello(b"alice", native(ALICE_PW), capabilities=caps, seq=seq, **kw)  # type: ignore[arg-type]


def native_login(caps: int, *, database: bytes | None = None, seq: int = 1) -> bytes:
    """The gateway's backend login with mysql_native_password, as it must be on the wire."""
    return frame(
        seq,
        packets.build_handshake_response(
            packets.HandshakeResponse(
                capabilities=caps,
                max_packet=MAX_PACKET,
                charset=45,
                user=b"gw_svc",
                auth_response=native(BACKEND_PW, NONCE),
                database=database,
                auth_plugin=NATIVE_PASSWORD,
                attributes=ATTRS if caps & C.CONNECT_ATTRS else (),
            )
        ),
    )


def ready(*, deprecate_eof: bool = True, settings: SessionSettings | None = None) -> Playbook:
    """A session in the COMMAND phase; its (plain, native) login already told and checked."""
    caps = CLIENT_CAPS if deprecate_eof else CLIENT_CAPS & ~int(C.DEPRECATE_EOF)
    side = caps & OFFERED
    login_caps = (side & ~int(C.CONNECT_WITH_DB)) | int(C.PLUGIN_AUTH_LENENC_CLIENT_DATA)
    pb = Playbook(new_session(settings))
    assert (
        pb
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello(caps=caps))
        << expect_event(ClientAuthenticated)
        << expect_server(native_login(login_caps))
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(2, side))
        << expect_event(SessionReady, server_tls=False)
        << expect_phase(Phase.COMMAND)
    )
    return pb


# ============================================================ 1. the whole happy login


def test_happy_path_greets_logs_in_with_the_vaulted_credential_and_reaches_commands() -> None:
    greeting = server_greeting(
        NONCE, version=b"8.0.36-story", connection_id=0x01020304, capabilities=STORY_SERVER_CAPS
    )
    offered = (STORY_SERVER_CAPS & GATEWAY_CAPABILITIES) | REQUIRED
    side = CLIENT_CAPS & offered | int(C.CONNECT_WITH_DB)

    def our_greeting(pkt: Packet) -> None:
        g = packets.parse_greeting(pkt.payload)
        assert pkt.seq == 0
        assert g.server_version == b"8.0.36-story-sqlgate"  # the backend version, marked
        assert g.connection_id == 0x01020304
        assert g.scramble == SCRAMBLE
        assert g.auth_plugin == NATIVE_PASSWORD
        assert not g.capabilities & C.COMPRESS
        assert not g.capabilities & C.LOCAL_FILES
        assert not g.capabilities & C.SSL  # no client TLS configured
        assert g.capabilities & ~int(GATEWAY_CAPABILITIES) == 0
        assert g.capabilities == offered
        assert pkt.raw == frame(
            0,
            packets.build_greeting(
                packets.Greeting(
                    b"8.0.36-story-sqlgate",
                    0x01020304,
                    SCRAMBLE,
                    offered,
                    45,
                    AUTOCOMMIT,
                    NATIVE_PASSWORD,
                )
            ),
        )

    def backend_login(pkt: Packet) -> None:
        login = packets.parse_handshake_response(pkt.payload)
        assert pkt.seq == 1
        assert login.user == b"gw_svc"
        assert login.auth_response == auth.native_scramble(BACKEND_PW, NONCE)
        assert login.database == b"app"
        assert login.charset == 45
        assert login.auth_plugin == NATIVE_PASSWORD
        assert login.attributes == ATTRS
        assert login.capabilities == LOGIN_CAPS
        assert login.capabilities & NEVER_NEGOTIATED == 0
        assert not login.capabilities & C.SSL
        assert pkt.raw == native_login(LOGIN_CAPS, database=b"app")

    assert (
        Playbook(new_session())
        >> server(greeting)
        << expect_client(our_greeting)
        >> client(alice_hello(database=b"app"))
        << expect_event(
            ClientAuthenticated,
            identity=Identity("alice", frozenset({"dba"}), "account"),
            tls=False,
        )
        << expect_phase(Phase.SERVER_AUTH)
        << expect_server(backend_login)
        >> server(Reply(2).ok(status=AUTOCOMMIT).data)
        << expect_client(ok_for_client(2, side))
        << expect_event(SessionReady, server_tls=False)
        << expect_phase(Phase.COMMAND)
    )


@pytest.mark.parametrize("client_tls_on", [False, True], ids=["plain-only", "tls-offered"])
def test_greeting_offers_ssl_exactly_when_client_tls_is_configured(
    tls: TlsFiles, client_tls_on: bool
) -> None:
    ctx = tls.server_context() if client_tls_on else None
    expected = OFFERED | (int(C.SSL) if client_tls_on else 0)

    def check(pkt: Packet) -> None:
        caps = packets.parse_greeting(pkt.payload).capabilities
        assert caps == expected
        assert caps & ~int(GATEWAY_CAPABILITIES | C.SSL) == 0

    assert (
        Playbook(new_session(client_tls=ctx))
        >> server(server_greeting(NONCE))
        << expect_client(check)
    )


def test_no_schema_is_neither_offered_nor_passed_on_when_the_client_asks_for_it() -> None:
    """BUG: CLIENT_NO_SCHEMA was negotiated on both legs. With it MariaDB drops the schema
    of every qualified name and reads the name in the current schema, so after ``USE
    shop`` the text ``UPDATE scratch.orders ...`` changed ``shop.orders``, past every rule
    on ``shop.orders`` (the gateway reads the text as the client wrote it)."""
    assert SERVER_CAPABILITIES & C.NO_SCHEMA  # MariaDB offers it

    def greeting(pkt: Packet) -> None:
        assert not packets.parse_greeting(pkt.payload).capabilities & C.NO_SCHEMA

    def login(pkt: Packet) -> None:
        hello = packets.parse_handshake_response(pkt.payload)
        assert hello.capabilities & NEVER_NEGOTIATED == 0, hex(hello.capabilities)

    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(greeting)
        >> client(alice_hello(caps=CLIENT_CAPS | int(C.NO_SCHEMA), database=b"shop"))
        << expect_event(ClientAuthenticated)
        << expect_server(login)
        >> server(Reply(2).ok().data)
        << expect_client(lambda p: p.payload[:1] == b"\x00")
        << expect_event(SessionReady)
    )


# ========================================================== 2. the client proves itself


def test_wrong_native_password_is_refused_and_the_session_closes() -> None:
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(client_hello(b"alice", native(b"guess"), capabilities=CLIENT_CAPS))
        << expect_client(
            is_err(2, 1045, "sqlgate: access denied", "wrong password", "'alice'", "plain")
        )
        << expect_event(AuthFailed, user="alice", cause="client")
        << expect_closed("authentication failed")
        >> client(query(b"SELECT 1"))  # nothing more is read
    )


def test_a_name_the_login_gate_refuses_is_turned_away_before_its_password() -> None:
    asked: list[str] = []

    def gate(user: str) -> str | None:
        asked.append(user)
        return "too many failed logins as 'alice'; try again in 3 s" if user == "alice" else None

    def hello(user: bytes, password: bytes) -> Playbook:
        session = new_session()
        session.login_gate = gate
        return (
            Playbook(session)
            >> server(server_greeting(NONCE))
            << expect_client(lambda p: p.seq == 0)
            >> client(client_hello(user, native(password), capabilities=CLIENT_CAPS))
        )

    assert (
        hello(b"alice", ALICE_PW)
        << expect_client(is_err(2, 1045, "sqlgate: access denied: too many failed logins"))
        << expect_event(AuthFailed, user="alice", cause="waiting")
        << expect_closed("too many failed logins")
    )  # the right password, refused all the same: nothing went to the server
    assert asked == ["alice"]
    assert (
        hello(b"bob", BOB_PW)
        << expect_client(is_err(2, 1045, "may not reach target"))  # checked as usual
        << expect_event(AuthFailed, user="bob", cause="client")
        << expect_closed()
    )
    assert asked == ["alice", "bob"]


def test_a_database_the_database_gate_refuses_ends_the_login_with_1044() -> None:
    """The database a client names in its login is the shell's to decide (as USE of it),
    after the credentials and before the gateway logs in to the target."""
    asked: list[tuple[Identity, str]] = []
    message = "sqlgate: blocked by rule 'no-use': USE is not allowed on this gateway"

    def gate(identity: Identity, schema: str) -> str | None:
        asked.append((identity, schema))
        return message if schema == "secret" else None

    def hello(database: bytes) -> Playbook:
        session = new_session()
        session.database_gate = gate
        return (
            Playbook(session)
            >> server(server_greeting(NONCE))
            << expect_client(lambda p: p.seq == 0)
            >> client(alice_hello(database=database))
        )

    refusal = b"\xff\x14\x04#42000" + message.encode()  # ER_DBACCESS_DENIED_ERROR
    assert (
        hello(b"secret")
        << expect_client(frame(2, refusal))
        << expect_event(AuthFailed, user="alice", reason=message, cause="database")
        << expect_closed("login refused: sqlgate: blocked by rule 'no-use'")
    )  # nothing went to the server
    alice = Identity("alice", frozenset({"dba"}), "account")
    assert asked == [(alice, "secret")]
    login_caps = (CLIENT_SIDE | int(C.CONNECT_WITH_DB)) | int(C.PLUGIN_AUTH_LENENC_CLIENT_DATA)
    assert (
        hello(b"shop")
        << expect_event(ClientAuthenticated, identity=alice)
        << expect_server(native_login(login_caps, database=b"shop"))
    )
    assert asked == [(alice, "secret"), (alice, "shop")]


def test_an_identity_the_session_gate_refuses_ends_the_login_with_1203() -> None:
    """The shell may refuse a proven identity that has too many sessions open: ERR 1203
    (a server's answer to a user over max_user_connections), before the gateway logs in
    to the target."""
    asked: list[Identity] = []
    message = "sqlgate: user 'alice' already has 2 sessions open on target 'orders'"
    admit = [False, True]

    def gate(identity: Identity) -> str | None:
        asked.append(identity)
        return None if admit.pop(0) else message

    def hello() -> Playbook:
        session = new_session()
        session.session_gate = gate
        return (
            Playbook(session)
            >> server(server_greeting(NONCE))
            << expect_client(lambda p: p.seq == 0)
            >> client(alice_hello())
        )

    refusal = b"\xff\xb3\x04#42000" + message.encode()  # ER_TOO_MANY_USER_CONNECTIONS
    assert (
        hello()
        << expect_client(frame(2, refusal))
        << expect_event(AuthFailed, user="alice", reason=message, cause="sessions")
        << expect_closed("login refused: sqlgate: user 'alice' already has 2 sessions")
    )  # nothing went to the server
    alice = Identity("alice", frozenset({"dba"}), "account")
    assert asked == [alice]
    assert (
        hello()
        << expect_event(ClientAuthenticated, identity=alice)
        << expect_server(lambda p: p.seq == 1)  # the gateway's own login to the target
    )
    assert asked == [alice, alice]


@pytest.mark.parametrize("collation", [10, 82], ids=["swe7_swedish_ci", "swe7_bin"])
def test_a_login_in_swe7_is_refused(collation: int) -> None:
    """In swe7 the bytes of `{`, `|`, `}` and `~` are the letters ä, ö, å and ü: a rule on
    the table kündigung did not see SELECT * FROM `k~ndigung`, nor masking the column
    gr~n of grün."""
    hello = alice_hello(charset=collation)
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(hello)
        << expect_client(is_err(2, 1045, "swe7", "log in with utf8mb4"))
        << expect_event(AuthFailed, user="alice")
        << expect_closed()
    )


def test_unknown_user_is_refused() -> None:
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(client_hello(b"mallory", native(ALICE_PW), capabilities=CLIENT_CAPS))
        << expect_client(is_err(2, 1045, "sqlgate: access denied", "'mallory'", "not a gateway"))
        << expect_event(AuthFailed, user="mallory")
        << expect_closed()
    )


def test_a_user_name_cannot_forge_lines_in_messages_or_the_log() -> None:
    forged = b"x\n2026-01-01 INFO sqlgate.server: session 9: admin authenticated\x1b[2J"
    session = new_session()
    assert (
        Playbook(session)
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(client_hello(forged, native(ALICE_PW), capabilities=CLIENT_CAPS))
        << expect_client(is_err(2, 1045, "user 'x\\n2026-01-01 INFO", "\\x1b[2J'"))
        << expect_event(
            AuthFailed,
            reason="user 'x\\n2026-01-01 INFO sqlgate.server: session 9: admin authenticated"
            "\\x1b[2J' is not a gateway account; log in with one of the accounts configured "
            "in [[accounts]]",
        )
        << expect_closed()
    )


def test_a_login_packet_over_the_limit_is_a_failed_login_answered_in_sequence() -> None:
    """A megabyte token (or any login packet over 64 KiB) is refused like a wrong password:
    1045 after the packet's own sequence id, and an AuthFailed that the shell records and
    counts (it used to be a protocol error the client could not even read)."""
    huge = client_hello(b"carol", b"x" * 70_000, capabilities=CLIENT_CAPS)
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(huge[:4096])  # refused from its header: the rest is never parsed ...
        << expect_client(is_err(2, 1045, "the login packet is longer than the 65536 bytes"))
        << expect_event(AuthFailed, user="", cause="client")
        << expect_event(SessionClosed)  # closed to everything but the rest of that packet
    )


def test_a_refused_login_packet_is_read_to_its_end_before_the_connection_closes() -> None:
    """Closing with the rest of the packet unread would make the kernel reset the
    connection under the 1045 the client is about to read."""
    session = new_session()
    session.server_data(server_greeting(NONCE))
    huge = client_hello(b"carol", b"x" * 70_000, capabilities=CLIENT_CAPS)
    session.client_data(huge[:4096])
    assert session.phase is Phase.CLOSED and session.draining and not session.close_requested
    assert b"login packet is longer" in b"".join(session.take_client_output())
    session.client_data(huge[4096:-1])
    assert not session.close_requested  # one byte to go
    session.client_data(huge[-1:])
    assert session.close_requested and not session.draining
    assert not session.take_client_output()  # nothing more is said
    stopped = new_session()
    stopped.server_data(server_greeting(NONCE))
    stopped.client_data(huge[:4096])
    stopped.close_now("the refused login packet did not end in time")  # the shell's limit
    assert stopped.close_requested and not stopped.draining


def test_account_outside_the_targets_groups_is_refused_after_its_password() -> None:
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(client_hello(b"bob", native(BOB_PW), capabilities=CLIENT_CAPS))
        << expect_client(is_err(2, 1045, "sqlgate: access denied", "may not reach target 'db1'"))
        << expect_event(AuthFailed, user="bob")
        << expect_closed()
    )


def _switch_to_native(seq: int) -> bytes:
    return frame(
        seq,
        packets.build_auth_switch_request(packets.AuthSwitchRequest(NATIVE_PASSWORD, SCRAMBLE)),
    )


@pytest.mark.parametrize(
    ("plugin", "first_response"),
    [
        (CACHING_SHA2_PASSWORD, auth.sha2_scramble(ALICE_PW, SCRAMBLE)),
        (CACHING_SHA2_PASSWORD, b""),  # libmysqlclient: no scramble for another plugin
        ("sha256_password", b"\x01"),
        (CLIENT_ED25519, b""),
        ("authentication_kerberos_client", b"token"),
        (CLEAR_PASSWORD, ALICE_PW + b"\0"),  # never in clear over a plain connection
    ],
    ids=["caching_sha2", "caching_sha2-empty", "sha256", "ed25519", "kerberos", "clear-text"],
)
def test_client_plugins_without_tls_are_switched_to_native(
    plugin: str, first_response: bytes
) -> None:
    hello = client_hello(b"alice", first_response, capabilities=CLIENT_CAPS, plugin=plugin)
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(hello)
        << expect_client(_switch_to_native(2))
        << expect_phase(Phase.CLIENT_AUTH)
        >> client(frame(3, native(ALICE_PW)))
        << expect_event(ClientAuthenticated, tls=False)
        << expect_server(lambda p: p.seq == 1)
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(4))
        << expect_event(SessionReady)
    )


def test_wrong_password_after_the_switch_is_refused() -> None:
    hello = client_hello(
        b"alice",
        auth.sha2_scramble(ALICE_PW, SCRAMBLE),
        capabilities=CLIENT_CAPS,
        plugin=CACHING_SHA2_PASSWORD,
    )
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(hello)
        << expect_client(_switch_to_native(2))
        >> client(frame(3, native(b"guess")))
        << expect_client(is_err(4, 1045, "wrong password"))
        << expect_event(AuthFailed, user="alice")
        << expect_closed()
    )


def _tls_sha2_login(pb: Playbook, tls: TlsFiles, *, password: bytes) -> Playbook:
    """Greeting, SSLRequest, TLS, then a caching_sha2_password HandshakeResponse (seq 2)."""
    caps = CLIENT_CAPS | int(C.SSL)
    return (
        pb
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: bool(packets.parse_greeting(p.payload).capabilities & C.SSL))
        >> client(ssl_request(CLIENT_CAPS))
        >> client_tls(tls.client_context())
        >> client(
            client_hello(
                b"alice",
                auth.sha2_scramble(password, SCRAMBLE),
                capabilities=caps,
                plugin=CACHING_SHA2_PASSWORD,
                seq=2,
            )
        )
    )


def test_caching_sha2_over_tls_full_auth_then_fast_auth_from_the_shared_cache(
    tls: TlsFiles,
) -> None:
    settings = make_settings(client_tls=tls.server_context())
    side = (CLIENT_CAPS | int(C.SSL)) & (OFFERED | int(C.SSL))
    first = Playbook(new_session(settings))
    assert (
        _tls_sha2_login(first, tls, password=ALICE_PW)
        << expect_client(frame(3, b"\x01\x04"))  # perform full authentication
        >> client(frame(4, ALICE_PW + b"\0"))  # the password, in clear inside TLS
        << expect_event(ClientAuthenticated, tls=True)
        << expect_server(lambda p: p.seq == 1)
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(5, side))
        << expect_event(SessionReady)
    )
    assert settings.sha2_cache["alice"] == auth.sha2_double_hash(ALICE_PW)

    second = Playbook(new_session(settings))
    assert (
        _tls_sha2_login(second, tls, password=ALICE_PW)
        << expect_client(frame(3, b"\x01\x03"))  # fast auth success
        << expect_event(ClientAuthenticated, tls=True)
        << expect_server(lambda p: p.seq == 1)
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(4, side))
        << expect_event(SessionReady)
    )


def test_caching_sha2_full_auth_with_a_wrong_password_is_refused(tls: TlsFiles) -> None:
    settings = make_settings(client_tls=tls.server_context())
    assert (
        _tls_sha2_login(Playbook(new_session(settings)), tls, password=b"guess")
        << expect_client(frame(3, b"\x01\x04"))
        >> client(frame(4, b"guess\0"))
        << expect_client(is_err(5, 1045, "wrong password", "using TLS"))
        << expect_event(AuthFailed, user="alice")
        << expect_closed()
    )
    assert "alice" not in settings.sha2_cache


SWITCH_NONCE = b"fresh-switch-nonce20"  # the gateway's second challenge, after a switch
assert len(SWITCH_NONCE) == 20

SWITCH_TO_SHA2 = b"\xfecaching_sha2_password\0" + SWITCH_NONCE + b"\0"
"""AuthSwitchRequest: 0xFE, the plugin's name, its challenge and the NUL servers add."""


def _tls_sha2_login_without_scramble(
    settings: SessionSettings, tls: TlsFiles, response: bytes = b""
) -> Playbook:
    """Greeting (naming mysql_native_password), SSLRequest, TLS, then what libmysqlclient
    and MariaDB Connector/C send with caching_sha2_password as their default plugin: no
    scramble (the greeting's was for another plugin), seq 2."""
    session = Session(settings, scramble=SCRAMBLE, random_bytes=lambda n: SWITCH_NONCE[:n])
    caps = CLIENT_CAPS | int(C.SSL)
    return (
        Playbook(session)
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: packets.parse_greeting(p.payload).auth_plugin == NATIVE_PASSWORD)
        >> client(ssl_request(CLIENT_CAPS))
        >> client_tls(tls.client_context())
        >> client(
            client_hello(b"alice", response, capabilities=caps, plugin=CACHING_SHA2_PASSWORD, seq=2)
        )
    )


@pytest.mark.parametrize(
    "response", [b"", b"\0", native(ALICE_PW)], ids=["empty", "nul", "20-byte"]
)
def test_caching_sha2_without_a_scramble_over_tls_is_switched_to_it_with_a_fresh_nonce(
    tls: TlsFiles, response: bytes
) -> None:
    """A MySQL 8 server answers a client that sent no caching_sha2 scramble with an
    AuthSwitchRequest to the plugin; a "perform full auth" instead makes libmysqlclient
    fail (2000 Unknown MySQL error) and Connector/C too (2012 Error in server handshake)."""
    settings = make_settings(client_tls=tls.server_context())
    side = (CLIENT_CAPS | int(C.SSL)) & (OFFERED | int(C.SSL))
    assert (
        _tls_sha2_login_without_scramble(settings, tls, response)
        << expect_client(frame(3, SWITCH_TO_SHA2))
        << expect_phase(Phase.CLIENT_AUTH)
        >> client(frame(4, auth.sha2_scramble(ALICE_PW, SWITCH_NONCE)))
        << expect_client(frame(5, b"\x01\x04"))  # perform full authentication
        >> client(frame(6, ALICE_PW + b"\0"))  # the password, in clear inside TLS
        << expect_event(ClientAuthenticated, tls=True)
        << expect_server(lambda p: p.seq == 1)
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(7, side))
        << expect_event(SessionReady)
    )
    assert settings.sha2_cache["alice"] == auth.sha2_double_hash(ALICE_PW)

    # the next login proves the password with a scramble of the switch's nonce: fast auth
    assert (
        _tls_sha2_login_without_scramble(settings, tls, response)
        << expect_client(frame(3, SWITCH_TO_SHA2))
        >> client(frame(4, auth.sha2_scramble(ALICE_PW, SWITCH_NONCE)))
        << expect_client(frame(5, b"\x01\x03"))  # fast auth success
        << expect_event(ClientAuthenticated, tls=True)
        << expect_server(lambda p: p.seq == 1)
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(6, side))
        << expect_event(SessionReady)
    )


def test_caching_sha2_after_the_switch_a_scramble_of_the_greetings_nonce_is_not_fast_auth(
    tls: TlsFiles,
) -> None:
    settings = make_settings(client_tls=tls.server_context())
    settings.sha2_cache["alice"] = auth.sha2_double_hash(ALICE_PW)
    assert (
        _tls_sha2_login_without_scramble(settings, tls)
        << expect_client(frame(3, SWITCH_TO_SHA2))
        >> client(frame(4, auth.sha2_scramble(ALICE_PW, SCRAMBLE)))  # the old challenge
        << expect_client(frame(5, b"\x01\x04"))
        >> client(frame(6, b"guess\0"))
        << expect_client(is_err(7, 1045, "wrong password", "using TLS"))
        << expect_event(AuthFailed, user="alice")
        << expect_closed()
    )


TOKEN = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYXJvbCJ9.c2ln"


def _tls_token_hello(pb: Playbook, tls: TlsFiles, *, plugin: str, response: bytes) -> Playbook:
    caps = CLIENT_CAPS | int(C.SSL)
    return (
        pb
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(ssl_request(CLIENT_CAPS))
        >> client_tls(tls.client_context())
        >> client(client_hello(b"carol", response, capabilities=caps, plugin=plugin, seq=2))
    )


def test_a_token_user_is_switched_to_clear_text_over_tls_and_waits_for_the_shell(
    tls: TlsFiles,
) -> None:
    settings = make_settings(client_tls=tls.server_context(), tokens=True)
    side = (CLIENT_CAPS | int(C.SSL)) & (OFFERED | int(C.SSL))
    carol = Identity("carol", frozenset({"ops"}), "token", subject="u-1", token_id="j-1")
    switch = frame(
        3, packets.build_auth_switch_request(packets.AuthSwitchRequest(CLEAR_PASSWORD, SCRAMBLE))
    )
    assert (
        _tls_token_hello(
            Playbook(new_session(settings)),
            tls,
            plugin=NATIVE_PASSWORD,
            response=native(b"x"),
        )
        << expect_client(switch)
        >> client(frame(4, TOKEN + b"\0"))
        << expect_event(TokenPresented, user="carol", token=TOKEN)
        << expect_phase(Phase.CLIENT_AUTH)
        >> shell("accept_token", lambda s: s.accept_token(carol))
        << expect_event(ClientAuthenticated, identity=carol, tls=True)
        << expect_server(lambda p: p.seq == 1)
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(5, side))
        << expect_event(SessionReady)
    )


def test_a_token_sent_up_front_as_clear_text_is_verified_without_a_switch(
    tls: TlsFiles,
) -> None:
    settings = make_settings(client_tls=tls.server_context(), tokens=True)
    assert (
        _tls_token_hello(
            Playbook(new_session(settings)), tls, plugin=CLEAR_PASSWORD, response=TOKEN + b"\0"
        )
        << expect_event(TokenPresented, user="carol", token=TOKEN)
        >> shell("refuse_token", lambda s: s.refuse_token("carol", "the token expired"))
        << expect_client(is_err(3, 1045, "sqlgate: access denied: the token expired"))
        << expect_event(AuthFailed, user="carol", reason="the token expired")
        << expect_closed()
    )


def test_a_token_user_outside_the_targets_groups_is_refused(tls: TlsFiles) -> None:
    settings = make_settings(client_tls=tls.server_context(), tokens=True)
    visitor = Identity("carol", frozenset({"visitors"}), "token")
    assert (
        _tls_token_hello(
            Playbook(new_session(settings)), tls, plugin=CLEAR_PASSWORD, response=TOKEN + b"\0"
        )
        << expect_event(TokenPresented)
        >> shell("accept_token", lambda s: s.accept_token(visitor))
        << expect_client(is_err(3, 1045, "may not reach target 'db1'", "visitors"))
        << expect_event(AuthFailed, user="carol")
        << expect_closed()
    )


def test_a_token_user_without_tls_is_told_tls_is_required() -> None:
    assert (
        Playbook(new_session(make_settings(tokens=True)))
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(client_hello(b"carol", TOKEN, capabilities=CLIENT_CAPS, plugin=CLEAR_PASSWORD))
        << expect_client(is_err(2, 1045, "'carol'", "only over TLS", "ssl_mode=REQUIRED"))
        << expect_event(AuthFailed, user="carol")
        << expect_closed()
    )


# ======================================================== 3. the gateway's backend login


def _to_backend(pb: Playbook, greeting: bytes) -> Playbook:
    """Greeting and a plain native client login; the backend login is the next thing."""
    return (
        pb
        >> server(greeting)
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello())
        << expect_event(ClientAuthenticated)
    )


BACKEND_CAPS = (CLIENT_SIDE & ~int(C.CONNECT_WITH_DB)) | int(C.PLUGIN_AUTH_LENENC_CLIENT_DATA)


def test_backend_auth_switch_to_client_ed25519_signs_the_servers_nonce() -> None:
    ed_nonce = bytes(range(100, 132))  # MariaDB's 32-byte nonce, sent as is

    def signature(pkt: Packet) -> None:
        assert pkt.seq == 3
        assert len(pkt.payload) == 64
        public = auth.ed25519_password_public_key(BACKEND_PW)
        assert auth.ed25519_verify(public, ed_nonce, pkt.payload)

    switch = packets.build_auth_switch_request(packets.AuthSwitchRequest(CLIENT_ED25519, ed_nonce))
    assert (
        _to_backend(Playbook(new_session()), server_greeting(NONCE))
        << expect_server(native_login(BACKEND_CAPS))
        >> server(frame(2, switch))
        << expect_server(signature)
        >> server(Reply(4).ok().data)
        << expect_client(ok_for_client(2))
        << expect_event(SessionReady)
    )


def _sha2_login(seq: int = 1, *, ssl: bool = False) -> Callable[[Packet], None]:
    def check(pkt: Packet) -> None:
        login = packets.parse_handshake_response(pkt.payload)
        assert pkt.seq == seq
        assert login.auth_plugin == CACHING_SHA2_PASSWORD
        assert login.auth_response == auth.sha2_scramble(BACKEND_PW, NONCE)
        assert login.user == b"gw_svc"
        assert bool(login.capabilities & C.SSL) is ssl
        assert login.capabilities & NEVER_NEGOTIATED == 0

    check.__name__ = f"caching_sha2 login seq={seq}"
    return check


def test_backend_caching_sha2_fast_auth() -> None:
    assert (
        _to_backend(Playbook(new_session()), server_greeting(NONCE, plugin=CACHING_SHA2_PASSWORD))
        << expect_server(_sha2_login())
        >> server(frame(2, b"\x01\x03"))  # fast auth success: an OK follows
        >> server(Reply(3).ok().data)
        << expect_client(ok_for_client(2))
        << expect_event(SessionReady)
    )


def test_backend_caching_sha2_full_auth_over_plain_uses_the_servers_rsa_key(
    rsa_pair: tuple[bytes, bytes],
) -> None:
    private_pem, public_pem = rsa_pair

    def encrypted_password(pkt: Packet) -> None:
        assert pkt.seq == 5
        assert auth.sha2_rsa_decrypt(pkt.payload, NONCE, private_pem) == BACKEND_PW

    assert (
        _to_backend(Playbook(new_session()), server_greeting(NONCE, plugin=CACHING_SHA2_PASSWORD))
        << expect_server(_sha2_login())
        >> server(frame(2, b"\x01\x04"))  # perform full authentication
        << expect_server(frame(3, b"\x02"))  # the gateway asks for the public key
        >> server(frame(4, b"\x01" + public_pem))
        << expect_server(encrypted_password)
        >> server(Reply(6).ok().data)
        << expect_client(ok_for_client(2))
        << expect_event(SessionReady, server_tls=False)
    )


def test_backend_caching_sha2_full_auth_after_preferred_fell_back_to_plain_is_refused(
    tls: TlsFiles,
) -> None:
    """``tls = "preferred"`` and a server that offers no TLS, which may be an impostor at
    its address: asked for the whole password, the gateway fetched the server's public
    key in plain and sent the vaulted password sealed with whatever key came back."""
    settings = make_settings(backend_tls="preferred", backend_ctx=tls.client_context())
    no_ssl = server_greeting(
        NONCE, plugin=CACHING_SHA2_PASSWORD, capabilities=SERVER_CAPABILITIES & ~int(C.SSL)
    )
    assert (
        _to_backend(Playbook(new_session(settings)), no_ssl)
        << expect_server(_sha2_login())
        >> server(frame(2, b"\x01\x04"))  # perform full authentication
        << expect_client(is_err(2, 1045, "target 'db1'", "without TLS", 'tls = "required"'))
        << expect_event(AuthFailed, user="alice", cause="target")
        << expect_closed()
    )  # and no request for the key went to the server: the playbook checks that


def test_backend_caching_sha2_full_auth_over_tls_sends_the_password_inside_tls(
    tls: TlsFiles,
) -> None:
    settings = make_settings(backend_tls="required", backend_ctx=tls.client_context())
    ssl_req = frame(
        1,
        packets.build_ssl_request(packets.SSLRequest(BACKEND_CAPS | int(C.SSL), MAX_PACKET, 45)),
    )
    assert (
        _to_backend(
            Playbook(new_session(settings)), server_greeting(NONCE, plugin=CACHING_SHA2_PASSWORD)
        )
        << expect_server(ssl_req)
        >> server_tls(tls.server_context())
        << expect_server(_sha2_login(2, ssl=True))
        >> server(frame(3, b"\x01\x04"))
        << expect_server(frame(4, BACKEND_PW + b"\0"))
        >> server(Reply(5).ok().data)
        << expect_client(ok_for_client(2))
        << expect_event(SessionReady, server_tls=True)
        << expect_phase(Phase.COMMAND)
    )


def test_backend_error_is_reported_to_the_client_as_access_denied_naming_the_target() -> None:
    denied = Reply(2).err(1045, "Access denied for user 'gw_svc'@'10.1.1.1'", "28000").data
    assert (
        _to_backend(Playbook(new_session()), server_greeting(NONCE))
        << expect_server(native_login(BACKEND_CAPS))
        >> server(denied)
        << expect_client(is_err(2, 1045, "sqlgate: access denied", "target 'db1'", "gw_svc"))
        << expect_event(AuthFailed, user="alice", cause="target")  # not the client's doing
        << expect_closed("backend login failed")
    )


def test_tls_required_on_a_server_without_ssl_is_refused_before_any_login(tls: TlsFiles) -> None:
    settings = make_settings(backend_tls="required", backend_ctx=tls.client_context())
    no_ssl = server_greeting(NONCE, capabilities=SERVER_CAPABILITIES & ~int(C.SSL))
    assert (
        _to_backend(Playbook(new_session(settings)), no_ssl)
        << expect_client(is_err(2, 1045, "target 'db1' requires TLS"))
        << expect_event(AuthFailed, user="alice")
        << expect_closed()
    )  # and not one byte went to the server: the playbook checks that at the end


def test_tls_preferred_on_a_server_without_ssl_logs_in_plain(tls: TlsFiles) -> None:
    settings = make_settings(backend_tls="preferred", backend_ctx=tls.client_context())
    no_ssl = server_greeting(NONCE, capabilities=SERVER_CAPABILITIES & ~int(C.SSL))
    assert (
        _to_backend(Playbook(new_session(settings)), no_ssl)
        << expect_server(native_login(BACKEND_CAPS))
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(2))
        << expect_event(SessionReady, server_tls=False)
    )


def test_backend_refusing_the_connection_instead_of_greeting_is_passed_on() -> None:
    too_many = frame(0, packets.build_err(1040, "Too many connections", "08004"))
    assert (
        Playbook(new_session())
        >> server(too_many)
        << expect_client(is_err(0, 1040, "target 'db1' refused the connection", "Too many"))
        << expect_closed("refused the connection")
    )


def test_backend_asking_for_a_clear_password_on_a_plain_connection_is_refused() -> None:
    switch = packets.build_auth_switch_request(packets.AuthSwitchRequest(CLEAR_PASSWORD, b""))
    assert (
        _to_backend(Playbook(new_session()), server_greeting(NONCE))
        << expect_server(native_login(BACKEND_CAPS))
        >> server(frame(2, switch))
        << expect_client(is_err(2, 1045, "clear text"))
        << expect_event(AuthFailed)
        << expect_closed()
    )


def test_malformed_public_key_from_the_backend_closes_the_session_cleanly() -> None:
    """BUG: a PEM that does not load raises ValueError out of ``server_data``."""
    bad_pem = b"\x01-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n"
    assert (
        Playbook(new_session(), ignore=(AuthFailed,))
        >> server(server_greeting(NONCE, plugin=CACHING_SHA2_PASSWORD))
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello())
        << expect_event(ClientAuthenticated)
        << expect_server(_sha2_login())
        >> server(frame(2, b"\x01\x04"))
        << expect_server(frame(3, b"\x02"))
        >> server(frame(4, bad_pem))
        << expect_client(is_err(2, None, "db1"))
        << expect_closed()
    )


@pytest.mark.parametrize("deprecate_eof", [True, False])
def test_the_backend_sessions_sql_mode_is_asked_before_the_client_gets_its_ok(
    deprecate_eof: bool,
) -> None:
    """``read_sql_mode``: one question after the backend OK; the client's OK (with the
    answer's status) and SessionReady, naming the mode and the character sets the
    session started in (an init_connect may have set them), wait for its answer."""
    caps = CLIENT_CAPS if deprecate_eof else CLIENT_CAPS & ~int(C.DEPRECATE_EOF)
    side = caps & OFFERED
    login_caps = (side & ~int(C.CONNECT_WITH_DB)) | int(C.PLUGIN_AUTH_LENENC_CLIENT_DATA)
    settings = dataclasses.replace(make_settings(), read_sql_mode=True)
    in_trans = AUTOCOMMIT | int(ServerStatus.IN_TRANS)
    answer = Reply(1).text_result(
        [column(b"m"), column(b"c"), column(b"r")],
        [[b"PIPES_AS_CONCAT", b"gbk", None]],
        deprecate_eof=deprecate_eof,
        status=in_trans,
    )
    assert (
        Playbook(new_session(settings))
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello(caps=caps))
        << expect_event(ClientAuthenticated)
        << expect_server(native_login(login_caps))
        >> client(query(b"SELECT 1"))  # pipelined behind the login: it waits
        >> server(Reply(2).ok().data)
        << expect_server(query(SQL_MODE_QUERY))
        >> server(answer.data, chunk=3)
        << expect_client(ok_for_client(2, side, status=in_trans))
        << expect_event(
            SessionReady, server_tls=False, sql_mode="PIPES_AS_CONCAT", charsets=("gbk", None)
        )
        << expect_phase(Phase.COMMAND)
        << expect_event(CommandReceived)
    )


def test_an_error_answer_to_the_sql_mode_question_leaves_the_mode_unknown() -> None:
    settings = dataclasses.replace(make_settings(), read_sql_mode=True)
    login_caps = (CLIENT_SIDE & ~int(C.CONNECT_WITH_DB)) | int(C.PLUGIN_AUTH_LENENC_CLIENT_DATA)
    assert (
        Playbook(new_session(settings))
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello())
        << expect_event(ClientAuthenticated)
        << expect_server(native_login(login_caps))
        >> server(Reply(2).ok().data)
        << expect_server(query(SQL_MODE_QUERY))
        >> server(Reply(1).err(1227, "no, not you").data)
        << expect_client(ok_for_client(2))
        << expect_event(SessionReady, sql_mode=None, sql_mode_error="1227: no, not you")
        << expect_phase(Phase.COMMAND)
    )


# -------------------------------------------- a login that ends before the backend login

FAREWELL_CAPS = REQUIRED | int(C.PLUGIN_AUTH_LENENC_CLIENT_DATA)
"""The gateway's own login when the client's ended first: no database, no attributes."""
QUIT = frame(0, bytes([Command.QUIT]))


def farewell_login(*, seq: int = 1) -> bytes:
    return frame(
        seq,
        packets.build_handshake_response(
            packets.HandshakeResponse(
                capabilities=FAREWELL_CAPS,
                max_packet=MAX_PACKET,
                charset=45,
                user=b"gw_svc",
                auth_response=native(BACKEND_PW, NONCE),
                database=None,
                auth_plugin=NATIVE_PASSWORD,
            )
        ),
    )


def _parting(session: Session) -> Session:
    parting = session.parting
    assert parting is not None, "the target's connection is closed mid-handshake"
    assert session.take_server_output() == []  # the client's session sends it nothing
    return parting


def _quits_after_login(parting: Session) -> None:
    """The parting session logs in as the vaulted user, then quits once it is in."""
    assert b"".join(parting.take_server_output()) == farewell_login()
    assert not parting.close_requested
    parting.server_data(Reply(2).ok().data)
    assert b"".join(parting.take_server_output()) == QUIT
    assert parting.close_requested
    assert parting.parting is None  # its own end is no reason for another


@pytest.mark.parametrize(
    "how",
    ["wrong password", "client leaves", "bad packet", "login timeout", "shell closes"],
)
def test_a_login_that_ends_first_leaves_the_target_by_logging_in_and_quitting(how: str) -> None:
    """A client login that ends before the gateway's (refused, abandoned, broken, too
    slow) does not leave the target's connection in its handshake: MariaDB would count
    each as an error of the gateway's address and block it past max_connect_errors."""
    session = new_session()
    session.server_data(server_greeting(NONCE))
    session.take_client_output()
    if how == "wrong password":
        session.client_data(client_hello(b"alice", native(b"guess"), capabilities=CLIENT_CAPS))
    elif how == "client leaves":
        session.client_closed()
    elif how == "bad packet":
        session.client_data(frame(7, b"\x00"))
    elif how == "login timeout":
        session.login_timed_out(10)
    else:
        session.close_now("the refused login packet did not end in time")
    assert session.close_requested and session.phase is Phase.CLOSED
    _quits_after_login(_parting(session))


def test_a_client_that_leaves_before_the_greeting_parts_once_the_greeting_comes() -> None:
    session = new_session()
    greeting = server_greeting(NONCE)
    session.server_data(greeting[:9])  # part of it before the client leaves
    session.client_closed()
    parting = _parting(session)
    assert parting.take_server_output() == []
    session.server_data(greeting[9:])  # the shell had not handed the connection over yet
    assert session.take_client_output() == []
    _quits_after_login(parting)


def test_the_parting_login_follows_the_target_through_an_auth_switch() -> None:
    session = new_session()
    session.server_data(server_greeting(NONCE))
    session.client_closed()
    parting = _parting(session)
    assert b"".join(parting.take_server_output()) == farewell_login()
    other = b"another-nonce-987654"
    switch = packets.build_auth_switch_request(packets.AuthSwitchRequest(NATIVE_PASSWORD, other))
    parting.server_data(frame(2, switch))
    assert b"".join(parting.take_server_output()) == frame(3, native(BACKEND_PW, other))
    parting.server_data(Reply(4).ok().data)
    assert b"".join(parting.take_server_output()) == QUIT
    assert parting.close_requested


def test_the_parting_login_refused_by_the_target_just_ends() -> None:
    session = new_session()
    session.server_data(server_greeting(NONCE))
    session.client_closed()
    parting = _parting(session)
    parting.take_server_output()
    parting.server_data(Reply(2).err(1045, "Access denied").data)
    assert parting.take_server_output() == []
    assert parting.close_requested and parting.parting is None


def test_no_parting_when_the_target_ended_the_handshake_or_the_login_went_on() -> None:
    refused = new_session()
    refused.server_data(frame(0, packets.build_err(1129, "Host '10.0.0.1' is blocked")))
    assert refused.close_requested and refused.parting is None
    closed = new_session()
    closed.server_data(server_greeting(NONCE))
    closed.server_closed()
    assert closed.close_requested and closed.parting is None
    broken = new_session()
    broken.server_data(frame(0, b"\x0a\x00"))  # not a greeting
    assert broken.close_requested and broken.parting is None
    pb = ready()
    pb.session.client_closed()
    assert pb.session.close_requested and pb.session.parting is None


# ============================================================== 4. the command phase

COLS = [column(b"id", FieldType.LONGLONG), column(b"name")]
ROWS = [[b"1", b"ada"], [b"2", None], [b"3", b"grace"]]


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_query_and_text_result_pass_byte_for_byte(deprecate_eof: bool) -> None:
    q = query(b"SELECT id, name FROM t")
    result = Reply(1).text_result(COLS, ROWS, deprecate_eof=deprecate_eof).data
    assert (
        ready(deprecate_eof=deprecate_eof)
        >> client(q)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(result)
        << expect_client(result)
        << completed(1, rows=3)
    )


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_multiple_result_sets_complete_only_after_the_last(deprecate_eof: bool) -> None:
    q = query(b"CALL two_results()")
    reply = Reply(1).text_result(
        COLS, ROWS[:2], deprecate_eof=deprecate_eof, status=AUTOCOMMIT | MORE_RESULTS
    )
    first = reply.data
    reply.parts.clear()
    reply.text_result(COLS, ROWS, deprecate_eof=deprecate_eof, status=AUTOCOMMIT | MORE_RESULTS)
    reply.ok(status=AUTOCOMMIT, affected=0)  # the CALL's own final OK
    rest = reply.data
    assert (
        ready(deprecate_eof=deprecate_eof)
        >> client(q)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(first)
        << expect_client(first)  # no CommandCompleted yet: more results follow
        >> server(rest)
        << expect_client(rest)
        << completed(1, rows=5)
    )


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_ok_with_more_results_then_a_result_set(deprecate_eof: bool) -> None:
    q = query(b"UPDATE t SET x = 1; SELECT id, name FROM t")
    first = Reply(1).ok(affected=4, status=AUTOCOMMIT | MORE_RESULTS)
    both = first.text_result(COLS, ROWS, deprecate_eof=deprecate_eof).data
    assert (
        ready(deprecate_eof=deprecate_eof)
        >> client(q)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(both)
        << expect_client(both)
        << completed(1, rows=3, affected=4)
    )


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_result_fed_one_byte_at_a_time_reaches_the_client_unchanged(deprecate_eof: bool) -> None:
    q = query(b"SELECT id, name FROM t")
    result = Reply(1).text_result(COLS, ROWS, deprecate_eof=deprecate_eof).data
    assert (
        ready(deprecate_eof=deprecate_eof)
        >> client(q, chunk=1)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(result, chunk=1)
        << expect_client(result)
        << completed(1, rows=3)
    )


def test_error_response_passes_and_completes_with_its_code() -> None:
    q = query(b"SELECT * FROM missing")
    err = Reply(1).err(1146, "Table 'app.missing' doesn't exist", "42S02").data
    assert (
        ready()
        >> client(q)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(err)
        << expect_client(err)
        << completed(1, error=1146)
    )


def _big_row(kind: str) -> list[bytes]:
    if kind == "big-first-value":  # starts 0xFE (8-byte length): the row is over 16 MiB
        return [b"x" * (MAX_PAYLOAD + 1000), b"1"]
    if kind == "big-second-value":
        return [b"1", b"y" * (MAX_PAYLOAD + 1000)]
    # a payload of exactly 0xFFFFFF bytes, ended by an empty frame
    return [b"1", b"z" * (MAX_PAYLOAD - 2 - 4)]


@pytest.mark.parametrize("kind", ["big-first-value", "big-second-value", "exactly-16MiB"])
@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_row_over_16_mib_passes_through_continuation_frames(kind: str, deprecate_eof: bool) -> None:
    q = query(b"SELECT blob_col FROM t")
    row = _big_row(kind)
    payload = packets.build_text_row(row)
    assert len(payload) >= MAX_PAYLOAD
    cols = [column(b"a", FieldType.BLOB), column(b"b", FieldType.BLOB)]
    result = (
        Reply(1)
        .columns(cols, deprecate_eof=deprecate_eof)
        .text_rows([[b"0", b"small"], row, [b"2", b"small"]])
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    assert (
        ready(deprecate_eof=deprecate_eof)
        >> client(q)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(result, chunk=1 << 20)
        << expect_client(result)
        << completed(1, rows=3)
    )


def _prepare_ok(stmt: int, columns: int, params: int) -> bytes:
    return packets.build_stmt_prepare_ok(packets.StmtPrepareOk(stmt, columns, params, 0))


def _execute(stmt: int, flags: int = 0, params: bytes = b"") -> bytes:
    return command(Command.STMT_EXECUTE, struct.pack("<IBI", stmt, flags, 1) + params)


TWO_BIGINT_PARAMS = (
    b"\x00"  # NULL bitmap
    + b"\x01"  # new params bound
    + b"\x08\x00\x08\x00"  # two LONGLONG
    + (5).to_bytes(8, "little")
    + (10).to_bytes(8, "little")
)


def _binary_rows(*values: int) -> list[list[bytes | None]]:
    return [[v.to_bytes(8, "little"), b"\x03abc"] for v in values]


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_prepared_statement_prepare_then_execute_with_binary_rows(deprecate_eof: bool) -> None:
    prep = command(Command.STMT_PREPARE, b"SELECT id, name FROM t WHERE id BETWEEN ? AND ?")
    prep_ok = Reply(1).packet(_prepare_ok(7, columns=2, params=2))
    prep_ok.packet(column(b"?", FieldType.LONGLONG)).packet(column(b"?", FieldType.LONGLONG))
    if not deprecate_eof:
        prep_ok.eof()
    prep_ok.packet(COLS[0]).packet(COLS[1])
    if not deprecate_eof:
        prep_ok.eof()
    execute = _execute(7, params=TWO_BIGINT_PARAMS)
    rows = (
        Reply(1)
        .columns(COLS, deprecate_eof=deprecate_eof)
        .binary_rows(_binary_rows(5, 6, 7, 8))
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    pb = ready(deprecate_eof=deprecate_eof)
    assert (
        pb
        >> client(prep)
        << received(1, prep)
        >> allow(1)
        << expect_server(prep)
        >> server(prep_ok.data)
        << expect_client(prep_ok.data)
        << completed(1)
        >> client(execute)
        << received(2, execute)
        >> allow(2)
        << expect_server(execute)
        >> server(rows)
        << expect_client(rows)
        << completed(2, rows=4)
    )
    assert pb.session.statements == {7: 2}


def test_prepare_without_parameters_or_columns_is_one_packet() -> None:
    prep = command(Command.STMT_PREPARE, b"DO 1")
    prep_ok = Reply(1).packet(_prepare_ok(8, columns=0, params=0)).data
    ping = command(Command.PING)
    assert (
        ready(deprecate_eof=False)
        >> client(prep + ping)
        << received(1, prep)
        << received(2, ping)
        >> allow(1)
        << expect_server(prep)
        >> allow(2)
        << expect_server(ping)
        >> server(prep_ok + Reply(1).ok().data)
        << expect_client(prep_ok + Reply(1).ok().data)
        << completed(1)
        << completed(2)
    )


def test_execute_opening_a_cursor_then_fetch_until_the_last_row() -> None:
    execute = _execute(7, flags=1, params=TWO_BIGINT_PARAMS)  # CURSOR_TYPE_READ_ONLY
    opened = Reply(1).columns(COLS, deprecate_eof=False, status=AUTOCOMMIT | CURSOR_EXISTS).data
    fetch = command(Command.STMT_FETCH, struct.pack("<II", 7, 2))
    batch = Reply(1).binary_rows(_binary_rows(5, 6)).eof(status=AUTOCOMMIT | CURSOR_EXISTS).data
    last = (
        Reply(1)
        .binary_rows(_binary_rows(7))
        .eof(status=AUTOCOMMIT | CURSOR_EXISTS | LAST_ROW_SENT)
        .data
    )
    assert (
        ready(deprecate_eof=False)
        >> client(execute)
        << received(1, execute)
        >> allow(1)
        << expect_server(execute)
        >> server(opened)
        << expect_client(opened)
        << completed(1)  # the cursor is open: no rows follow until a fetch
        >> client(fetch)
        << received(2, fetch)
        >> allow(2)
        << expect_server(fetch)
        >> server(batch)
        << expect_client(batch)
        << completed(2, rows=2)
        >> client(fetch)
        << received(3, fetch)
        >> allow(3)
        << expect_server(fetch)
        >> server(last)
        << expect_client(last)
        << completed(3, rows=1)
    )


def test_stmt_close_and_send_long_data_expect_no_answer() -> None:
    long_data = command(Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 7, 0) + b"a chunk")
    close = command(Command.STMT_CLOSE, struct.pack("<I", 7))
    ping = command(Command.PING)
    pong = Reply(1).ok().data
    pb = ready()
    pb.session.statements[7] = 1  # as if prepared earlier
    assert (
        pb
        >> client(long_data + close + ping)
        << received(1, long_data)
        << received(2, close)
        << received(3, ping)
        >> allow(1)
        << expect_server(long_data)
        << completed(1)
        >> allow(2)
        << expect_server(close)
        << completed(2)
        >> allow(3)
        << expect_server(ping)
        >> server(pong)
        << expect_client(pong)  # the ping's OK, not taken for an answer to the others
        << completed(3)
    )
    assert 7 not in pb.session.statements
    assert not pb.session.busy


UNAVAILABLE = "sqlgate: audit ledger unavailable"


def test_a_refused_stmt_close_gets_no_answer_and_the_next_query_gets_its_own() -> None:
    """COM_STMT_CLOSE has no answer: a refused one (the ledger is unavailable) must not be
    answered either, or the client reads that ERR as the answer to its next command and
    every answer after is one late. The statement is still prepared on the server, and
    the gateway still knows it (so it is closed for the client: see the next test)."""
    close = command(Command.STMT_CLOSE, struct.pack("<I", 7))
    pb = ready()
    pb.session.statements[7] = 1  # as if prepared earlier
    pb.session.prepared_sql[7] = b"SELECT ?"
    assert (
        pb
        >> client(close + Q3)
        << received(1, close)
        << received(2, Q3)
        >> refuse(1, 1105, UNAVAILABLE)
        << completed(1, error=1105, sent=False)  # nothing to the client, nor the server
        >> refuse(2, 1105, UNAVAILABLE)
        << expect_client(local_err(1105, UNAVAILABLE, seq=1))  # the query's, once
        << completed(2, error=1105, sent=False)
        >> client(Q3)
        << received(3, Q3)
        >> allow(3)
        << expect_server(Q3)
        >> server(R3)
        << expect_client(R3)
        << completed(3, rows=1, sent=True)
    )
    assert pb.session.statements == {7: 1}  # not closed on the server: still known
    assert pb.session.prepared_sql == {7: b"SELECT ?"}
    assert not pb.session.busy


def _closed_here(statement: int) -> Callable[[object], bool]:
    def check(why: object) -> bool:
        return why == (
            f"not run: the session closed statement {statement} (its COM_STMT_CLOSE was refused)"
        )

    return check


def test_a_statement_whose_close_was_refused_runs_no_more() -> None:
    """A refused COM_STMT_CLOSE did not reach the server, where the statement stays
    prepared, and the client holds it closed. An execute, a fetch of its cursor or a reset
    of it went on to the server and ran it: a closed statement gave rows. They are now
    answered as the server answers a closed statement (1243), nothing is sent, and a
    later close of it goes to the server."""
    close = command(Command.STMT_CLOSE, struct.pack("<I", 7))
    execute = _execute(7)
    fetch = command(Command.STMT_FETCH, struct.pack("<II", 7, 10))
    reset = command(Command.STMT_RESET, struct.pack("<I", 7))
    long_data = command(Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 7, 0) + b"a chunk")
    message = (
        "sqlgate: Unknown prepared statement handler (7): this session closed it (its "
        "COM_STMT_CLOSE was refused: audit ledger unavailable); prepare the statement again"
    )
    pb = ready()
    pb.session.statements[7] = 1  # as if prepared earlier
    pb.session.prepared_sql[7] = b"SELECT ?"
    assert (
        pb
        >> client(close + execute)
        << received(1, close)
        << received(2, execute)
        >> refuse(1, 1105, UNAVAILABLE)
        << completed(1, error=1105)
        >> allow(2)  # the ledger is back
        << expect_client(local_err(1243, message, seq=1))
        << completed(2, error=1243, refused=_closed_here(7), sent=False)
        >> client(fetch)
        << received(3, fetch)
        >> allow(3)
        << expect_client(local_err(1243, message, seq=1))
        << completed(3, error=1243, refused=_closed_here(7))
        >> client(reset)
        << received(4, reset)
        >> allow(4)
        << expect_client(local_err(1243, message, seq=1))
        << completed(4, error=1243, refused=_closed_here(7))
        >> client(long_data)
        << received(5, long_data)
        >> allow(5)
        << completed(5, error=1243, refused=_closed_here(7))  # no answer: none sent
        >> client(close)  # closed again: this one goes, and frees it on the server
        << received(6, close)
        >> allow(6)
        << expect_server(close)
        << completed(6)
    )
    assert 7 not in pb.session.statements and not pb.session._close_refused
    assert not pb.session.busy


def test_a_reset_of_the_connection_forgets_the_refused_closes() -> None:
    """COM_RESET_CONNECTION closes every statement on the server; the ids it gives after
    are new statements, run as their own prepares decided."""
    close = command(Command.STMT_CLOSE, struct.pack("<I", 7))
    reset = command(Command.RESET_CONNECTION)
    execute = _execute(7)
    pb = ready()
    pb.session.statements[7] = 1
    pb.session.prepared_sql[7] = b"SELECT ?"
    assert (
        pb
        >> client(close)
        << received(1, close)
        >> refuse(1, 1105, UNAVAILABLE)
        << completed(1, error=1105)
        >> client(reset)
        << received(2, reset)
        >> allow(2)
        << expect_server(reset)
        >> server(Reply(1).ok().data)
        << expect_client(Reply(1).ok().data)
        << completed(2)
    )
    assert not pb.session._close_refused
    pb.session.statements[7] = 1  # prepared again after the reset, under the same id
    assert pb >> client(execute) << received(3, execute) >> allow(3) << expect_server(execute)


#: why a command was not sent once the session stopped forwarding (the ledger says it)
WHY = "not run: the token expired before it was sent (token-expired)"


def test_a_session_that_stopped_forwarding_answers_no_command_that_has_no_answer() -> None:
    expired = "sqlgate: blocked by rule 'token-expired': the token expired"
    long_data = command(Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 7, 0) + b"a chunk")
    close = command(Command.STMT_CLOSE, struct.pack("<I", 7))
    assert (
        ready()
        >> shell("stop_forwarding", lambda session: session.stop_forwarding(1227, expired, WHY))
        >> client(long_data + close + Q3)
        << received(1, long_data)
        << received(2, close)
        << received(3, Q3)
        >> allow(1)
        << completed(1, error=1227, refused=WHY)
        >> allow(2)
        << completed(2, error=1227, refused=WHY)
        >> allow(3)
        << expect_client(local_err(1227, expired, seq=1))
        << completed(3, error=1227, refused=WHY)
    )


def test_a_held_command_refused_with_a_reason_once_forwarding_stopped() -> None:
    """A statement held for approval when the session's token ran out is withdrawn: the
    shell refuses it with the token's ERR and says why for the ledger; the command behind
    it, allowed, gets the stopped ERR in its turn, and nothing reaches the server."""
    expired = "sqlgate: blocked by rule 'token-expired': the token expired"
    withdrawn = "not run: the token expired while it waited for approval (token-expired)"
    assert (
        ready()
        >> client(Q1 + Q2)
        << received(1, Q1)
        << received(2, Q2)
        >> shell("stop_forwarding", lambda session: session.stop_forwarding(1227, expired, WHY))
        >> allow(2)
        >> refuse(1, 1227, expired, withdrawn)
        << expect_client(local_err(1227, expired) + local_err(1227, expired))
        << completed(1, error=1227, refused=withdrawn)
        << completed(2, error=1227, refused=WHY)
        << expect_phase(Phase.COMMAND)
    )


def _long_data_refused(reason: str) -> bool:
    return "long data (COM_STMT_SEND_LONG_DATA) of this statement was refused" in reason


def test_an_execute_after_refused_long_data_gets_its_err_until_a_reset() -> None:
    """MariaDB reports a failed COM_STMT_SEND_LONG_DATA at the next execute of the
    statement: run, it would bind the parameter without the chunk the gateway dropped.
    A COM_STMT_RESET drops the statement's long data on the server; the execute goes."""
    long_data = command(Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 7, 0) + b"a chunk")
    execute = _execute(7, params=TWO_BIGINT_PARAMS)
    reset = command(Command.STMT_RESET, struct.pack("<I", 7))
    reset_ok = Reply(1).ok().data
    rows = (
        Reply(1)
        .columns(COLS, deprecate_eof=True)
        .binary_rows(_binary_rows(5))
        .end(deprecate_eof=True)
        .data
    )
    pb = ready()
    pb.session.statements[7] = 2  # as if prepared earlier
    assert (
        pb
        >> client(long_data + execute)
        << received(1, long_data)
        << received(2, execute)
        >> refuse(1, 1105, UNAVAILABLE)
        << completed(1, error=1105)
        >> allow(2)  # the ledger is back: allowed, but it must not run
        << expect_client(local_err(1105, UNAVAILABLE, seq=1))
        << expect_event(
            CommandCompleted,
            cmd=_named(lambda c: c.id == 2, "id=2"),
            error=1105,
            refused=_long_data_refused,
        )
        >> client(execute)  # again: still refused
        << received(3, execute)
        >> allow(3)
        << expect_client(local_err(1105, UNAVAILABLE, seq=1))
        << completed(3, error=1105)
        >> client(reset + execute)
        << received(4, reset)
        << received(5, execute)
        >> allow(4)
        << expect_server(reset)
        >> allow(5)
        << expect_server(execute)
        >> server(reset_ok + rows)
        << expect_client(reset_ok + rows)
        << completed(4)
        << completed(5, rows=1)
    )


def test_a_close_forgets_the_refused_long_data_of_its_statement() -> None:
    long_data = command(Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 7, 0) + b"a chunk")
    close = command(Command.STMT_CLOSE, struct.pack("<I", 7))
    other = _execute(8)
    pb = ready()
    pb.session.statements[7] = pb.session.statements[8] = 1
    assert (
        pb
        >> client(long_data + close + other)
        << received(1, long_data)
        << received(2, close)
        << received(3, other)
        >> refuse(1, 1105, UNAVAILABLE)
        << completed(1, error=1105)
        >> allow(2)
        << expect_server(close)
        << completed(2)
        >> allow(3)  # another statement: not concerned
        << expect_server(other)
        >> server(Reply(1).ok().data)
        << expect_client(Reply(1).ok().data)
        << completed(3)
    )
    assert not pb.session._long_data_refused


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_field_list(deprecate_eof: bool) -> None:
    fl = command(Command.FIELD_LIST, b"t\0")
    defs = Reply(1).packet(COLS[0] + b"\xfb").packet(COLS[1] + b"\x00")  # with defaults
    answer = defs.end(deprecate_eof=deprecate_eof).data
    assert (
        ready(deprecate_eof=deprecate_eof)
        >> client(fl)
        << received(1, fl)
        >> allow(1)
        << expect_server(fl)
        >> server(answer)
        << expect_client(answer)
        << completed(1)
    )


def test_statistics_string_reply_and_ping() -> None:
    stats = command(Command.STATISTICS)
    text = frame(1, b"Uptime: 42  Threads: 1  Questions: 7  Slow queries: 0  Opens: 12")
    ping = command(Command.PING)
    pong = Reply(1).ok().data
    assert (
        ready()
        >> client(stats)
        << received(1, stats)
        >> allow(1)
        << expect_server(stats)
        >> server(text)
        << expect_client(text)
        << completed(1)
        >> client(ping)
        << received(2, ping)
        >> allow(2)
        << expect_server(ping)
        >> server(pong)
        << expect_client(pong)
        << completed(2)
    )


# ====================================================================== 5. ordering

Q1, Q2, Q3 = query(b"INSERT INTO t VALUES (1)"), query(b"DROP TABLE t"), query(b"SELECT 3")
R1 = Reply(1).ok(affected=1).data
R3 = Reply(1).text_result([column(b"3")], [[b"3"]], deprecate_eof=True).data


def test_pipelined_commands_are_relayed_in_order() -> None:
    r2 = Reply(1).ok().data
    assert (
        ready()
        >> client(Q1 + Q2 + Q3)
        << received(1, Q1)
        << received(2, Q2)
        << received(3, Q3)
        >> allow(1)
        << expect_server(Q1)
        >> allow(2)
        << expect_server(Q2)
        >> allow(3)
        << expect_server(Q3)
        >> server(R1 + r2 + R3)
        << expect_client(R1 + r2 + R3)
        << completed(1, affected=1)
        << completed(2)
        << completed(3, rows=1)
    )


def _intake(n: int) -> Playbook:
    return ready(settings=dataclasses.replace(make_settings(), intake=n))


def test_the_intake_takes_a_few_commands_per_call_and_keeps_the_rest_buffered() -> None:
    """A flood is read no faster than the shell asks for more: with an intake of 2, three
    pipelined commands are two now and one at ``take_commands``."""
    pb = _intake(2) >> client(Q1 + Q2 + Q3) << received(1, Q1) << received(2, Q2)
    assert pb.session.more_commands and pb.session.busy
    assert pb.session.backlog == 2
    assert pb.session.backlog_bytes == len(Q1) + len(Q2)  # what waits for a decision
    assert (
        pb
        >> allow(1)
        << expect_server(Q1)
        >> allow(2)
        << expect_server(Q2)
        >> shell("take_commands", lambda s: s.take_commands())
        << received(3, Q3)
        >> allow(3)
        << expect_server(Q3)
    )
    assert not pb.session.more_commands
    assert (
        pb
        >> server(R1 + Reply(1).ok().data + R3)
        << expect_client(R1 + Reply(1).ok().data + R3)
        << completed(1, affected=1)
        << completed(2)
        << completed(3, rows=1)
    )
    assert pb.session.backlog == 0 and pb.session.backlog_bytes == 0
    assert not pb.session.busy


def test_the_intake_also_bounds_commands_that_were_buffered_in_pieces() -> None:
    data = Q1 + Q2 + Q3
    pb = _intake(1) >> client(data[:3]) >> client(data[3:]) << received(1, Q1)
    assert pb.session.more_commands
    assert pb >> shell("take_commands", lambda s: s.take_commands()) << received(2, Q2)
    assert pb >> shell("take_commands", lambda s: s.take_commands()) << received(3, Q3)
    assert pb >> shell("take_commands", lambda s: s.take_commands())
    assert not pb.session.more_commands


def test_the_intake_also_stops_at_its_bytes() -> None:
    """Each text is classified as it is taken: with ``intake_bytes`` a call takes
    commands only until that many bytes (at least one), whether they came in one chunk
    or in pieces, and the rest wait for ``take_commands``."""
    settings = dataclasses.replace(make_settings(), intake=128, intake_bytes=1)
    for chunks in ((Q1 + Q2 + Q3,), (Q1[:3], Q1[3:] + Q2 + Q3)):
        pb = ready(settings=settings)
        for chunk in chunks:
            pb = pb >> client(chunk)
        assert pb << received(1, Q1)
        assert pb.session.more_commands and pb.session.backlog == 1
        assert pb >> shell("take_commands", lambda s: s.take_commands()) << received(2, Q2)
        assert pb >> shell("take_commands", lambda s: s.take_commands()) << received(3, Q3)
        assert pb >> shell("take_commands", lambda s: s.take_commands())
        assert not pb.session.more_commands


def test_a_client_that_leaves_with_commands_beyond_the_intake_loses_none() -> None:
    """What the intake had not taken yet when the client left is taken at once: it is
    decided, run and recorded like the rest, and the session ends after it."""
    assert (
        _intake(1)
        >> client(Q1 + Q3)
        << received(1, Q1)
        >> client_closes()
        << received(2, Q3)
        << expect_phase(Phase.COMMAND)
        >> allow(1)
        << expect_server(Q1)
        >> allow(2)
        << expect_server(Q3)
        >> server(R1 + R3)
        << expect_client(R1 + R3)
        << completed(1, affected=1)
        << completed(2, rows=1)
        << expect_closed("client closed the connection")
    )


def test_refused_command_answers_exactly_between_the_two_backend_responses() -> None:
    denied = local_err(1142, "sqlgate: policy forbids DROP")
    assert (
        ready()
        >> client(Q1 + Q2 + Q3)
        << received(1, Q1)
        << received(2, Q2)
        << received(3, Q3)
        >> allow(1)
        << expect_server(Q1)
        >> refuse(2, 1142, "sqlgate: policy forbids DROP")
        >> allow(3)
        << expect_server(Q3)
        >> server(R1 + R3)  # both answers in ONE chunk
        << expect_client(R1 + denied + R3)
        << completed(1, affected=1)
        << completed(2, error=1142)
        << completed(3, rows=1)
    )


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3])))
def test_decisions_in_any_order_forward_in_command_order(order: tuple[int, ...]) -> None:
    refused = {2}
    raw = {1: Q1, 2: Q2, 3: Q3}
    pb = ready() >> client(Q1 + Q2 + Q3) << received(1, Q1) << received(2, Q2) << received(3, Q3)
    decided: set[int] = set()
    forwarded: list[int] = []
    for cmd_id in order:
        if cmd_id in refused:
            pb = pb >> refuse(cmd_id, 1142, "no")
        else:
            pb = pb >> allow(cmd_id)
        decided.add(cmd_id)
        head = next((i for i in (1, 2, 3) if i not in decided), 4)
        now = [i for i in (1, 2, 3) if i < head and i not in refused and i not in forwarded]
        if now:
            pb = pb << expect_server(b"".join(raw[i] for i in now))
            forwarded += now
    assert forwarded == [1, 3]
    assert (
        pb
        >> server(R1 + R3)
        << expect_client(R1 + local_err(1142, "no") + R3)
        << completed(1, affected=1)
        << completed(2, error=1142)
        << completed(3, rows=1)
    )


def test_allow_out_of_order_waits_for_the_earlier_command() -> None:
    assert (
        ready()
        >> client(Q1 + Q2)
        << received(1, Q1)
        << received(2, Q2)
        >> allow(2)  # nothing may overtake command 1
        >> allow(1)
        << expect_server(Q1 + Q2)
    )


def test_quit_does_not_overtake_an_undecided_command() -> None:
    """BUG: COM_QUIT goes to the backend at once, ahead of commands still awaiting a decision."""
    quit_ = command(Command.QUIT)
    pb = ready()
    pb.ignore = (SessionClosed, CommandCompleted)
    assert (
        pb
        >> client(Q1 + quit_)
        << received(1, Q1)
        >> allow(1)  # nothing went to the backend before this decision
        << expect_server(Q1 + quit_)
    )


class _NothingMasked:
    """A masker with nothing to mask: answers take the masked relay unchanged."""

    def plan(self, columns: object, **_: object) -> None:
        return None

    def scrub(self, message: bytes, code: int | None = None) -> bytes:
        return message


@pytest.mark.parametrize("masked", [False, True])
def test_quit_waits_for_a_command_still_undecided_after_an_answer(masked: bool) -> None:
    """Q1 is answered while Q3, sent before COM_QUIT, still waits for its decision (its
    ledger commit): the session must not close there and drop Q3."""
    quit_ = command(Command.QUIT)
    pb = ready()
    if masked:
        pb.session.masker = _NothingMasked()  # the masked relay
    assert (
        pb
        >> client(Q1 + Q3 + quit_)
        << received(1, Q1)
        << received(2, Q3)
        >> allow(1)
        << expect_server(Q1)
        >> server(R1)
        << expect_client(R1)
        << completed(1, affected=1)
        << expect_phase(Phase.COMMAND)  # Q3 is still to run
        >> allow(2)
        << expect_server(Q3 + quit_)
        << completed(3)  # COM_QUIT, which has no answer
        >> server(R3)
        << expect_client(R3)
        << completed(2, rows=1)
        << expect_closed("client quit")
    )


@pytest.mark.parametrize("chunk", [None, 1])
def test_bytes_after_quit_are_ignored_and_earlier_commands_answered(chunk: int | None) -> None:
    """BUG: a command pipelined behind COM_QUIT made the gateway answer ERR 1158 ("a
    command after COM_QUIT") in place of the answer to Q1, sent before the COM_QUIT, and
    close without running it. The server reads nothing after COM_QUIT: neither does the
    gateway, and Q1 is forwarded and answered as it would be without the gateway."""
    quit_ = command(Command.QUIT)
    pb = ready()
    assert (
        pb
        >> client(Q1 + quit_ + Q3 + b"\xff\xff\xff\x07garbage", chunk=chunk)
        << received(1, Q1)
        >> allow(1)
        << expect_server(Q1 + quit_)
        << completed(2)  # COM_QUIT, which has no answer
        >> server(R1)
        << expect_client(R1)
        << completed(1, affected=1)
        << expect_closed("client quit")
    )


# ===================================================================== 6. refusals


@pytest.mark.parametrize(
    ("code", "label"),
    [(0x1D, "COM_DAEMON"), (0xFA, "COM_STMT_BULK_EXECUTE"), (0x42, "COM_0x42"), (0x00, "SLEEP")],
)
def test_unknown_command_gets_err_1047_and_the_session_continues(code: int, label: str) -> None:
    odd = command(code, b"whatever")
    ping = command(Command.PING)
    pong = Reply(1).ok().data
    assert (
        ready()
        >> client(odd)
        << expect_event(
            CommandRefused, code=1047, rule="unknown-command", message=lambda m: label in m
        )
        << expect_client(is_err(1, 1047, "sqlgate: unknown or unsupported command", label))
        << completed(1, error=1047)
        >> client(ping)
        << received(2, ping)
        >> allow(2)
        << expect_server(ping)
        >> server(pong)
        << expect_client(pong)
        << completed(2)
    )


@pytest.mark.parametrize(
    ("cmd", "fragment"),
    [
        (Command.CHANGE_USER, "COM_CHANGE_USER is refused"),
        (Command.BINLOG_DUMP, "COM_BINLOG_DUMP"),
        (Command.BINLOG_DUMP_GTID, "COM_BINLOG_DUMP_GTID"),
        (Command.REGISTER_SLAVE, "COM_REGISTER_SLAVE"),
    ],
)
def test_identity_and_replication_commands_get_err_1227(cmd: int, fragment: str) -> None:
    packet = command(cmd, b"root\0" + bytes(20))
    ping = command(Command.PING)
    assert (
        ready()
        >> client(packet)
        << expect_event(CommandRefused, code=ErrorCode.SPECIFIC_ACCESS_DENIED)
        << expect_client(is_err(1, 1227, "sqlgate:", fragment))
        << completed(1, error=1227)
        >> client(ping)
        << received(2, ping)
        << expect_phase(Phase.COMMAND)
    )


def refused_as_malformed(short: bytes, err: bytes, then: bytes) -> bool:
    """The transcript of a command the server would read past its end: refused by the
    core with ``err`` (1835, ``malformed-packet``), nothing sent; ``then``, a whole one
    of the same kind, goes to the target once allowed."""
    return (
        ready()
        >> client(short)
        << expect_event(CommandRefused, code=1835, rule="malformed-packet")
        << expect_client(frame(1, err))
        << completed(1, error=1835)
        >> client(then)
        << received(2, then)
        >> allow(2)
        << expect_server(then)
        << expect_phase(Phase.COMMAND)
    )


@pytest.mark.parametrize("thread", [b"", b"\x34", b"\x34\x00", b"\x34\x00\x00"])
def test_a_kill_shorter_than_its_thread_id_gets_err_1835_and_the_session_continues(
    thread: bytes,
) -> None:
    """BUG: a COM_PROCESS_KILL with fewer than 4 bytes of thread id (``0C 34 00``) was
    decided and recorded as KILL 52, while MariaDB reads 4 bytes anyway, past the packet's
    end into what earlier packets left in its buffer: it went for another thread (to it,
    after a SELECT, that was KILL 16777268). The core refuses it itself
    (ER_MALFORMED_PACKET, as MySQL 8 answers one); nothing reaches the target."""
    short = command(Command.PROCESS_KILL, thread)
    err = packets.build_err(
        1835,  # ER_MALFORMED_PACKET
        f"sqlgate: malformed COM_PROCESS_KILL: it carries {len(thread)} of the 4 bytes of a "
        "thread id, and the server would read the others from what earlier packets left "
        "in its buffer, so it was not sent",
    )
    kill = command(Command.PROCESS_KILL, struct.pack("<I", 5))
    assert refused_as_malformed(short, err, then=kill)


@pytest.mark.parametrize("option", [b"", b"\x01"])
def test_a_set_option_shorter_than_its_option_gets_err_1835_and_the_session_continues(
    option: bytes,
) -> None:
    """BUG: a COM_SET_OPTION with fewer than its 2 bytes of option was forwarded, and
    MariaDB answers it with EOF having read the option from past the packet's end (what
    earlier packets left in its buffer): multi-statements on or off at random. The core
    refuses it itself, as it does a short COM_PROCESS_KILL; nothing reaches the target."""
    short = command(Command.SET_OPTION, option)
    err = packets.build_err(
        1835,  # ER_MALFORMED_PACKET
        f"sqlgate: malformed COM_SET_OPTION: it carries {len(option)} of the 2 bytes of an "
        "option, and the server would read the others from what earlier packets left in "
        "its buffer (and turn multi-statements on or off by them), so it was not sent",
    )
    whole = command(Command.SET_OPTION, b"\x01\x00")
    assert refused_as_malformed(short, err, then=whole)


@pytest.mark.parametrize("table", [b"", b"customers"])
def test_a_field_list_without_its_nul_gets_err_1835_and_the_session_continues(
    table: bytes,
) -> None:
    """BUG: a COM_FIELD_LIST whose table name did not end with a NUL was decided and
    recorded as SHOW COLUMNS FROM the table with no wildcard, while MariaDB read the
    wildcard from past the packet's end (what earlier packets left in its buffer). The
    core refuses it itself (ER_MALFORMED_PACKET); nothing reaches the target."""
    unended = command(Command.FIELD_LIST, table)
    err = packets.build_err(1835, f"sqlgate: {UNENDED_FIELD_LIST}")
    listed = command(Command.FIELD_LIST, b"customers\0")
    assert refused_as_malformed(unended, err, then=listed)


@pytest.mark.parametrize("code", [Command.STMT_EXECUTE, Command.STMT_FETCH, Command.STMT_RESET])
def test_the_last_prepared_statement_id_is_refused(code: int) -> None:
    """Statement id 0xFFFFFFFF is MariaDB's 'the statement prepared last': the gateway
    could not say which statement it decides, records or masks, so it answers itself."""
    packet = command(code, b"\xff\xff\xff\xff" + bytes(5))
    ping = command(Command.PING)
    assert (
        ready()
        >> client(packet)
        << expect_event(CommandRefused, code=1227, rule="last-prepared")
        << expect_client(is_err(1, 1227, "sqlgate: statement id 0xFFFFFFFF"))
        << completed(1, error=1227)
        >> client(ping)
        << received(2, ping)
        << expect_phase(Phase.COMMAND)
    )


LAST = 0xFFFFFFFF  # MariaDB's "the statement prepared last"


def _stands_for(cmd_id: int, raw: bytes, prepare: int) -> Step:
    """CommandReceived for an execute of id 0xFFFFFFFF taken as the prepare's statement."""
    return expect_event(
        CommandReceived,
        cmd=_named(
            lambda c: (c.id, c.raw, c.stands_for) == (cmd_id, raw, prepare),
            f"id={cmd_id} stands_for={prepare}",
        ),
    )


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_an_execute_of_the_last_prepared_id_goes_under_the_id_its_prepare_got(
    deprecate_eof: bool,
) -> None:
    """MariaDB Connector/Node.js writes COM_STMT_PREPARE and COM_STMT_EXECUTE with id
    0xFFFFFFFF at once. The execute waits for the prepare's answer, then goes under the id
    it gave: the server runs, and the gateway records and masks, that very statement."""
    prep = command(Command.STMT_PREPARE, b"SELECT id, name FROM t WHERE id BETWEEN ? AND ?")
    prep_ok = Reply(1).packet(_prepare_ok(7, columns=2, params=2))
    prep_ok.packet(column(b"?", FieldType.LONGLONG)).packet(column(b"?", FieldType.LONGLONG))
    if not deprecate_eof:
        prep_ok.eof()
    prep_ok.packet(COLS[0]).packet(COLS[1])
    if not deprecate_eof:
        prep_ok.eof()
    last = _execute(LAST, params=TWO_BIGINT_PARAMS)
    sent = _execute(7, params=TWO_BIGINT_PARAMS)
    rows = (
        Reply(1)
        .columns(COLS, deprecate_eof=deprecate_eof)
        .binary_rows(_binary_rows(5, 6))
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    ping = command(Command.PING)
    pb = ready(deprecate_eof=deprecate_eof)
    assert (
        pb
        >> client(prep + last + ping)
        << received(1, prep)
        << _stands_for(2, last, 1)
        << received(3, ping)
        >> allow(1)
        << expect_server(prep)
        >> allow(2)  # nothing goes yet: the id is not known
        >> allow(3)  # and nothing after it
        >> server(prep_ok.data, chunk=7)
        << expect_client(prep_ok.data)
        << completed(1)
        << expect_server(sent + ping)
        >> server(rows + Reply(1).ok().data)
        << expect_client(rows + Reply(1).ok().data)
        << expect_event(
            CommandCompleted,
            cmd=_named(lambda c: (c.id, c.payload) == (2, sent[4:]), "the execute of id 7"),
            rows=2,
            error=None,
        )
        << completed(3)
    )
    assert pb.session.statements == {7: 2}


def test_executes_of_the_last_prepared_id_after_its_answer_go_at_once() -> None:
    """The prepare answered before the executes came: each goes under its id as it is
    allowed, the second too (nothing but executes of the id came in between)."""
    prep = command(Command.STMT_PREPARE, b"DO 1")
    prep_ok = Reply(1).packet(_prepare_ok(8, columns=0, params=0)).data
    last = _execute(LAST)
    ok = Reply(1).ok().data
    assert (
        ready()
        >> client(prep)
        << received(1, prep)
        >> allow(1)
        << expect_server(prep)
        >> server(prep_ok)
        << expect_client(prep_ok)
        << completed(1)
        >> client(last + last)
        << _stands_for(2, last, 1)
        << _stands_for(3, last, 1)
        >> allow(2)
        << expect_server(_execute(8))
        >> allow(3)
        << expect_server(_execute(8))
        >> server(ok + ok)
        << expect_client(ok + ok)
        << completed(2)
        << completed(3)
    )


def test_an_execute_of_the_last_prepared_id_waits_for_its_prepare_without_a_gate() -> None:
    prep = command(Command.STMT_PREPARE, b"DO 1")
    prep_ok = Reply(1).packet(_prepare_ok(8, columns=0, params=0)).data
    ok = Reply(1).ok().data
    assert (
        ready(settings=dataclasses.replace(make_settings(), gated=False))
        >> client(prep + _execute(LAST))
        << expect_server(prep)  # the execute waits
        >> server(prep_ok)
        << expect_client(prep_ok)
        << completed(1)
        << expect_server(_execute(8))
        >> server(ok)
        << expect_client(ok)
        << completed(2)
    )


def test_an_execute_of_the_last_prepared_id_after_a_refused_prepare_is_refused() -> None:
    """A prepare the gateway refused never reached the server, whose statement prepared
    last is an earlier one: the execute that stands for it is answered by the gateway,
    even when allowed, and nothing reaches the server."""
    prep = command(Command.STMT_PREPARE, b"SELECT secret FROM t")
    last = _execute(LAST)
    ping = command(Command.PING)
    assert (
        ready()
        >> client(prep + last + ping)
        << received(1, prep)
        << _stands_for(2, last, 1)
        << received(3, ping)
        >> refuse(1, 1227, "sqlgate: refused")
        << expect_client(is_err(1, 1227, "sqlgate: refused"))
        << completed(1, error=1227)
        >> allow(2)
        << expect_client(is_err(1, 1227, "the COM_STMT_PREPARE sent before it was refused"))
        << completed(2, error=1227)
        >> allow(3)
        << expect_server(ping)
        >> server(Reply(1).ok().data)
        << expect_client(Reply(1).ok().data)
        << completed(3)
    )


def test_an_execute_of_the_last_prepared_id_after_a_failed_prepare_is_refused() -> None:
    """A prepare the server failed prepared nothing: the execute is answered by the
    gateway once the prepare's error is in, and never reaches the server."""
    prep = command(Command.STMT_PREPARE, b"SELEKT 1")
    last = _execute(LAST)
    failed = Reply(1).err(1064, "You have an error in your SQL syntax", "42000").data
    assert (
        ready()
        >> client(prep + last)
        << received(1, prep)
        << _stands_for(2, last, 1)
        >> allow(1)
        << expect_server(prep)
        >> allow(2)
        >> server(failed)
        << expect_client(failed)
        << completed(1, error=1064)
        << expect_client(is_err(1, 1227, "the COM_STMT_PREPARE sent before it failed"))
        << completed(2, error=1227)
    )


@pytest.mark.parametrize(
    "between",
    [
        command(Command.PING),
        query(b"SELECT 1"),
        command(Command.STMT_SEND_LONG_DATA, b"\x03\x00\x00\x00\x00\x00ab"),
        command(Command.STMT_EXECUTE, struct.pack("<IBI", 3, 0, 1)),
    ],
    ids=["ping", "query", "long-data", "execute-by-id"],
)
def test_the_last_prepared_id_is_refused_after_another_command(between: bytes) -> None:
    """Only an execute sent right after its prepare (executes of the id aside) is taken:
    after any other command the gateway does not take the id for certain."""
    prep = command(Command.STMT_PREPARE, b"DO 1")
    last = _execute(LAST)
    assert (
        ready()
        >> client(prep + between + last)
        << received(1, prep)
        << expect_event(CommandReceived, cmd=_named(lambda c: c.id == 2, "id=2"))
        << expect_event(CommandRefused, code=1227, rule="last-prepared")
    )


@pytest.mark.parametrize("code", [Command.STMT_FETCH, Command.STMT_RESET])
def test_only_an_execute_may_stand_for_the_prepare_before_it(code: int) -> None:
    prep = command(Command.STMT_PREPARE, b"DO 1")
    assert (
        ready()
        >> client(prep + command(code, b"\xff\xff\xff\xff" + bytes(4)))
        << received(1, prep)
        << expect_event(CommandRefused, code=1227, rule="last-prepared")
    )


def test_long_data_for_the_last_prepared_statement_id_is_refused_without_an_answer() -> None:
    """MariaDB binds a COM_STMT_SEND_LONG_DATA of id 0xFFFFFFFF to its last statement:
    an execute of that statement by its own id would then run with the chunk, while the
    gateway read its values without it, shifted by one (a record naming other values
    than those that ran). It is refused, with no answer (the client expects none), and
    nothing reaches the server; the query after it gets its own answer."""
    long_data = command(Command.STMT_SEND_LONG_DATA, b"\xff\xff\xff\xff\x00\x00PWNED")
    assert (
        ready()
        >> client(long_data + Q3)
        << expect_event(CommandRefused, code=1227, rule="last-prepared")
        << completed(1, error=1227)  # nothing to the client, nothing to the server
        << received(2, Q3)
        >> allow(2)
        << expect_server(Q3)
        >> server(R3)
        << expect_client(R3)
        << completed(2, rows=1)
    )


def test_close_of_the_last_prepared_statement_id_goes_through() -> None:
    """COM_STMT_CLOSE has no answer to refuse with; it is relayed like any other."""
    close = command(Command.STMT_CLOSE, b"\xff\xff\xff\xff")
    assert (
        ready()
        >> client(close)
        << received(1, close)
        >> allow(1)
        << expect_server(close)
        << completed(1)
    )


def test_core_refusal_between_relayed_commands_keeps_its_place() -> None:
    change_user = command(Command.CHANGE_USER, b"root\0")
    assert (
        ready()
        >> client(Q1 + change_user + Q3)
        << received(1, Q1)
        << expect_event(CommandRefused, code=1227)
        << received(3, Q3)
        >> allow(1)
        << expect_server(Q1)
        >> allow(3)
        << expect_server(Q3)
        >> server(R1 + R3)
        << expect_client(R1)
        << expect_client(is_err(1, 1227))
        << expect_client(R3)
        << completed(1, affected=1)
        << completed(2, error=1227)
        << completed(3, rows=1)
    )


# ==================================================================== 7. violations


def test_command_with_a_nonzero_sequence_id_is_answered_and_closes() -> None:
    assert (
        ready()
        >> client(frame(3, b"\x03SELECT 1"))
        << expect_client(is_err(1, 1158, "sqlgate: bad packet", "sequence id 3"))
        << expect_closed("client protocol error")
    )


def test_empty_command_packet_is_answered_and_closes() -> None:
    assert (
        ready()
        >> client(frame(0, b""))
        << expect_client(is_err(1, 1158, "empty command"))
        << expect_closed("client protocol error")
    )


@pytest.mark.parametrize(
    "garbage",
    [
        frame(1, b"\x00garbage"),  # too short for a HandshakeResponse
        frame(1, bytes(32)),  # no PROTOCOL_41
        frame(1, b"\x00\x02\x00\x00" + bytes(28) + b"alice"),  # user without its NUL
    ],
    ids=["short", "pre-4.1", "unterminated-user"],
)
def test_garbage_handshake_response_is_answered_and_closes(garbage: bytes) -> None:
    """A login packet that cannot be read is a failed login too: the shell records it
    (``auth_failed``) and counts it toward its address's waits."""
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(garbage)
        << expect_client(is_err(2, 1158, "sqlgate: bad packet"))
        << expect_event(
            AuthFailed,
            user="",
            reason=lambda r: r.startswith("the login broke the protocol: "),
            cause="client",
        )
        << expect_closed("client protocol error")
    )


def test_a_bad_packet_in_the_login_exchange_is_a_failed_login_of_its_user() -> None:
    """After the hello, a packet out of turn in the password exchange: recorded under the
    name the client gave."""
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(client_hello(b"alice", b"", capabilities=CLIENT_CAPS, plugin="nonsense"))
        << expect_client(lambda p: p.seq == 2)
        >> client(frame(9, b"x"))
        << expect_client(is_err(3, 1158, "sqlgate: bad packet", "sequence id 9"))
        << expect_event(AuthFailed, user="alice", cause="client")
        << expect_closed("client protocol error")
    )


@pytest.mark.parametrize("flag", [C.COMPRESS, C.ZSTD_COMPRESSION], ids=["zlib", "zstd"])
def test_a_client_that_claims_compression_is_refused(flag: int) -> None:
    """Not offered, but claimed: PHP's mysqlnd then sends its commands compressed, which
    the gateway read as garbage (a COM_SLEEP) while the client waited for ever."""
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: not packets.parse_greeting(p.payload).capabilities & flag)
        >> client(alice_hello(caps=CLIENT_CAPS | int(flag)))
        << expect_client(is_err(2, 1158, "sqlgate: bad packet", "connect without compression"))
        << expect_event(AuthFailed, user="", cause="client")
        << expect_closed("client protocol error")
    )


def test_handshake_response_with_the_wrong_sequence_id_is_answered_and_closes() -> None:
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello(seq=5))
        << expect_client(is_err(1, 1158, "sequence id 5"))
        << expect_event(AuthFailed, user="", cause="client")
        << expect_closed()
    )


def test_unsolicited_backend_data_is_a_target_error_and_closes() -> None:
    assert (
        ready()
        >> server(Reply(1).ok().data)  # nobody asked
        << expect_client(lambda p: packets.parse_err(p.payload).code == ErrorCode.UNKNOWN)
        << expect_closed("target protocol error")
    )


def _mid_result(kind: str, deprecate_eof: bool) -> bytes:
    """A backend answer cut short."""
    reply = Reply(1)
    if kind == "after-rows":
        reply.columns(COLS, deprecate_eof=deprecate_eof).text_rows(ROWS[:2])
    elif kind == "after-column-definitions":
        reply.columns(COLS, deprecate_eof=deprecate_eof)
    elif kind == "mid-definitions":
        # past the bytes that tell the first of two definitions from a SHOW CREATE
        # TABLE's (which wait for the rest: test_session_masking)
        return reply.columns(COLS, deprecate_eof=deprecate_eof).data[:14]
    elif kind == "mid-row":
        return reply.columns(COLS, deprecate_eof=deprecate_eof).text_rows(ROWS[:1]).data[:-3]
    else:  # the first of several results was an OK
        reply.ok(affected=1, status=AUTOCOMMIT | MORE_RESULTS)
    return reply.data


@pytest.mark.parametrize(
    "kind",
    ["after-rows", "after-column-definitions", "after-first-ok", "mid-definitions", "mid-row"],
)
@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_backend_closing_mid_result_cuts_the_answer_as_mariadb_would(
    kind: str, deprecate_eof: bool
) -> None:
    """What was relayed stays relayed, and the connection closes with nothing more: the
    client says 2013 (lost connection during query) itself, as when MariaDB goes away."""
    q = query(b"SELECT id, name FROM t")
    partial = _mid_result(kind, deprecate_eof)
    assert (
        ready(deprecate_eof=deprecate_eof)
        >> client(q)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(partial)
        << expect_client(partial)
        >> server_closes()
        # the ledger learns the answer never came: the statement may have run
        << expect_event(
            CommandCompleted, error=2013, unfinished=lambda why: "it may have run" in why
        )
        << expect_closed("target db1 closed the connection")
    )


def test_a_client_that_leaves_mid_statement_still_gets_its_statement_finished() -> None:
    """The client sends INSERT then closes (as a pipelined INSERT + close would): the
    INSERT still goes to the server once decided, its answer completes it (for the
    ledger), and only then does the session close."""
    assert (
        ready()
        >> client(Q1 + Q3)
        << received(1, Q1)
        << received(2, Q3)
        >> client_closes()
        << expect_phase(Phase.COMMAND)  # not closed while something is on its way
        >> allow(1)
        << expect_server(Q1)
        >> allow(2)
        << expect_server(Q3)
        >> server(R1)
        << expect_client(R1)  # the shell has no client to give it to: dropped there
        << completed(1, affected=1)
        >> server(R3)
        << expect_client(R3)
        << completed(2, rows=1)
        << expect_closed("client closed the connection")
    )


def test_a_client_that_leaves_during_an_answer_ends_the_session_there() -> None:
    """The statement ran; the rest of its result is for nobody: no draining it."""
    q = query(b"SELECT id, name FROM t")
    partial = _mid_result("after-rows", True)
    assert (
        ready()
        >> client(q)
        << received(1, q)
        >> allow(1)
        << expect_server(q)
        >> server(partial)
        << expect_client(partial)
        >> client_closes()
        << expect_event(CommandCompleted, error=2013)
        << expect_closed("client closed the connection during the answer")
    )


def test_a_client_done_sending_gets_its_answers_then_the_session_closes() -> None:
    """A half-closed client still reads: its answer goes out, then the session closes."""
    assert (
        ready()
        >> client(Q3)
        << received(1, Q3)
        >> shell("client_done_sending", lambda session: session.client_done_sending())
        >> allow(1)
        << expect_server(Q3)
        >> server(R3)
        << expect_client(R3)
        << completed(1, rows=1)
        << expect_closed("client finished sending")
    )


def test_a_client_that_leaves_while_idle_ends_the_session_at_once() -> None:
    assert ready() >> client_closes() << expect_closed("client closed the connection")


def test_ending_a_session_now_completes_what_was_on_its_way() -> None:
    """An operator's kill: the command sent to the server may have run, the one still
    waiting for its decision did not; each gets its completion for the ledger."""
    assert (
        ready()
        >> client(Q1 + Q3)
        << received(1, Q1)
        << received(2, Q3)
        >> allow(1)
        << expect_server(Q1)
        >> shell("close_now", lambda session: session.close_now("ended by dba"))
        << expect_event(
            CommandCompleted, error=2013, unfinished=lambda why: "ended by dba" in why, sent=True
        )
        << expect_event(
            CommandCompleted,
            error=1105,
            unfinished=lambda why: "it did not run" in why,
            sent=False,
        )
        << expect_closed("ended by dba")
    )


def test_a_gateway_shutdown_answers_the_waiting_command_with_1053() -> None:
    """Past the drain timeout: the command sent to the server and not yet answered gets
    ERR 1053 (it may have run), and each command's completion names the shutdown."""
    assert (
        ready()
        >> client(Q1 + Q3)
        << received(1, Q1)
        << received(2, Q3)
        >> allow(1)
        << expect_server(Q1)
        >> shell("shut_down", lambda session: session.shut_down("gateway shutdown"))
        << expect_client(is_err(1, ErrorCode.SERVER_SHUTDOWN, "shutdown", "may have run"))
        << expect_event(
            CommandCompleted, error=2013, unfinished=lambda why: "gateway shutdown" in why
        )
        << expect_event(
            CommandCompleted, error=1105, unfinished=lambda why: "it did not run" in why
        )
        << expect_closed("gateway shutdown")
    )


def test_a_gateway_shutdown_before_a_decision_says_the_command_did_not_run() -> None:
    assert (
        ready()
        >> client(Q1)
        << received(1, Q1)
        >> shell("shut_down", lambda session: session.shut_down("gateway shutdown"))
        << expect_client(is_err(1, ErrorCode.SERVER_SHUTDOWN, "did not run"))
        << expect_event(CommandCompleted, error=1105)
        << expect_closed("gateway shutdown")
    )


def test_a_gateway_shutdown_cuts_an_answer_that_has_begun_without_an_err() -> None:
    """An ERR in the middle of an answer is no packet the client can read: it is cut."""
    assert (
        ready()
        >> client(Q3)
        << received(1, Q3)
        >> allow(1)
        << expect_server(Q3)
        >> server(R3[:12])
        << expect_client(R3[:12])  # the column count, and a column definition begun
        >> shell("shut_down", lambda session: session.shut_down("gateway shutdown"))
        << expect_event(CommandCompleted, error=2013)
        << expect_closed("gateway shutdown")
    )


def test_a_gateway_shutdown_of_an_idle_session_sends_nothing() -> None:
    assert (
        ready()
        >> shell("shut_down", lambda session: session.shut_down("gateway shutdown"))
        << expect_closed("gateway shutdown")
    )


def test_a_session_that_stopped_forwarding_answers_what_was_not_sent_with_its_err() -> None:
    """The session's token ran out (stop_forwarding): the command already sent gets the
    server's answer; one allowed but not yet sent (behind it) and one allowed afterwards
    are answered with the ERR in their turn, and nothing more reaches the server."""
    expired = "sqlgate: blocked by rule 'token-expired': the token expired"
    assert (
        ready()
        >> client(Q1 + Q2)
        << received(1, Q1)
        << received(2, Q2)
        >> allow(1)
        << expect_server(Q1)
        >> shell("stop_forwarding", lambda session: session.stop_forwarding(1227, expired, WHY))
        >> allow(2)
        >> client(Q3)
        << received(3, Q3)
        >> allow(3)
        >> server(R1)
        << expect_client(R1 + local_err(1227, expired) + local_err(1227, expired))
        << completed(1, affected=1, refused=None)
        << completed(2, error=1227, refused=WHY)
        << completed(3, error=1227, refused=WHY)
        << expect_phase(Phase.COMMAND)
    )


def test_backend_closing_while_idle_closes_the_client_without_a_word() -> None:
    """As MariaDB does when it ends a session (wait_timeout, KILL): the connection just
    closes, and the client's next command fails with 2006 (a pool's pre-ping reconnects).
    An ERR sent now would be read as the answer to that next command."""
    assert ready() >> server_closes() << expect_closed("target db1 closed the connection")


def test_backend_closing_during_a_statement_closes_without_an_err() -> None:
    """The answer has not begun: the connection closes with nothing sent, and the client
    says 2013 (lost connection during query), which drivers and pools take for a lost
    connection. An ERR 2013 would not do: libmariadb reads one from a server as a
    malformed packet (2027). The ledger's result says 2013, that it may have run."""
    assert (
        ready()
        >> client(Q1)
        << received(1, Q1)
        >> allow(1)
        << expect_server(Q1)
        >> server_closes()
        << expect_event(
            CommandCompleted, error=2013, unfinished=lambda why: "it may have run" in why
        )
        << expect_closed("target db1 closed the connection")
    )


def test_backend_closing_before_a_decision_closes_without_an_err() -> None:
    assert (
        ready()
        >> client(Q1 + Q3)
        << received(1, Q1)
        << received(2, Q3)
        >> allow(1)
        << expect_server(Q1)
        >> server_closes()
        << expect_event(
            CommandCompleted, error=2013, unfinished=lambda why: "it may have run" in why
        )
        << expect_event(
            CommandCompleted, error=1105, unfinished=lambda why: "it did not run" in why
        )
        << expect_closed("target db1 closed the connection")
    )


def test_backend_closing_during_the_login_is_still_told_with_an_err() -> None:
    """The client waits for the answer to its login: an ERR is what it reads there."""
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello())
        << expect_event(ClientAuthenticated)
        << expect_server(native_login(BACKEND_CAPS))
        >> server_closes()
        << expect_client(is_err(2, ErrorCode.UNKNOWN, "target 'db1' was lost", "reconnect"))
        << expect_closed("target db1 closed the connection")
    )


def _frames(data: bytes) -> list[Packet]:
    reader = PacketReader(1 << 30)
    reader.feed(data)
    out = []
    while (pkt := reader.next_packet()) is not None:
        out.append(pkt)
    assert len(reader) == 0, "the client was left with half a packet"
    return out


def test_backend_violation_mid_response_leaves_the_client_a_readable_sequence() -> None:
    """BUG: bytes relayed earlier in the same chunk are dropped, yet the ERR's id counts them."""
    q = query(b"SELECT id, name FROM t")
    bogus = Reply(1).columns(COLS, deprecate_eof=True).data  # count and definitions...
    bogus += frame(4, b"\x03abc\x03def")  # ...where classic EOF was due: a row
    pb = ready(deprecate_eof=False) >> client(q) << received(1, q) >> allow(1) << expect_server(q)
    session = pb.session
    session.server_data(bogus)
    out = b"".join(session.take_client_output())
    seqs = [p.seq for p in _frames(out)]
    assert session.phase is Phase.CLOSED
    assert packets.parse_err(_frames(out)[-1].payload).code == ErrorCode.UNKNOWN
    assert seqs == list(range(1, len(seqs) + 1)), f"client saw sequence ids {seqs}"


def test_command_decided_after_a_client_violation_is_not_forwarded() -> None:
    """BUG: ``allow`` after the session closed still sends the command to the backend."""
    assert (
        ready()
        >> client(Q2 + frame(5, b"\x03oops"))
        << received(1, Q2)
        << expect_client(is_err(1, 1158, "sequence id 5"))
        << expect_event(
            CommandCompleted, error=1105, unfinished=lambda why: "it did not run" in why
        )
        << expect_closed()
        >> allow(1)  # the shell answers the CommandReceived it was given (as server.py does)
    )  # the backend must not see DROP TABLE from a session that is closed


def test_bad_packet_pipelined_behind_the_login_is_the_clients_fault() -> None:
    """BUG: a client violation found after the backend's OK is blamed on the target."""
    side = CLIENT_SIDE
    assert (
        Playbook(new_session())
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(alice_hello() + frame(7, b"\x03SELECT 1"))
        << expect_event(ClientAuthenticated)
        << expect_server(native_login(BACKEND_CAPS))
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(2, side))
        << expect_event(SessionReady)
        << expect_client(is_err(1, 1158, "sqlgate: bad packet"))
        << expect_closed("client protocol error")
    )


def test_short_stmt_close_is_answered_not_raised() -> None:
    """BUG: ``allow`` of a COM_STMT_CLOSE without a statement id raises RemoteProtocolError."""
    session = ready().session
    session.client_data(command(Command.STMT_CLOSE, b"\x07"))
    for ev in session.take_events():
        if isinstance(ev, CommandReceived):
            session.allow(ev.cmd)  # as server.py does; nothing may escape
    out = b"".join(session.take_client_output())
    if session.phase is Phase.CLOSED:
        assert packets.parse_err(_frames(out)[-1].payload).code == 1158
    else:
        assert session.phase is Phase.COMMAND


@pytest.mark.parametrize("when", ["before-handshake", "after-handshake"])
def test_tls_garbage_from_the_client_closes_without_raising(tls: TlsFiles, when: str) -> None:
    """BUG: a TLS failure on the client leg makes ``_client_violation`` write into the broken
    TLS object, and the ssl.SSLError escapes ``client_data``."""
    pb = (
        Playbook(new_session(client_tls=tls.server_context()))
        >> server(server_greeting(NONCE))
        << expect_client(lambda p: p.seq == 0)
        >> client(ssl_request(CLIENT_CAPS))
    )
    if when == "after-handshake":
        pb = pb >> client_tls(tls.client_context())
    session = pb.session
    session.client_data(b"\x17\x03\x03\x00\x20" + b"\xa5" * 32)  # a bogus TLS record
    session.take_client_output()
    assert session.phase is Phase.CLOSED
    assert any(isinstance(e, SessionClosed) for e in session.take_events())


# ====================================================== 8. nothing escapes the session

_VALID_COMMANDS = [
    query(b"SELECT 1"),
    command(Command.PING),
    command(Command.STMT_PREPARE, b"SELECT ?"),
    _execute(7, params=TWO_BIGINT_PARAMS),
    command(Command.STMT_CLOSE, struct.pack("<I", 7)),
    command(Command.STMT_FETCH, struct.pack("<II", 7, 1)),
    command(Command.STMT_SEND_LONG_DATA, struct.pack("<IH", 7, 0) + b"x"),
    command(Command.FIELD_LIST, b"t\0"),
    command(Command.CHANGE_USER, b"root\0"),
    command(0x1D),
    command(Command.INIT_DB, b"app"),
    command(Command.QUIT),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """Real packets (some truncated and reframed) joined, then cut, flipped, spliced; or plain
    random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    parts = []
    for raw in draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=5)):
        if draw(st.integers(0, 3)) == 0:  # a truncated payload, framed with its new length
            payload = raw[4:]
            raw = frame(raw[3], payload[: draw(st.integers(0, len(payload)))])
        parts.append(raw)
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def _shell_answers(session: Session, refuse_every: int = 0) -> list[object]:
    """Answer every CommandReceived as a shell would; return all events seen."""
    seen: list[object] = []
    while events := session.take_events():
        for ev in events:
            seen.append(ev)
            if isinstance(ev, CommandReceived):
                if refuse_every and ev.cmd.id % refuse_every == 0:
                    session.refuse(ev.cmd, 1142, "no")
                else:
                    session.allow(ev.cmd)
    return seen


def _assert_usable_or_closed(
    session: Session, events: list[object], open_phases: set[Phase]
) -> None:
    if session.phase is Phase.CLOSED:
        # closing now, or once the rest of a refused oversized login packet came
        assert session.close_requested or session.draining
        assert sum(isinstance(e, SessionClosed) for e in events) == 1
        session.take_client_output()
        session.take_server_output()
        session.client_data(b"\x01\x00\x00\x00\x0e")  # and it reads nothing more
        session.server_data(b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00")
        assert not session.take_client_output()
        assert not session.take_server_output()
    else:
        assert session.phase in open_phases
        assert not session.close_requested
        assert not any(isinstance(e, SessionClosed) for e in events)


FUZZ = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    data=mutated(_VALID_COMMANDS),
    cuts=st.lists(st.integers(0, 400), max_size=4),
    refuse_every=st.integers(0, 3),
)
def test_fuzz_client_bytes_in_the_command_phase(
    data: bytes, cuts: list[int], refuse_every: int
) -> None:
    session = ready().session
    events: list[object] = []
    for piece in _chunks(data, cuts):
        session.client_data(piece)
        events += _shell_answers(session, refuse_every)
    out = b"".join(session.take_client_output())
    _frames(out)  # whatever the client got is whole packets
    _assert_usable_or_closed(session, events, {Phase.COMMAND})


_HELLOS = [
    alice_hello(),
    client_hello(
        b"alice",
        auth.sha2_scramble(ALICE_PW, SCRAMBLE),
        capabilities=CLIENT_CAPS,
        plugin=CACHING_SHA2_PASSWORD,
    ),
    frame(3, native(ALICE_PW)),
    ssl_request(CLIENT_CAPS),
    client_hello(
        b"bob", native(BOB_PW), capabilities=CLIENT_CAPS & ~int(C.PLUGIN_AUTH), plugin=None
    ),
]


@FUZZ
@given(
    data=mutated(_HELLOS),
    cuts=st.lists(st.integers(0, 400), max_size=4),
    with_tls=st.booleans(),
)
def test_fuzz_client_bytes_in_the_handshake(
    tls: TlsFiles, data: bytes, cuts: list[int], with_tls: bool
) -> None:
    session = new_session(client_tls=tls.server_context() if with_tls else None)
    session.server_data(server_greeting(NONCE))
    events: list[object] = []
    for piece in _chunks(data, cuts):
        session.client_data(piece)
        events += _shell_answers(session)
    session.take_client_output()
    _assert_usable_or_closed(
        session, events, {Phase.AWAIT_CLIENT_HELLO, Phase.CLIENT_AUTH, Phase.SERVER_AUTH}
    )


def _server_auth_seeds(public_pem: bytes) -> list[bytes]:
    return [
        frame(2, b"\x01\x04"),
        frame(2, b"\x01\x03"),
        frame(3, b"\x02"),
        frame(4, b"\x01" + public_pem),
        frame(2, b"\x01\x04") + frame(4, b"\x01" + public_pem),
        frame(
            2,
            packets.build_auth_switch_request(
                packets.AuthSwitchRequest(CLIENT_ED25519, bytes(range(32)))
            ),
        ),
        frame(
            2,
            packets.build_auth_switch_request(packets.AuthSwitchRequest(NATIVE_PASSWORD, NONCE)),
        ),
        frame(
            2,
            packets.build_auth_switch_request(
                packets.AuthSwitchRequest(CACHING_SHA2_PASSWORD, NONCE)
            ),
        ),
        Reply(2).ok().data,
        Reply(2).err(1045, "denied").data,
        # the answer to the sql_mode question (read_sql_mode)
        Reply(1)
        .text_result(
            [column(b"m"), column(b"c"), column(b"r")], [[b"ANSI", b"a", b"b"]], deprecate_eof=True
        )
        .data,
        Reply(1).err(1227, "denied").data,
    ]


@FUZZ
@given(
    data=st.data(),
    cuts=st.lists(st.integers(0, 1200), max_size=4),
    plugin=st.sampled_from([NATIVE_PASSWORD, CACHING_SHA2_PASSWORD]),
    read_sql_mode=st.booleans(),
)
def test_fuzz_server_bytes_during_the_backend_login(
    rsa_pair: tuple[bytes, bytes],
    data: st.DataObject,
    cuts: list[int],
    plugin: str,
    read_sql_mode: bool,
) -> None:
    payload = data.draw(mutated(_server_auth_seeds(rsa_pair[1])))
    session = new_session(dataclasses.replace(make_settings(), read_sql_mode=read_sql_mode))
    session.server_data(server_greeting(NONCE, plugin=plugin))
    session.client_data(alice_hello())
    events = _shell_answers(session)
    for piece in _chunks(payload, cuts):
        session.server_data(piece)
        events += _shell_answers(session)
    _frames(b"".join(session.take_client_output()))
    _assert_usable_or_closed(session, events, {Phase.SERVER_AUTH, Phase.COMMAND})


_RESPONSES = [
    Reply(1).text_result(COLS, ROWS, deprecate_eof=True).data,
    Reply(1).text_result(COLS, ROWS, deprecate_eof=True, status=AUTOCOMMIT | MORE_RESULTS).data,
    Reply(1).ok(affected=3).data,
    Reply(1).err(1146, "no such table").data,
    Reply(1).packet(_prepare_ok(7, 1, 1)).packet(COLS[0]).packet(COLS[1]).data,
    Reply(1).columns(COLS, deprecate_eof=True).binary_rows(_binary_rows(1, 2)).data,
    frame(1, b"\xfb/etc/passwd"),
]


@FUZZ
@given(
    data=mutated(_RESPONSES),
    cuts=st.lists(st.integers(0, 400), max_size=4),
    first=st.sampled_from(_VALID_COMMANDS[:8]),
)
def test_fuzz_server_bytes_in_the_command_phase(data: bytes, cuts: list[int], first: bytes) -> None:
    session = ready().session
    session.client_data(first)
    events = _shell_answers(session)
    for piece in _chunks(data, cuts):
        session.server_data(piece)
        events += _shell_answers(session)
    session.take_client_output()
    _assert_usable_or_closed(session, events, {Phase.COMMAND})


def test_playbook_catches_unexpected_output() -> None:
    """The transcript helper itself: unexpected bytes fail the story, naming them."""
    pb = Playbook(new_session()) >> server(server_greeting(NONCE))
    with pytest.raises(AssertionError, match="unexpected bytes to the client"):
        assert pb >> client(b"")


def test_playbook_catches_wrong_bytes_and_names_the_offset() -> None:
    pb = Playbook(new_session()) >> server(server_greeting(NONCE))
    with pytest.raises(AssertionError, match="differ at offset 0"):
        assert pb << expect_client(frame(0, b"\x09"))


def test_certificate_files_are_usable(tls: TlsFiles) -> None:
    assert Path(tls.cert).exists() and b"BEGIN CERTIFICATE" in tls.cert_pem


def test_the_gateways_challenges_are_made_as_servers_make_them() -> None:
    """Random bytes anywhere in a challenge broke clients that read it as MySQL servers
    write it: 7-bit, no NUL (Connector/J reads the greeting's as ASCII text and a
    switch's up to its first NUL, so its proof came out wrong: "wrong password")."""
    for _ in range(20):
        session = Session(make_settings())
        session.server_data(server_greeting(NONCE))
        (out,) = session.take_client_output()
        scramble = packets.parse_greeting(out[4:]).scramble
        assert len(scramble) == 20
        assert all(0 < byte < 0x80 and byte != ord("$") for byte in scramble), scramble
    for length in (1, 20, 4096):
        challenge = new_scramble(length)
        assert len(challenge) == length and b"\0" not in challenge and b"$" not in challenge
        assert challenge.isascii()


def test_a_prepared_statement_keeps_the_character_set_of_its_prepare() -> None:
    """The client character set the shell notes for a prepare goes with the statement id
    its answer gives (an execute's record reads the prepared text in it), leaves with a
    close, and what was noted for a prepare that failed does not stay behind."""
    first = command(Command.STMT_PREPARE, b"SELECT 'x'")
    second = command(Command.STMT_PREPARE, b"DO 1")
    pb = ready(deprecate_eof=False)
    pb >> client(first + second) << received(1, first) << received(2, second)
    session = pb.session
    session.note_charset(ClientCommand(1, Command.STMT_PREPARE, first[4:], first), "latin1")
    session.note_charset(ClientCommand(2, Command.STMT_PREPARE, second[4:], second), "cp1251")
    failed = Reply(1).err(1064, "syntax").data
    prep_ok = Reply(1).packet(_prepare_ok(8, columns=0, params=0)).data
    (
        pb
        >> allow(1)
        << expect_server(first)
        >> allow(2)
        << expect_server(second)
        >> server(failed + prep_ok)
        << expect_client(failed + prep_ok)
        << completed(1, error=1064)
        << completed(2)
    )
    assert session.prepared_charsets == {8: "cp1251"}
    third = command(Command.STMT_PREPARE, b"DO 2")
    pb >> client(third) << received(3, third)
    session.note_charset(ClientCommand(3, Command.STMT_PREPARE, third[4:], third), None)
    assert session._prepare_charsets == {3: None}  # the failed prepare's is gone
    close = command(Command.STMT_CLOSE, struct.pack("<I", 8))
    pb >> allow(3) << expect_server(third)
    pb >> client(close) << received(4, close) >> allow(4) << expect_server(close)
    assert 8 not in session.prepared_charsets
