"""The session core: one client connection, one backend connection, no I/O.

The shell feeds bytes from either peer (``client_data``/``server_data``) and tells the
core when a peer has gone; the core answers with bytes to send (``take_client_output``/
``take_server_output``) and events (``take_events``). Anything that needs waiting (a
ledger commit, a human's approval) is a ``CommandReceived`` event the shell answers with
``allow``/``refuse`` whenever it is ready; the core keeps order on both legs meanwhile.

Phases and the rules between them:

    AWAIT_SERVER_GREETING  the backend speaks first. Its greeting -> we greet the client
                           with the backend's version and connection id, our own scramble
                           and the capabilities of the allow-list       -> AWAIT_CLIENT_HELLO
    AWAIT_CLIENT_HELLO     SSLRequest -> TLS with the client, stay; HandshakeResponse ->
                           check the account                            -> CLIENT_AUTH
    CLIENT_AUTH            auth switch / caching_sha2 exchanges until the client is proven
                           or refused (ERR 1045, CLOSED). caching_sha2 without a scramble
                           (the greeting named another plugin) over TLS -> switch to it
                           with a fresh nonce, then fast or full auth; without TLS ->
                           switch to native. Proven, its database refused by the shell's
                           database_gate -> ERR 1044, CLOSED. Proven -> log in to the
                           backend with the vaulted credential          -> SERVER_AUTH
    SERVER_AUTH            backend TLS, auth switch, caching_sha2 fast/full, ed25519.
                           Backend OK -> client OK                      -> COMMAND
                           Backend ERR -> client ERR 1045               -> CLOSED
                           With ``read_sql_mode``, the backend OK is followed by the
                           gateway's own SELECT @@SESSION.sql_mode; its answer (a row,
                           or an ERR: not known) -> client OK           -> COMMAND
    COMMAND                each client packet (seq 0) is one command: refused ones are
                           answered locally, the rest wait for the shell's decision, then
                           go to the backend byte for byte; responses stream back and are
                           tracked so local answers keep their place.   -> CLOSED on QUIT
    CLOSED                 nothing more is read; the shell closes both legs once output
                           is written.

A protocol violation by the client is answered with an ERR packet where the client can
read one, then CLOSED; by the backend, the client gets an ERR and the session closes.

Masking: while ``Session.masker`` is None, answers take the fast relay (``_relay_server``),
which copies nothing. With a masker, the masked relay (``_relay_masked``) holds each result
set's column definitions until the masker has planned it; a set with nothing to mask then
streams exactly as in the fast relay, a set with a plan has each row taken whole, rewritten
and framed again: text rows that arrive whole in one chunk are rewritten in one pass (the
plan compiled once per set, ``masking.TextRows``) and go out in one piece; other rows one
at a time. ERR messages are scrubbed. A rewritten row that needs a different number of
frames shifts the sequence ids of the rest of its answer. Without a masker, a result set
of two columns whose first definition is that of a ``SHOW CREATE TABLE`` (``Table``, no
origin: one test per definition of a two-column set) hands the rest of its answer to the
masked relay, planned by ``masking.DEFINITIONS_ONLY``, which takes the password out of a
``CONNECTION``; the next answer takes the fast relay again.

Recording: while ``Session.record_limit`` is above 0, each answer of a command sent from
then on is captured as the client received it (after masking, before client TLS, frame
headers included) up to that many bytes, and handed over in its ``CommandCompleted``. Both
relays copy what they pass in slices cut at answer boundaries (and, masked, around each
rewritten packet): a slice per chunk and per answer, nothing per streamed packet; while
nothing is recorded, one test per chunk and one per answer. An answer is recorded when
recording was on as its command went out (``transcript.decode_answer`` reads it back).
"""

from __future__ import annotations

import os
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, auto

from appliance.mysql import auth, masking, packets
from appliance.mysql.charsets import ASCII_CHANGING, collation_charset, read_text, text_codec
from appliance.mysql.constants import (
    CACHING_SHA2_PASSWORD,
    CLEAR_PASSWORD,
    CLIENT_ED25519,
    GATEWAY_CAPABILITIES,
    MAX_PAYLOAD,
    MAX_USER_BYTES,
    NATIVE_PASSWORD,
    SCRAMBLE_LENGTH,
    CachingSha2State,
    Capability,
    Command,
    CursorType,
    ErrorCode,
    ServerStatus,
)
from appliance.mysql.errors import PacketTooLarge, ProtocolError, RemoteProtocolError
from appliance.mysql.masking import Masker, Masks
from appliance.mysql.tls import TlsEndpoint
from appliance.mysql.wire import Packet, PacketReader, frame, frames_needed, join_frames

GREETING_MARK = b"-sqlgate"

LOGIN_PAYLOAD = 64 * 1024
"""Until the login is done, a client packet (the handshake response, an auth answer) is
at most this long: a token is at most 16 KiB. A client that is not logged in cannot make
the gateway hold a command-sized (``max_payload``) buffer."""
LOGIN_BUFFER = 256 * 1024
LOGIN_DRAIN = 2 * 1024 * 1024
"""The rest of a refused oversized login packet, up to this, is read and dropped before
the connection closes: closing with it unread would reset the connection under the
error the client is about to read."""
"""... and at most this much of what it sent is kept while the login goes on."""
"""Appended to the backend's server version in the gateway's greeting: clients still read
the backend's version number, and ``sqlgate net probe`` can tell who answered."""


class Phase(Enum):
    AWAIT_SERVER_GREETING = auto()
    AWAIT_CLIENT_HELLO = auto()
    CLIENT_AUTH = auto()
    SERVER_AUTH = auto()
    COMMAND = auto()
    CLOSED = auto()


# a session that closes in one of these has not logged in to the target (see Session.parting)
_BEFORE_TARGET_LOGIN = frozenset(
    (Phase.AWAIT_SERVER_GREETING, Phase.AWAIT_CLIENT_HELLO, Phase.CLIENT_AUTH)
)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Account:
    """A gateway account as the core needs it: who, what they may prove, their groups."""

    user: str
    stage2: bytes
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class Backend:
    """How to log in to the target: the vaulted credential never leaves this object."""

    name: str
    host: str
    user: str
    password: bytes = field(repr=False)
    tls: str = "preferred"  # preferred | required | disabled
    tls_context: ssl.SSLContext | None = None
    allow_groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SessionSettings:
    backend: Backend
    accounts: Mapping[str, Account]
    client_tls: ssl.SSLContext | None = None
    max_payload: int = 64 * 1024 * 1024
    gated: bool = True
    """Each command waits for the shell's ``allow``/``refuse``; without a gate, commands
    are relayed as they arrive (no one to ask yet: no policy, no ledger)."""
    report_completions: bool = True
    """Emit ``CommandCompleted`` for each answer (what the audit trail records)."""
    tokens: bool = False
    """A user that is not a gateway account may present an OIDC token as its password
    (``mysql_clear_password``, over TLS only); the shell verifies it (``TokenPresented``)."""
    sha2_cache: dict[str, bytes] = field(default_factory=dict)
    """SHA256(SHA256(password)) per account, filled by a full caching_sha2 login: it is
    what makes the next login of that account a fast one, as in MySQL."""
    intake: int = 0
    """Above 0: at most this many commands are taken from the client's bytes per call;
    the rest stay buffered (``more_commands``) until the shell calls ``take_commands``,
    so that a client's flood is read no faster than its commands are decided, recorded
    and answered, and other sessions get their turn. 0: every whole command at once."""
    intake_bytes: int = 0
    """Above 0: a call also stops taking commands once it took this many bytes of them
    (always at least one): each text is classified as it is taken, so a pipelined batch
    of texts just under the offload size would otherwise hold the event loop, and every
    other session, for the whole batch (128 of them, seconds)."""
    read_sql_mode: bool = False
    """Once the backend accepts the login, ask it the session's ``sql_mode`` (one round
    trip, before the client's OK): the mode every statement of the session starts under,
    which no handshake reports (``SessionReady.sql_mode``)."""


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: frozenset[str]
    method: str  # "account" or "token"
    subject: str | None = None  # the token's sub
    token_id: str | None = None  # the token's jti


@dataclass(slots=True)
class ClientCommand:
    """One command from the client: what it is and the exact bytes that carried it."""

    id: int
    command: int
    payload: bytes
    raw: bytes
    stands_for: int | None = None
    """A COM_STMT_EXECUTE with statement id 0xFFFFFFFF (MariaDB's "the statement prepared
    last") sent right after a COM_STMT_PREPARE: that prepare's ``id``. The execute runs its
    statement, and goes to the server under the id the prepare's answer gives."""

    @property
    def label(self) -> str:
        try:
            return Command(self.command).label
        except ValueError:
            return f"COM_0x{self.command:02X}"

    @property
    def sql(self) -> bytes | None:
        if self.command in (Command.QUERY, Command.STMT_PREPARE):
            return self.payload[1:]
        return None


@dataclass(frozen=True, slots=True)
class ClientAuthenticated:
    identity: Identity
    tls: bool


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """A login was refused (ERR 1045 sent, or 1158 for a login that broke the protocol; the
    session closes). ``cause``: "client" (its credentials, token, groups or a login packet
    that could not be read: a failure that counts against it), "target" (the
    gateway's own login to the target failed: not the client's doing), "keys" (no token
    can be checked now: the provider's keys are unavailable; not its doing either),
    "waiting" (``Session.login_gate`` refused the name before its credentials were read),
    "database" (``Session.database_gate`` refused the database it named: ERR 1044) or
    "sessions" (``Session.session_gate`` found the identity at its limit: ERR 1203)."""

    user: str
    reason: str
    cause: str = "client"


@dataclass(frozen=True, slots=True)
class TokenPresented:
    """A client sent a token as its password: the shell answers ``accept_token`` or
    ``refuse_token``."""

    user: str
    token: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SessionReady:
    """The backend accepted the gateway's login; the client has its OK."""

    server_tls: bool
    sql_mode: str | None = None
    """The backend session's ``sql_mode`` as it started (``read_sql_mode``); None: not
    read (not asked, or the server answered with an error: ``sql_mode_error``)."""
    sql_mode_error: str = ""
    charsets: tuple[str | None, str | None] | None = None
    """The backend session's ``character_set_client`` and ``character_set_results`` as
    it started (``read_sql_mode``; a NULL is None), which the target's ``init_connect``
    may have set to other than the login named; None: not read."""


@dataclass(slots=True)
class CommandReceived:
    """The shell must answer with ``allow(cmd)`` or ``refuse(cmd, ...)``."""

    cmd: ClientCommand


@dataclass(frozen=True, slots=True)
class CommandRefused:
    """The core itself refused a command it does not relay (unknown, replication...)."""

    cmd: ClientCommand
    code: int
    message: str
    rule: str  # what the ledger names as the deciding rule


@dataclass(slots=True)
class CommandCompleted:
    cmd: ClientCommand
    rows: int
    affected: int
    error: int | None
    results: list[tuple[int, int, bool]] | None = None
    """For an answer of several results (a multi-statement text, a CALL): ``(rows,
    affected, result_set)`` of each one that ended, in order (``result_set`` False for an
    OK, such as the one that ends a CALL); None for a single result. After an error the
    list holds the results that came before it."""
    masked: dict[str, int] = field(default_factory=dict)
    """Per ``ColumnMask.label``, how many values of this answer its mask changed."""
    results_masked: list[dict[str, int]] | None = None
    """With ``results``: ``masked`` as it stood when each of them ended (running totals),
    so that each statement of a text is said to have masked what its own results did."""
    recorded: bytes | None = None
    """The answer as the client received it, frames whole with their headers (after
    masking, before TLS), at most ``Session.record_limit`` bytes; None while not recording."""
    recorded_truncated: bool = False
    """The answer was longer than the limit: ``recorded`` holds only its first bytes."""
    unfinished: str | None = None
    """Why the command has no whole answer: the session ended first (``error`` then says
    whether it may have run: SERVER_LOST, or UNKNOWN when it was never sent)."""
    refused: str | None = None
    """Why the gateway answered a command it was told to allow with ERR ``error`` in the
    target's place (a COM_STMT_EXECUTE of a statement whose long data was refused: see
    ``LONG_DATA_REFUSED``; any command once ``stop_forwarding`` was called); None
    otherwise."""
    sent: bool = True
    """The command reached the target; False when the gateway answered it in the target's
    place or the session ended before it was sent."""


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: str


Event = (
    ClientAuthenticated
    | AuthFailed
    | SessionReady
    | TokenPresented
    | CommandReceived
    | CommandRefused
    | CommandCompleted
    | SessionClosed
)


# --------------------------------------------------------------------- command rules

# Commands relayed to the backend, and the shape of the answer each one gets.
_SIMPLE, _RESULTSET, _PREPARE, _FIELD_LIST, _FETCH, _NONE = range(6)

RESPONSE_SHAPE: dict[int, int] = {
    Command.QUERY: _RESULTSET,  # OK | ERR | result sets, possibly several
    Command.STMT_EXECUTE: _RESULTSET,  # the same with binary rows, or a cursor opened
    Command.STMT_PREPARE: _PREPARE,  # PREPARE_OK + parameter and column definitions
    Command.FIELD_LIST: _FIELD_LIST,  # column definitions up to EOF
    Command.STMT_FETCH: _FETCH,  # binary rows up to EOF
    Command.INIT_DB: _SIMPLE,
    Command.PING: _SIMPLE,
    Command.STATISTICS: _SIMPLE,  # one string packet
    Command.PROCESS_KILL: _SIMPLE,
    Command.SET_OPTION: _SIMPLE,  # EOF (or OK)
    Command.RESET_CONNECTION: _SIMPLE,
    Command.STMT_RESET: _SIMPLE,
    Command.STMT_CLOSE: _NONE,  # no answer at all
    Command.STMT_SEND_LONG_DATA: _NONE,
    Command.QUIT: _NONE,
}

_CARRIES_STATEMENT_ID = frozenset(
    {
        Command.STMT_EXECUTE,
        Command.STMT_CLOSE,
        Command.STMT_RESET,
        Command.STMT_FETCH,
        Command.STMT_SEND_LONG_DATA,
    }
)

#: Statement id 0xFFFFFFFF: MariaDB runs "the statement prepared last" for it. MariaDB's
#: Connector/Node.js sends a COM_STMT_PREPARE and, in the same write, a COM_STMT_EXECUTE
#: with this id. Such an execute is taken only when the client sent it right after a
#: COM_STMT_PREPARE (with nothing but other such executes in between): it then stands for
#: that prepare's statement (``ClientCommand.stands_for``) and waits, once allowed, for
#: the prepare's answer; it goes to the server under the id that answer gives, so that it
#: is decided, recorded and masked as that statement. A prepare the gateway refused, or
#: that failed, prepared nothing: the execute is answered with an error. Any other use
#: of the id names a statement the gateway cannot tell for certain (a prepare it refused
#: never reached the server, so the server's last one is an earlier statement): the
#: commands that answer are refused; so is COM_STMT_SEND_LONG_DATA, without an answer
#: (the client expects none): the server binds its chunk to its last statement, whose
#: execute by its own id the gateway would read without it, recording values shifted
#: by one parameter (``UPDATE t SET v = ? WHERE k = ?`` recorded with 'a' and 'zzz',
#: run with the chunk and 'a'). COM_STMT_CLOSE has no answer to refuse with and
#: changes nothing an execute could run: the gateway still takes the statement for
#: open, and the server refuses the execute of a closed one.
_LAST_PREPARED = b"\xff\xff\xff\xff"
_ANSWERED_WITH_A_STATEMENT_ID = frozenset(
    {Command.STMT_EXECUTE, Command.STMT_RESET, Command.STMT_FETCH}
)
_NOT_FOR_THE_LAST_PREPARED = _ANSWERED_WITH_A_STATEMENT_ID | {Command.STMT_SEND_LONG_DATA}
"""Commands refused with statement id 0xFFFFFFFF (but an execute right after its
prepare)."""
LAST_PREPARED_REFUSAL = (
    "statement id 0xFFFFFFFF (MariaDB's 'the statement prepared last') is refused here: "
    "the gateway takes it only for a COM_STMT_EXECUTE sent right after the "
    "COM_STMT_PREPARE it stands for. Use the id COM_STMT_PREPARE returned"
)
LAST_PREPARED_UNPREPARED = (
    "statement id 0xFFFFFFFF (MariaDB's 'the statement prepared last') names no statement: "
    "the COM_STMT_PREPARE sent before it {}, so nothing was executed"
)


class _LastPrepared:
    """A COM_STMT_PREPARE that executes with statement id 0xFFFFFFFF may stand for."""

    __slots__ = ("prepare", "statement_id")

    def __init__(self, prepare: int) -> None:
        self.prepare = prepare  # the prepare's ClientCommand.id
        self.statement_id: int | None = None
        """None: not known yet; below 0 (``_REFUSED``, ``_FAILED``): no statement; else
        the id the prepare's answer gave."""

    @property
    def failed(self) -> str:
        return "was refused by the gateway" if self.statement_id == _REFUSED else "failed"


_REFUSED, _FAILED = -1, -2  # _LastPrepared.statement_id of a prepare that prepared nothing


#: A COM_STMT_EXECUTE of a statement one of whose COM_STMT_SEND_LONG_DATA chunks was
#: refused (that command has no answer: MariaDB reports a long-data failure at the next
#: execute of the statement, and so does the gateway). Run, the execute would bind the
#: parameter without the chunk; it is answered with the ERR the chunk was refused with
#: until a COM_STMT_RESET (which drops the long data on the server too) or a
#: COM_STMT_CLOSE of the statement goes to the target.
LONG_DATA_REFUSED = (
    "not run: long data (COM_STMT_SEND_LONG_DATA) of this statement was refused ({}), so "
    "a parameter would have been bound without it; answered with that error until a "
    "COM_STMT_RESET or COM_STMT_CLOSE of the statement"
)

#: A COM_STMT_EXECUTE, _FETCH or _RESET of a statement whose COM_STMT_CLOSE was refused
#: (the ledger could not record it, so it did not go to the target). The client holds the
#: statement closed, and the server would answer 1243 had the close reached it; the
#: statement is still prepared there (until a later close of it goes, or the session
#: resets or ends), so the gateway answers in the server's place and sends nothing: a
#: closed statement runs no more, its open cursor gives no more rows.
CLOSE_REFUSED = (
    "sqlgate: Unknown prepared statement handler ({}): this session closed it (its "
    "COM_STMT_CLOSE was refused: {}); prepare the statement again"
)
CLOSE_REFUSED_WHY = "not run: the session closed statement {} (its COM_STMT_CLOSE was refused)"
_NAMES_A_CLOSED_STATEMENT = frozenset(
    {
        Command.STMT_EXECUTE,
        Command.STMT_FETCH,
        Command.STMT_RESET,
        Command.STMT_SEND_LONG_DATA,
    }
)


#: A COM_PROCESS_KILL carries a 4-byte thread id. MariaDB reads 4 bytes whatever the
#: packet's length: past a shorter one's end it reads a NUL and then what earlier packets
#: left in its buffer, so it would go for another thread than the one the gateway decided
#: and recorded (``0C 34 00`` is KILL 52 to the gateway and KILL 16777268 to the server
#: after a SELECT). The core refuses one that is short, as MySQL 8 does (malformed).
SHORT_KILL = (
    "malformed COM_PROCESS_KILL: it carries {} of the 4 bytes of a thread id, and the "
    "server would read the others from what earlier packets left in its buffer, so it "
    "was not sent"
)
SHORT_SET_OPTION = (
    "malformed COM_SET_OPTION: it carries {} of the 2 bytes of an option, and the server "
    "would read the others from what earlier packets left in its buffer (and turn "
    "multi-statements on or off by them), so it was not sent"
)
UNENDED_FIELD_LIST = (
    "malformed COM_FIELD_LIST: its table name does not end with a NUL byte, and the server "
    "would read the column wildcard from past the packet's end, what earlier packets left "
    "in its buffer, so it was not sent"
)

#: Commands whose fields MariaDB reads past the packet's end when it is short.
_READ_PAST_THEIR_END = frozenset({Command.PROCESS_KILL, Command.SET_OPTION, Command.FIELD_LIST})


def _malformed(code: int, payload: bytes) -> str:
    """Why a command of ``_READ_PAST_THEIR_END`` is refused ('' when it is whole): the
    server would take what it lacks from what earlier packets left in its buffer."""
    if code == Command.PROCESS_KILL and len(payload) < 5:
        return SHORT_KILL.format(len(payload) - 1)
    if code == Command.SET_OPTION and len(payload) < 3:
        return SHORT_SET_OPTION.format(len(payload) - 1)
    if code == Command.FIELD_LIST and b"\0" not in payload:
        return UNENDED_FIELD_LIST
    return ""


#: Commands the core refuses itself: the rule the ledger names and the reason.
REFUSED_COMMANDS: dict[int, tuple[str, str]] = {
    Command.CHANGE_USER: (
        "change-user",
        "COM_CHANGE_USER is refused: a gateway session keeps the identity it logged in "
        "with. Open a new connection as the other user instead",
    ),
    Command.BINLOG_DUMP: (
        "replication",
        "replication (COM_BINLOG_DUMP) is refused through the gateway",
    ),
    Command.BINLOG_DUMP_GTID: (
        "replication",
        "replication (COM_BINLOG_DUMP_GTID) is refused through the gateway",
    ),
    Command.REGISTER_SLAVE: (
        "replication",
        "replication (COM_REGISTER_SLAVE) is refused through the gateway",
    ),
}


# ----------------------------------------------------------------- response tracking

_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)

# Response states
_R_START, _R_COLUMNS, _R_COLUMNS_EOF, _R_ROWS, _R_PREP_PARAMS, _R_PREP_COLUMNS = range(6)
_R_ONE, _R_LIST, _R_PREP_OK = 6, 7, 8
_DEFINITION_HEAD = len(masking.TABLE_DEFINITION_HEAD)


_COMPRESSION = int(Capability.COMPRESS | Capability.ZSTD_COMPRESSION)
_ALL_PLANS = -1  # in _Response.drops: every cursor's plan (COM_RESET_CONNECTION)

#: The gateway's own question after the backend login (``SessionSettings.read_sql_mode``).
SQL_MODE_QUERY = (
    b"SELECT @@SESSION.sql_mode, @@SESSION.character_set_client, @@SESSION.character_set_results"
)
_MODE_COLUMNS = 3


class _ModeAnswer:
    """The answer to ``SQL_MODE_QUERY`` as it arrives: three columns, one row."""

    __slots__ = ("columns", "state", "value")

    def __init__(self) -> None:
        self.state = _R_START
        self.columns = 0  # column definitions still to come
        self.value: list[bytes | None] | None = None


class _Response:
    """Where the backend's answer to one relayed command stands."""

    __slots__ = (
        "cmd",
        "shape",
        "state",
        "left",
        "eof_after",
        "rows",
        "affected",
        "error",
        "binary",
        "prep_cols",
        "prep_id",
        "local",
        "started",
        "results",
        "marks",
        "mask",
        "recorded",
        "room",
        "recorded_truncated",
        "drops",
        "last",
        "refused",
    )

    def __init__(self, cmd: ClientCommand, shape: int, local: bytes | None = None) -> None:
        self.cmd = cmd
        self.shape = shape
        self.local = local  # an answer the gateway gives itself, in place of the backend's
        self.rows = 0
        self.affected = 0
        self.error: int | None = None
        self.left = 0
        self.eof_after = False
        self.prep_cols = 0
        self.prep_id = -1  # COM_STMT_PREPARE: the statement id its PREPARE_OK gave
        self.started = False  # some of the backend's answer has gone to the client
        self.results: list[tuple[int, int, bool]] | None = None  # per result, when several
        self.marks: list[dict[str, int]] | None = None  # masked values up to each of them
        self.mask: _Masking | None = None  # set by the masked relay only
        self.recorded: bytearray | None = None  # what the client got so far, when recorded
        self.room = 0  # ... and how many more bytes it may take
        self.recorded_truncated = False  # ... and whether some did not fit
        # cursor plans that end as this answer begins (statement ids; _ALL_PLANS: all)
        self.drops: list[int] | None = None
        # COM_STMT_PREPARE: what executes with statement id 0xFFFFFFFF wait to learn
        self.last: _LastPrepared | None = None
        self.refused: str | None = None  # see CommandCompleted.refused
        self.binary = cmd.command in (Command.STMT_EXECUTE, Command.STMT_FETCH)
        if shape == _RESULTSET:
            self.state = _R_START
        elif shape == _FETCH:
            self.state = _R_ROWS
        elif shape == _FIELD_LIST:
            self.state = _R_LIST
        elif shape == _PREPARE:
            self.state = _R_PREP_OK
        else:
            self.state = _R_ONE


class _Masking:
    """What the masked relay knows of one answer."""

    __slots__ = ("defs", "held", "columns", "masks", "masked", "text")

    def __init__(self) -> None:
        self.defs: list[packets.ColumnDefinition] | None = None
        """Column definitions being collected for the plan (None: not collecting)."""
        self.held: list[tuple[int, bytes, bytes]] = []
        """Their packets, held back until the plan is made: (seq, frame bytes, payload)."""
        self.columns: tuple[packets.ColumnDefinition, ...] = ()
        """The definitions of the result set whose rows are streaming (binary rows need
        them to be read)."""
        self.masks: Masks | None = None
        """Its plan; None: its rows stream untouched."""
        self.masked: dict[str, int] = {}
        """Per mask label, how many values were changed in this answer."""
        self.text: masking.TextRows | None = None
        """``masks`` compiled for text rows, made at the first run of them."""


_Plan = tuple[tuple[packets.ColumnDefinition, ...], Masks]


# --------------------------------------------------------------------------- session


class Session:
    """The sans-io state machine of one proxied connection."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        scramble: bytes | None = None,
        rsa_encrypt: Callable[[bytes, bytes, bytes], bytes] = auth.sha2_rsa_encrypt,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.phase = Phase.AWAIT_SERVER_GREETING
        self.identity: Identity | None = None
        self.client_caps = 0
        self.deprecate_eof = False
        """Whether the client's answers end with OK instead of EOF (from its handshake)."""
        self.server_greeting: packets.Greeting | None = None
        self.close_requested = False
        # fresh challenges (tests pass a fixed source)
        self._random_bytes = random_bytes or new_scramble
        self._scramble = scramble or self._random_bytes(SCRAMBLE_LENGTH)
        self._rsa_encrypt = rsa_encrypt
        self._client_in = PacketReader(min(settings.max_payload, LOGIN_PAYLOAD))
        self._server_in = PacketReader(settings.max_payload)
        self._client_tls: TlsEndpoint | None = None
        self._server_tls: TlsEndpoint | None = None
        self._to_client: list[bytes] = []
        self._to_server: list[bytes] = []
        self._events: list[Event] = []
        self._offered_caps = 0
        self._client_seq = 0
        self._server_seq = 0
        self._hello: packets.HandshakeResponse | None = None
        self._client_auth_step = ""
        self._server_auth_plugin = ""
        self._server_nonce = b""
        self._mode_answer: _ModeAnswer | None = None  # read_sql_mode: the answer so far
        # command phase
        self._next_id = 0
        self._undecided: deque[ClientCommand] = deque()
        self._undecided_bytes = 0  # the bytes of those commands (see backlog_bytes)
        self._decisions: dict[int, bytes | None] = {}  # id -> None (allow) or ERR payload
        self._refused_why: dict[int, str] = {}  # id -> why it was refused (refuse's ``why``)
        self._responses: deque[_Response] = deque()
        self._skip = 0  # payload bytes of the current backend frame still to pass through
        self._continued = False  # the last backend frame was 0xFFFFFF long
        self._last_seq = 0  # sequence id of the last backend frame relayed
        self._server_buf = b""  # an incomplete backend packet head
        self.statements: dict[int, int] = {}  # prepared statement id -> parameter count
        self.prepared_sql: dict[int, bytes] = {}  # prepared statement id -> its SQL
        # prepared statement id -> the client character set the server read its text in,
        # as the shell noted it for the prepare (``note_charset``), and those noted for
        # prepares not yet answered, by command id
        self.prepared_charsets: dict[int, str | None] = {}
        self._prepare_charsets: dict[int, str | None] = {}
        # statement id 0xFFFFFFFF (see _LAST_PREPARED): the prepare it may stand for now
        # (None once another command came), the prepares not yet sent or refused, and
        # the executes taken for one, by command id
        self._last_prepared: _LastPrepared | None = None
        self._prepares: dict[int, _LastPrepared] = {}
        self._standing: dict[int, _LastPrepared] = {}
        self._prepared_last = False  # a prepare's answer came: an execute may go on
        # statement id -> the ERR a COM_STMT_SEND_LONG_DATA of it was refused with: its
        # next execute gets it instead of running (see LONG_DATA_REFUSED)
        self._long_data_refused: dict[int, bytes] = {}
        # statement id -> why its COM_STMT_CLOSE was refused: closed for the client, still
        # prepared on the server; commands naming it are answered here (CLOSE_REFUSED)
        self._close_refused: dict[int, str] = {}
        self.server_status = 0
        """The status flags of the backend's last OK or EOF (``NO_BACKSLASH_ESCAPES`` says
        how the server reads backslashes in string literals right now)."""
        self._quitting = False  # COM_QUIT was received: close once the answers are out
        # COM_QUIT was taken: like the server, the gateway reads nothing after it (what
        # the client sends behind it is dropped; the commands before it are answered)
        self._quit_taken = False
        self._stopped: bytes | None = None  # stop_forwarding: the ERR in place of each command
        self._stopped_why = ""  # stop_forwarding: why, for the ledger
        self._quit_reason = "client quit"
        self._client_gone = False  # the client left with commands on their way
        self._more = False  # the intake stopped with client bytes still buffered
        self._drain = 0  # bytes of a refused oversized login packet still to drop
        self._gated = settings.gated
        self._report = settings.report_completions
        # masking (the masked relay only; the fast relay never reads these)
        self.masker: Masker | None = None
        """Set by the shell (once the client is known) to mask result sets and scrub errors;
        None keeps the fast relay."""
        self._mask_sticky = False  # the masked relay holds state the fast one cannot take
        self._shift = 0  # added to the sequence ids of the rest of the current answer
        self._partial = bytearray()  # the start of a packet the masked relay waits for
        self._partial_whole = False  # ... which it needs whole (not just its head)
        self._cursor_plans: dict[int, _Plan] = {}  # statement id -> plan of its open cursor
        self._prepared_columns: dict[int, tuple[packets.ColumnDefinition, ...]] = {}
        """Prepared statement id -> the column definitions its PREPARE_OK came with (the
        masked relay only): a cursor's own definitions name aliases as origins."""
        self._plan_drops: list[int] = []  # ends of cursors sent without an answer of their own
        # recording
        self.record_limit = 0
        """Above 0 (set by the shell, normally once after the login): the answers of the
        commands sent from now on are captured up to this many bytes each (see
        ``CommandCompleted.recorded``). Without ``report_completions`` nothing is captured."""
        self._recording = 0  # answers being captured that have not completed yet
        self._farewell = False  # this session only logs in to the target and quits
        self.messages_charset: str | None = None
        """The ``character_set_results`` the gateway's own error messages go in, as the
        server's do (None: UTF-8): the login's, then as the shell learns it after each
        command (``SET NAMES``)."""
        self.target_refusal: packets.ErrPacket | None = None
        """The ERR the target sent in place of its greeting (1129: it blocks the gateway's
        address after too many handshake errors; 1040: too many connections)."""
        self.parting: Session | None = None
        """Set when the session closed before the gateway logged in to the target (a
        refused login, a client that left or sent nothing): a session of its own that
        logs in to the target with the vaulted credential and sends COM_QUIT. The shell
        hands it the target's connection (``server_data``, ``take_server_output``) and
        closes that connection once it is ``close_requested``. Closing the connection
        in the middle of the handshake instead would count, for MariaDB and MySQL, as a
        handshake error of the gateway's address: past ``max_connect_errors`` of them
        in a row the server blocks the address (error 1129), and with it every client
        of the gateway. A successful login resets that count."""
        self.login_gate: Callable[[str], str | None] | None = None
        """Set by the shell before the login: called with the user name the client gives,
        before its credentials are checked; a reason refuses the login (1045, an
        ``AuthFailed`` with cause "waiting"), None lets it go on."""
        self.database_gate: Callable[[Identity, str], str | None] | None = None
        """Set by the shell before the login: called with the proven identity and the
        default schema the client named in its login, before the gateway logs in to the
        target; a message (the whole ERR text) refuses the login (1044 with SQLSTATE
        42000, as a server refuses a database, and an ``AuthFailed`` with cause
        "database"), None lets it go on."""
        self.session_gate: Callable[[Identity], str | None] | None = None
        """Set by the shell before the login: called with the proven identity once the
        rest of its login is accepted, before the gateway logs in to the target; a
        message (the whole ERR text) refuses the login (1203 with SQLSTATE 42000, as a
        server refuses a user over ``max_user_connections``, and an ``AuthFailed`` with
        cause "sessions"), None admits it."""

    # ------------------------------------------------------------------ shell API

    def take_client_output(self) -> list[bytes]:
        out = self._to_client
        self._to_client = []
        return out

    def take_server_output(self) -> list[bytes]:
        out = self._to_server
        self._to_server = []
        return out

    @property
    def client_tls(self) -> bool:
        """Whether the client's connection is TLS (the only way a token is accepted)."""
        return self._client_tls is not None

    @property
    def database(self) -> str | None:
        """The default schema the client asked for at login, if any: read as the server
        reads it, in the login's character set (UTF-8 when that is not known)."""
        hello = self._hello
        if hello is None or not hello.database:
            return None
        return read_text(hello.database, collation_charset(hello.charset))[0]

    @property
    def client_charset(self) -> int | None:
        """The collation id the client chose at login (the backend login carries it)."""
        hello = self._hello
        return None if hello is None else hello.charset

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def take_events(self) -> list[Event]:
        ev = self._events
        self._events = []
        return ev

    def client_data(self, data: bytes) -> None:
        """Bytes from the client (ciphertext once TLS is up)."""
        if self._drain:
            self._drain_login(data)
            return
        if self.phase is Phase.CLOSED:
            return
        try:
            if self._client_tls is not None:
                data = self._client_tls.receive(data)
                self._flush_client_tls()
                if not data:
                    return
            if self._quit_taken:
                return
            if self.phase is Phase.COMMAND and not len(self._client_in):
                self._commands_from(data)
            else:
                self._client_in.feed(data)
                self._pump_client()  # first: a login packet too long is a failed login
                if self.phase is not Phase.COMMAND and len(self._client_in) > LOGIN_BUFFER:
                    raise RemoteProtocolError(
                        f"more than {LOGIN_BUFFER} bytes sent before the login completed"
                    )
        except PacketTooLarge as exc:
            if self.phase is Phase.AWAIT_CLIENT_HELLO or self.phase is Phase.CLIENT_AUTH:
                self._login_too_large(exc)
            else:
                self._client_violation(str(exc))
        except ProtocolError as exc:
            self._client_violation(str(exc))

    def _login_too_large(self, exc: PacketTooLarge) -> None:
        """A login packet over the limit (a token of a megabyte, say): refused like any
        failed login (1045, recorded, counted), answered after the packet's own seq."""
        hello = self._hello
        user = _login_user(hello) if hello is not None else ""
        self._client_seq = exc.seq
        self._client_auth_failed(
            user,
            f"the login packet is longer than the {self._client_in.max_payload} bytes the "
            "gateway reads before a login (a token that large is refused: ask the identity "
            "provider for a smaller one)",
        )
        if 0 < exc.unread <= LOGIN_DRAIN:  # let the client finish sending, then close
            self._drain = exc.unread
            self.close_requested = False

    @property
    def draining(self) -> bool:
        """A refused login packet's rest is being read and dropped; closed after it."""
        return self._drain > 0

    def _drain_login(self, data: bytes) -> None:
        tls = self._client_tls
        if tls is not None:
            try:
                data = tls.receive(data)
            except ProtocolError:
                data = b""
                self._drain = 0
        self._drain = max(0, self._drain - len(data))
        if not self._drain:
            self.close_requested = True

    def _stop_draining(self) -> None:
        self._drain = 0
        self.close_requested = True

    def login_timed_out(self, seconds: float) -> None:
        """The shell's login deadline passed: tell the client and close."""
        if self.phase is Phase.CLOSED or self.phase is Phase.COMMAND:
            return
        why = f"the login did not complete within {seconds:g} s"
        tls = self._client_tls
        if tls is None or (tls.handshake_done and not tls.failed):
            self._send_client(
                frame(self._answer_seq(), self._err(ErrorCode.HANDSHAKE, f"sqlgate: {why}"))
            )
        self._close(why)

    def server_data(self, data: bytes) -> None:
        """Bytes from the backend (ciphertext once TLS is up)."""
        if self.phase is Phase.CLOSED:
            if self.parting is not None:  # before the shell handed it the connection
                self.parting.server_data(data)
            return
        try:
            if self._server_tls is not None:
                data = self._server_tls.receive(data)
                self._flush_server_tls()
                if self.phase is Phase.SERVER_AUTH and self._server_auth_plugin == "":
                    self._maybe_send_login()
                if not data:
                    return
            if self.phase is Phase.COMMAND:
                if self.masker is None and not self._mask_sticky:
                    self._relay_server(data)
                else:
                    self._relay_masked(data)
                if self._prepared_last:  # an execute waited for this prepare's answer
                    self._prepared_last = False
                    self._drain_decisions()
                if self._client_gone:
                    self._answered_without_a_client()
            else:
                self._server_in.feed(data)
                self._pump_server_handshake()
        except ProtocolError as exc:
            self._server_violation(str(exc))

    def server_closed(self) -> None:
        """The backend connection is gone. In the command phase the client is told as
        MariaDB tells it when a session of its own ends (``wait_timeout``, ``KILL``, a
        failover): its connection closes with nothing sent. Each driver then says it
        lost the connection, 2006 on its next command or 2013 for a command waiting for
        its answer, which pools take for a dead connection (a pre-ping reconnects). An
        ERR would not do: an idle client reads it as the answer to its next command,
        and libmariadb (mysqlclient, MariaDB Connector/Python) reads one carrying 2013
        as a malformed packet (2027). What was waiting is completed as by ``close_now``
        (in the ledger: may have run, or did not run)."""
        if self.phase is Phase.CLOSED:
            return
        name = self.settings.backend.name
        reason = f"target {name} closed the connection"
        if self._quitting:
            self._close(self._quit_reason)
            return
        if self.phase is not Phase.COMMAND:  # a login: the client reads an ERR there
            if self.phase is Phase.SERVER_AUTH:
                message = (
                    f"sqlgate: the connection to target '{name}' was lost; reconnect to continue"
                )
            else:
                message = f"sqlgate: target '{name}' closed the connection"
            err = self._err(ErrorCode.UNKNOWN, message)
            self._send_client(frame(self._answer_seq(), err))
        self._close(reason, target_ok=False)

    @property
    def more_commands(self) -> bool:
        """The client's bytes may hold more commands than the intake took (see
        ``SessionSettings.intake``): call ``take_commands``."""
        return self._more

    def take_commands(self, everything: bool = False) -> None:
        """Take the next commands (up to the intake; ``everything``: all of them) from
        the client's buffered bytes."""
        if self.phase is not Phase.COMMAND:
            self._more = False
            return
        try:
            self._pump_commands(0 if everything else None)
        except ProtocolError as exc:
            self._client_violation(str(exc))

    def _take_everything(self) -> None:
        """The client sends no more: every command it did send is taken now, so that the
        session does not end before them."""
        if self._more:
            self.take_commands(everything=True)

    def client_closed(self) -> None:
        """The client is gone. What it sent in the command phase still goes on as if a
        COM_QUIT followed: each command is decided, relayed and answered by the server
        (the answers go nowhere), so what ran is recorded with its outcome and what the
        client sent is not lost; the session closes when nothing is left."""
        if self._drain:
            self._stop_draining()
        if self.phase is Phase.CLOSED:
            return
        self._take_everything()
        if self.phase is Phase.COMMAND and self.busy:
            self._quitting = True
            self._quit_reason = "client closed the connection"
            self._client_gone = True
            self._answered_without_a_client()
            return
        self._close("client closed the connection")

    def _answered_without_a_client(self) -> None:
        """An answer that has begun to come back ran its statement; the rest of it (a
        result of millions of rows) is for nobody, so the session ends there."""
        if self.phase is not Phase.CLOSED and self._responses and self._responses[0].started:
            self._close("client closed the connection during the answer")

    def client_done_sending(self) -> None:
        """The client half-closed its connection: it sends nothing more but still reads.
        What it sent is answered, then the session closes (as after a COM_QUIT)."""
        if self._drain:
            self._stop_draining()
        if self.phase is Phase.CLOSED:
            return
        self._take_everything()
        if self.phase is Phase.COMMAND and self.busy:
            self._quitting = True
            self._quit_reason = "client finished sending"
            return
        self._close("client closed the connection")

    def close_now(self, reason: str) -> None:
        """End the session at once: nothing still waiting is relayed or answered."""
        if self._drain:
            self._stop_draining()
        if self.phase is not Phase.CLOSED:
            self._close(reason)

    def shut_down(self, reason: str) -> None:
        """The gateway stops before this session's commands are answered: the first
        one whose answer has not begun gets ERR 1053 (server shutdown in progress) and
        the session ends now, each command completed as by ``close_now``. An answer that
        has begun is cut off without one: the client expects the rest of it, and an ERR
        in the middle of column definitions is no packet it can read."""
        if self._drain:
            self._stop_draining()
        if self.phase is Phase.CLOSED:
            return
        waiting = self._responses or self._undecided  # a command the client waits for
        answering = self._responses and self._responses[0].started
        if self.phase is Phase.COMMAND and waiting and not answering and not self._client_gone:
            ran = "may have run" if self._responses else "did not run"
            message = f"sqlgate: server shutdown in progress; the statement {ran}"
            self._send_client(frame(1, self._err(ErrorCode.SERVER_SHUTDOWN, message)))
        self._close(reason)

    def stop_forwarding(self, code: int, message: str, why: str) -> None:
        """Nothing more goes to the backend (the identity's time is up): each command not
        sent yet, whether allowed already or later, is answered in its turn with ERR
        ``code`` instead (a COM_QUIT still goes: it only ends the backend session), its
        completion saying ``why`` (``CommandCompleted.refused``: the ledger tells it from
        the same error sent by the target). The answers of the commands already sent
        still come. The shell ends the session with ``close_now`` once it is no longer
        ``busy``."""
        self._stopped = self._err(code, message)
        self._stopped_why = why

    def allow(self, cmd: ClientCommand, sql: bytes | None = None) -> None:
        """Let a received command go to the backend (in order with the others); with
        ``sql``, a COM_QUERY or COM_STMT_PREPARE goes with that text in place of its own
        (a statement the policy rewrote; both must fit in one packet).

        A decision that arrives after the session closed is dropped: nothing more goes out.
        """
        if self.phase is Phase.CLOSED:
            return
        if sql is not None:
            payload = bytes([cmd.command]) + sql
            if cmd.sql is None or len(cmd.payload) >= MAX_PAYLOAD or len(payload) >= MAX_PAYLOAD:
                raise ValueError("only a text command of one packet can be rewritten")
            new = ClientCommand(cmd.id, cmd.command, payload, frame(0, payload))
            self._undecided = deque(new if c.id == cmd.id else c for c in self._undecided)
            self._undecided_bytes += len(new.raw) - len(cmd.raw)
        self._decisions[cmd.id] = None
        self._drain_safely()

    def note_charset(self, cmd: ClientCommand, charset: str | None) -> None:
        """The client character set the server reads a COM_STMT_PREPARE's text in (the
        session's when it is decided): kept with the statement its answer names, so that
        the records of its executes read the text as it was prepared, whatever SET NAMES
        came since. Only prepares still waiting for their answers are kept here."""
        if cmd.command != Command.STMT_PREPARE:
            return
        pending = self._prepare_charsets
        if pending:  # those of prepares answered already (refused, failed) go
            if self._responses:  # on its way to the server or answered in part
                oldest = self._responses[0].cmd.id
            else:  # waiting for its decision or its records
                oldest = self._undecided[0].id if self._undecided else cmd.id
            for stale in [k for k in pending if k < oldest]:
                del pending[stale]
        pending[cmd.id] = charset

    def _err(self, code: int, message: str, sqlstate: str | None = None) -> bytes:
        """An ERR packet of the gateway's own, its message in ``messages_charset``."""
        codec = text_codec(self.messages_charset) or "utf-8"
        return packets.build_err(code, message, sqlstate, codec)

    def refuse(self, cmd: ClientCommand, code: int, message: str, why: str | None = None) -> None:
        """Answer a received command with an ERR instead of relaying it; ``why`` goes on
        its completion (``CommandCompleted.refused``) when the error alone would not tell
        the ledger why (a code the target sends too)."""
        if self.phase is Phase.CLOSED:
            return
        self._decisions[cmd.id] = self._err(code, message)
        if why is not None:
            self._refused_why[cmd.id] = why
        self._drain_safely()

    @property
    def next_undecided(self) -> ClientCommand | None:
        """The first command in line for the backend: allowed now, it goes at once (unless
        it is an execute that waits for its prepare's answer). None when the session is
        closed or none waits."""
        if self.phase is Phase.CLOSED or not self._undecided:
            return None
        return self._undecided[0]

    def sent(self, cmd: ClientCommand) -> bool:
        """Whether a command the shell decided has left the line of undecided commands
        (forwarded, or answered in its place)."""
        return cmd.id not in self._decisions

    def _drain_safely(self) -> None:
        try:
            self._drain_decisions()
        except ProtocolError as exc:
            self._client_violation(str(exc))

    @property
    def busy(self) -> bool:
        """Commands are still waiting to be taken, for a decision or for an answer."""
        return bool(self._undecided or self._responses or self._more)

    @property
    def backlog(self) -> int:
        """Commands taken and not yet answered (waiting for a decision or an answer)."""
        return len(self._undecided) + len(self._responses)

    @property
    def backlog_bytes(self) -> int:
        """The bytes of the commands still waiting for a decision."""
        return self._undecided_bytes

    @property
    def held_bytes(self) -> int:
        """What the session holds of its client's commands: the bytes buffered (an
        unfinished packet, commands not taken yet) and those waiting for a decision."""
        return len(self._client_in) + self._undecided_bytes

    def out_of_buffers(self, why: str) -> None:
        """The gateway cannot hold more of this client's commands (all sessions' buffers
        are full): ERR 1041 and the session ends, like a packet over ``max_payload``."""
        if self.phase is not Phase.COMMAND:
            return
        self._send_client(frame(1, self._err(ErrorCode.OUT_OF_RESOURCES, f"sqlgate: {why}")))
        self._close(why)

    # ------------------------------------------------------------------ output helpers

    def _send_client(self, data: bytes) -> None:
        if self._client_tls is not None:
            self._client_tls.send(data)
            self._flush_client_tls()
        else:
            self._to_client.append(data)

    def _send_server(self, data: bytes) -> None:
        if self._server_tls is not None:
            self._server_tls.send(data)
            self._flush_server_tls()
        else:
            self._to_server.append(data)

    def _flush_client_tls(self) -> None:
        assert self._client_tls is not None
        out = self._client_tls.take_outgoing()
        if out:
            self._to_client.append(out)

    def _flush_server_tls(self) -> None:
        assert self._server_tls is not None
        out = self._server_tls.take_outgoing()
        if out:
            self._to_server.append(out)

    def _close(self, reason: str, *, target_ok: bool = True) -> None:
        """End the session; ``target_ok`` False: the target ended or broke its side."""
        if target_ok and self.phase in _BEFORE_TARGET_LOGIN and not self._farewell:
            self.parting = self._farewell_session()
        self.phase = Phase.CLOSED
        self.close_requested = True
        self._complete_unanswered(reason)
        self._undecided.clear()
        self._undecided_bytes = 0
        self._decisions.clear()
        self._refused_why.clear()
        self._client_in.clear()  # nothing more is read: what is buffered goes now
        self._server_in.clear()
        self._more = False
        self._events.append(SessionClosed(reason))

    def _farewell_session(self) -> Session:
        """The session that ends the target's connection as a login (see ``parting``):
        the greeting and whatever the target sent after it are handed over."""
        part = Session(
            self.settings, rsa_encrypt=self._rsa_encrypt, random_bytes=self._random_bytes
        )
        part._farewell = True
        part.phase = Phase.AWAIT_SERVER_GREETING
        greeting = self.server_greeting
        if greeting is not None:
            part._farewell_login(greeting)
        rest = self._server_in.take_remaining()
        if rest:
            part.server_data(rest)
        return part

    def _farewell_login(self, greeting: packets.Greeting) -> None:
        """Log in as the vaulted user with the fewest capabilities (no database, no
        attributes): nothing runs in this backend session but COM_QUIT."""
        self.server_greeting = greeting
        self._hello = packets.HandshakeResponse(
            capabilities=0,
            max_packet=self.settings.max_payload,
            charset=greeting.charset,
            user=b"",
            auth_response=b"",
            database=None,
            auth_plugin=None,
        )
        self._start_server_login()

    def _complete_unanswered(self, reason: str) -> None:
        """Every command the session took ends with a CommandCompleted, so each recorded
        statement gets its result: one sent to the server whose answer did not come may
        have run, one never sent did not. The part of an answer the client got before the
        end keeps its capture and what its masks changed: the agent saw those rows."""
        events = self._events
        for resp in self._responses:
            if resp.local is not None:
                events.append(
                    CommandCompleted(resp.cmd, 0, 0, resp.error, refused=resp.refused, sent=False)
                )
                continue
            why = f"the session ended ({reason}) before its whole answer came: it may have run"
            m = resp.mask
            event = CommandCompleted(
                resp.cmd,
                resp.rows,
                resp.affected,
                ErrorCode.SERVER_LOST,
                resp.results,
                m.masked if m is not None else {},
                results_masked=resp.marks,
                unfinished=why,
            )
            recorded = resp.recorded
            if recorded is not None:
                event.recorded = bytes(recorded)
                event.recorded_truncated = resp.recorded_truncated
                resp.recorded = None
                self._recording -= 1
            events.append(event)
        self._responses.clear()
        for cmd in self._undecided:
            why = f"the session ended ({reason}) before it was sent: it did not run"
            events.append(
                CommandCompleted(cmd, 0, 0, ErrorCode.UNKNOWN, unfinished=why, sent=False)
            )

    def _client_violation(self, why: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.COMMAND:
            seq = 1
        else:
            seq = self._client_seq + 1
        tls = self._client_tls
        readable = tls is None or (tls.handshake_done and not tls.failed)
        if self.phase is not Phase.AWAIT_SERVER_GREETING and readable:
            self._send_client(
                frame(
                    seq,
                    self._err(ErrorCode.NET_READ_ERROR, f"sqlgate: bad packet: {why}"),
                )
            )
        if self.phase is Phase.AWAIT_CLIENT_HELLO or self.phase is Phase.CLIENT_AUTH:
            # a login that broke the protocol is a failed login: recorded and counted
            hello = self._hello
            user = _login_user(hello) if hello is not None else ""
            self._events.append(AuthFailed(user, f"the login broke the protocol: {why}"))
        self._close(f"client protocol error: {why}")

    def _server_violation(self, why: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        name = self.settings.backend.name
        self._send_client(
            frame(
                self._answer_seq(),
                self._err(
                    ErrorCode.UNKNOWN,
                    f"sqlgate: target '{name}' broke the protocol ({why}); the session was closed",
                ),
            )
        )
        self._close(f"target protocol error: {why}", target_ok=False)

    def _answer_seq(self) -> int:
        """The sequence id the client expects for a packet the gateway sends it now."""
        if self.phase is Phase.AWAIT_SERVER_GREETING:
            return 0
        if self.phase is not Phase.COMMAND:
            return (self._client_seq + 1) & 0xFF
        if self._responses and self._responses[0].started:
            return (self._last_seq + 1) & 0xFF
        return 1

    # --------------------------------------------------------------- handshake: server

    def _pump_server_handshake(self) -> None:
        while self.phase is not Phase.CLOSED:
            pkt = self._server_in.next_packet()
            if pkt is None:
                return
            if self.phase is Phase.AWAIT_SERVER_GREETING:
                self._on_server_greeting(pkt)
            elif self.phase is Phase.SERVER_AUTH:
                if self._mode_answer is None:
                    self._on_server_auth(pkt)
                else:
                    self._on_mode_packet(self._mode_answer, pkt.payload)
            else:
                if pkt.payload[:1] == b"\xff":
                    err = packets.parse_err(pkt.payload)
                    self._server_violation(f"unexpected error {err.code}: {err.message}")
                else:
                    raise RemoteProtocolError("target sent a packet out of turn")

    def _on_server_greeting(self, pkt: Packet) -> None:
        if pkt.payload[:1] == b"\xff":
            err = packets.parse_err(pkt.payload)
            self.target_refusal = err
            name = self.settings.backend.name
            self._to_client.append(
                frame(
                    0,
                    self._err(
                        err.code, f"sqlgate: target '{name}' refused the connection: {err.message}"
                    ),
                )
            )
            self._close(f"target refused the connection: {err.code} {err.message}", target_ok=False)
            return
        greeting = packets.parse_greeting(pkt.payload)
        if not greeting.capabilities & Capability.PROTOCOL_41:
            raise RemoteProtocolError("target does not speak protocol 4.1")
        if self._farewell:
            self._farewell_login(greeting)
            return
        self.server_greeting = greeting
        self.server_status = greeting.status
        offered = greeting.capabilities & GATEWAY_CAPABILITIES
        offered |= Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
        if self.settings.client_tls is not None:
            offered |= Capability.SSL
        self._offered_caps = int(offered)
        ours = packets.Greeting(
            server_version=greeting.server_version + GREETING_MARK,
            connection_id=greeting.connection_id,
            scramble=self._scramble,
            capabilities=int(offered),
            charset=greeting.charset,
            status=greeting.status,
            auth_plugin=NATIVE_PASSWORD,
        )
        self._client_seq = 0
        self._send_client(frame(0, packets.build_greeting(ours)))
        self.phase = Phase.AWAIT_CLIENT_HELLO

    # --------------------------------------------------------------- handshake: client

    def _pump_client(self) -> None:
        while self.phase is not Phase.CLOSED:
            if self.phase is Phase.COMMAND:
                self._pump_commands()
                return
            if self.phase is Phase.SERVER_AUTH or self.phase is Phase.AWAIT_SERVER_GREETING:
                return  # the client must wait for us; keep its bytes buffered
            pkt = self._client_in.next_packet()
            if pkt is None:
                return
            if pkt.seq != (self._client_seq + 1) & 0xFF:
                raise RemoteProtocolError(
                    f"packet sequence id {pkt.seq}, expected {(self._client_seq + 1) & 0xFF}"
                )
            self._client_seq = pkt.last_seq
            if self.phase is Phase.AWAIT_CLIENT_HELLO:
                self._on_client_hello(pkt)
            else:
                self._on_client_auth(pkt)

    def _on_client_hello(self, pkt: Packet) -> None:
        payload = pkt.payload
        if packets.is_ssl_request(payload):
            if self._client_tls is not None:
                raise RemoteProtocolError("a second SSLRequest")
            ctx = self.settings.client_tls
            if ctx is None:
                raise RemoteProtocolError("the client asked for TLS, which was not offered")
            self._client_tls = TlsEndpoint(ctx, server_side=True)
            rest = self._client_in.take_remaining()
            if rest:
                plain = self._client_tls.receive(rest)
                self._flush_client_tls()
                self._client_in.feed(plain)
            return
        hello = packets.parse_handshake_response(payload)
        if not hello.capabilities & Capability.PROTOCOL_41:
            raise RemoteProtocolError("the client does not speak protocol 4.1")
        if hello.capabilities & Capability.SSL and self._client_tls is None:
            raise RemoteProtocolError("the client claims TLS but sent no SSLRequest")
        if hello.capabilities & _COMPRESSION:  # PHP's mysqlnd would go on compressed
            raise RemoteProtocolError(
                "the client asked for compression, which the gateway does not offer; "
                "connect without compression"
            )
        if len(hello.user) > MAX_USER_BYTES:  # a failed login: recorded and counted
            self._client_auth_failed(
                "", f"a user name longer than {MAX_USER_BYTES} bytes is not accepted"
            )
            return
        self._hello = hello
        self.messages_charset = collation_charset(hello.charset)
        self.client_caps = hello.capabilities & self._offered_caps
        self.deprecate_eof = bool(self.client_caps & Capability.DEPRECATE_EOF)
        self.phase = Phase.CLIENT_AUTH
        user = _login_user(hello)
        if collation_charset(hello.charset) in ASCII_CHANGING:  # a failed login: recorded
            self._client_auth_failed(
                user,
                f"the character set {collation_charset(hello.charset)} (collation "
                f"{hello.charset}) reads ASCII bytes as other letters, so the gateway could "
                "not tell the names it is sent; log in with utf8mb4",
            )
            return
        gate = self.login_gate
        if gate is not None:
            refused = gate(user)
            if refused is not None:
                self._client_auth_failed(user, refused, cause="waiting")
                return
        account = self.settings.accounts.get(user)
        plugin = hello.auth_plugin or NATIVE_PASSWORD
        if not hello.capabilities & Capability.PLUGIN_AUTH:
            plugin = NATIVE_PASSWORD
        if account is None:
            self._start_token_auth(user, plugin, hello.auth_response)
            return
        self._start_client_auth(account, plugin, hello.auth_response)

    def _start_token_auth(self, user: str, plugin: str, response: bytes) -> None:
        """Not a gateway account: its password must be an OIDC token, sent in clear
        text, so only over TLS."""
        if not self.settings.tokens:
            self._client_auth_failed(
                user,
                f"user '{printable(user)}' is not a gateway account; log in with one of the "
                "accounts configured in [[accounts]]",
            )
            return
        if self._client_tls is None:
            self._client_auth_failed(
                user,
                f"user '{printable(user)}' is not a gateway account, and a token is accepted as "
                "the password only over TLS: connect with TLS (for example ssl_mode=REQUIRED or "
                "--ssl) and send the token again",
            )
            return
        if plugin == CLEAR_PASSWORD and response.rstrip(b"\0"):
            self._token_received(user, response)
            return
        self._client_auth_step = "token-switch"
        self._send_client_seq(
            packets.build_auth_switch_request(
                packets.AuthSwitchRequest(CLEAR_PASSWORD, self._scramble)
            )
        )

    def _token_received(self, user: str, payload: bytes) -> None:
        self._client_auth_step = "token-wait"
        token = payload[:-1] if payload.endswith(b"\0") else payload
        self._events.append(TokenPresented(user, token))

    def accept_token(self, identity: Identity) -> None:
        """The shell verified the token of a ``TokenPresented``: log in as ``identity``."""
        if self.phase is not Phase.CLIENT_AUTH or self._client_auth_step != "token-wait":
            return
        self._client_auth_step = ""
        self._admit(identity)

    def refuse_token(self, user: str, reason: str, cause: str = "client") -> None:
        """The token was refused: ERR 1045 with ``reason``, and the connection ends
        (``cause`` as ``AuthFailed``'s)."""
        if self.phase is not Phase.CLIENT_AUTH or self._client_auth_step != "token-wait":
            return
        self._client_auth_step = ""
        self._client_auth_failed(user, reason, cause)

    def _start_client_auth(self, account: Account, plugin: str, response: bytes) -> None:
        tls = self._client_tls is not None
        if plugin == NATIVE_PASSWORD:
            self._check_native(account, response)
        elif plugin == CACHING_SHA2_PASSWORD:
            if len(response) != auth.SHA2_SCRAMBLE_LENGTH and tls:
                # The greeting named mysql_native_password, so a client library whose
                # plugin is caching_sha2_password (libmysqlclient, MariaDB Connector/C)
                # sends no scramble and waits for the plugin's own challenge; a MySQL 8
                # server then switches to the plugin with a fresh nonce. Without TLS the
                # switch to native below does as well (no full auth without TLS).
                self._client_auth_step = "sha2-switch"
                self._scramble = self._random_bytes(SCRAMBLE_LENGTH)
                self._send_client_seq(
                    packets.build_auth_switch_request(
                        packets.AuthSwitchRequest(CACHING_SHA2_PASSWORD, self._scramble)
                    )
                )
            else:
                self._check_sha2(account, response)
        elif plugin == CLEAR_PASSWORD and tls:
            self._check_cleartext(account, response)
        else:
            self._switch_client_to_native()

    def _check_sha2(self, account: Account, response: bytes) -> None:
        """A caching_sha2_password scramble: fast auth from the cache, else full auth
        (the password in clear, so only over TLS), else a switch to native."""
        cached = self.settings.sha2_cache.get(account.user)
        if cached is not None and auth.sha2_verify_fast(cached, self._scramble, response):
            self._send_client_seq(
                packets.build_auth_more_data(bytes([CachingSha2State.FAST_AUTH_SUCCESS]))
            )
            self._client_proven(account)
        elif self._client_tls is not None:
            self._client_auth_step = "sha2-full"
            self._send_client_seq(
                packets.build_auth_more_data(bytes([CachingSha2State.PERFORM_FULL_AUTHENTICATION]))
            )
        else:
            self._switch_client_to_native()

    def _switch_client_to_native(self) -> None:
        self._client_auth_step = "native-switch"
        self._send_client_seq(
            packets.build_auth_switch_request(
                packets.AuthSwitchRequest(NATIVE_PASSWORD, self._scramble)
            )
        )

    def _on_client_auth(self, pkt: Packet) -> None:
        hello = self._hello
        assert hello is not None
        user = _login_user(hello)
        step = self._client_auth_step
        self._client_auth_step = ""
        if step == "token-switch":
            self._token_received(user, pkt.payload)
            return
        if step == "token-wait":
            raise RemoteProtocolError("a packet while the gateway verifies the token")
        account = self.settings.accounts[user]
        if step == "native-switch":
            self._check_native(account, pkt.payload)
        elif step == "sha2-switch":
            self._check_sha2(account, pkt.payload)
        elif step == "sha2-full":
            self._check_cleartext(account, pkt.payload)
        else:
            raise RemoteProtocolError("unexpected packet during authentication")

    def _check_native(self, account: Account, response: bytes) -> None:
        if auth.native_verify(account.stage2, self._scramble, response) is None:
            self._client_auth_failed(account.user, self._wrong_password(account.user))
        else:
            self._client_proven(account)

    def _check_cleartext(self, account: Account, payload: bytes) -> None:
        password = payload[:-1] if payload.endswith(b"\0") else payload
        if auth.native_verify_cleartext(account.stage2, password):
            self.settings.sha2_cache[account.user] = auth.sha2_double_hash(password)
            self._client_proven(account)
        else:
            self._client_auth_failed(account.user, self._wrong_password(account.user))

    def _wrong_password(self, user: str) -> str:
        via = "TLS" if self._client_tls is not None else "a plain connection"
        return f"wrong password for gateway account '{user}' (using {via})"

    def _send_client_seq(self, payload: bytes) -> None:
        """Send the next packet of the client's handshake exchange."""
        self._client_seq = (self._client_seq + 1) & 0xFF
        self._send_client(frame(self._client_seq, payload))

    def _client_auth_failed(self, user: str, reason: str, cause: str = "client") -> None:
        self._send_client_seq(
            self._err(ErrorCode.ACCESS_DENIED, f"sqlgate: access denied: {reason}")
        )
        self._events.append(AuthFailed(user, reason, cause))
        self._close(f"authentication failed: {reason}")

    def _client_proven(self, account: Account) -> None:
        self._admit(Identity(account.user, account.groups, "account"))

    def _admit(self, identity: Identity) -> None:
        """A proven identity reaches the target only with one of its allowed groups, and
        with the database it named only when the shell's ``database_gate`` lets it."""
        backend = self.settings.backend
        if not identity.groups & backend.allow_groups:
            groups = ", ".join(printable(g) for g in sorted(identity.groups)) or "none"
            allowed = ", ".join(sorted(backend.allow_groups)) or "none"
            self._client_auth_failed(
                identity.user,
                f"user '{printable(identity.user)}' (groups: {groups}) may not reach target "
                f"'{backend.name}'; its allowed groups are: {allowed}",
            )
            return
        schema = self.database
        gate = self.database_gate
        if schema is not None and gate is not None:
            refused = gate(identity, schema)
            if refused is not None:
                self._send_client_seq(self._err(ErrorCode.DBACCESS_DENIED, refused))
                self._events.append(AuthFailed(identity.user, refused, "database"))
                self._close(f"login refused: {refused}")
                return
        sessions = self.session_gate
        if sessions is not None:
            refused = sessions(identity)
            if refused is not None:
                self._send_client_seq(self._err(ErrorCode.TOO_MANY_USER_CONNECTIONS, refused))
                self._events.append(AuthFailed(identity.user, refused, "sessions"))
                self._close(f"login refused: {refused}")
                return
        self.identity = identity
        self._events.append(ClientAuthenticated(self.identity, self._client_tls is not None))
        self._start_server_login()

    # ------------------------------------------------------------- login to backend

    def _start_server_login(self) -> None:
        greeting = self.server_greeting
        hello = self._hello
        assert greeting is not None and hello is not None
        backend = self.settings.backend
        self.phase = Phase.SERVER_AUTH
        self._server_seq = 0
        server_has_tls = bool(greeting.capabilities & Capability.SSL)
        want_tls = backend.tls != "disabled" and backend.tls_context is not None
        if backend.tls == "required" and not (server_has_tls and want_tls):
            self._server_login_failed(
                f"target '{backend.name}' requires TLS (tls = \"required\") "
                "but the server does not offer it"
            )
            return
        if want_tls and server_has_tls:
            assert backend.tls_context is not None
            self._server_seq = 1
            self._to_server.append(
                frame(
                    1,
                    packets.build_ssl_request(
                        packets.SSLRequest(
                            self._backend_caps() | Capability.SSL,
                            self.settings.max_payload,
                            hello.charset,
                        )
                    ),
                )
            )
            self._server_tls = TlsEndpoint(
                backend.tls_context, server_side=False, server_hostname=backend.host
            )
            self._server_tls.start()
            self._flush_server_tls()
            return  # the login goes out once the TLS handshake is done
        self._maybe_send_login()

    def _backend_caps(self) -> int:
        """The capabilities of the gateway's login: the client's, within the allow-list.

        The SSLRequest and the login must carry the same flags (MariaDB keeps those of
        the SSLRequest), so the database flag is settled here too.
        """
        greeting = self.server_greeting
        hello = self._hello
        assert greeting is not None and hello is not None
        caps = self.client_caps & GATEWAY_CAPABILITIES & greeting.capabilities
        caps |= Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
        caps &= ~(Capability.CONNECT_WITH_DB | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA)
        caps |= greeting.capabilities & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
        if hello.database:
            caps |= Capability.CONNECT_WITH_DB
        return int(caps)

    def _maybe_send_login(self) -> None:
        if self._server_tls is not None and not self._server_tls.handshake_done:
            return
        if self._server_auth_plugin:
            return
        greeting = self.server_greeting
        hello = self._hello
        assert greeting is not None and hello is not None
        backend = self.settings.backend
        caps = self._backend_caps()
        if self._server_tls is not None:
            caps |= Capability.SSL
        plugin = greeting.auth_plugin or NATIVE_PASSWORD
        if plugin not in (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD, CLIENT_ED25519):
            plugin = NATIVE_PASSWORD
        self._server_auth_plugin = plugin
        self._server_nonce = greeting.scramble
        response = self._auth_answer(plugin, greeting.scramble)
        attrs = hello.attributes if caps & Capability.CONNECT_ATTRS else ()
        login = packets.HandshakeResponse(
            capabilities=caps,
            max_packet=self.settings.max_payload,
            charset=hello.charset,
            user=backend.user.encode(),
            auth_response=response,
            database=hello.database or None,
            auth_plugin=plugin,
            attributes=attrs,
        )
        self._server_seq += 1
        self._send_server(frame(self._server_seq, packets.build_handshake_response(login)))

    def _auth_answer(self, plugin: str, nonce: bytes) -> bytes:
        password = self.settings.backend.password
        if plugin == NATIVE_PASSWORD:
            return auth.native_scramble(password, nonce[:SCRAMBLE_LENGTH])
        if plugin == CACHING_SHA2_PASSWORD:
            return auth.sha2_scramble(password, nonce[:SCRAMBLE_LENGTH])
        if plugin == CLIENT_ED25519:
            return auth.ed25519_password_sign(password, nonce)
        if plugin == CLEAR_PASSWORD:
            if self._server_tls is None:
                raise _LoginRefused(
                    "the target asked for the password in clear text over a plain connection; "
                    "enable TLS on the target"
                )
            return password + b"\0"
        raise _LoginRefused(f"the target asked for the unsupported auth plugin '{plugin}'")

    def _on_server_auth(self, pkt: Packet) -> None:
        self._server_seq = pkt.last_seq
        payload = pkt.payload
        head = payload[:1]
        try:
            if head == b"\x00":
                self._server_login_done(packets.parse_ok(payload, self._backend_caps()))
            elif head == b"\xff":
                err = packets.parse_err(payload)
                if err.code == ErrorCode.BAD_DB:  # the client's mistake: say it as the server
                    self._server_login_failed(
                        f"target '{self.settings.backend.name}': {err.message}", err.code
                    )
                else:
                    self._server_login_failed(
                        f"target '{self.settings.backend.name}' refused the gateway's login "
                        f"({err.code}: {err.message})"
                    )
            elif head == b"\xfe":
                switch = packets.parse_auth_switch_request(payload)
                self._server_auth_plugin = switch.plugin
                self._server_nonce = switch.data
                self._server_reply(self._auth_answer(switch.plugin, switch.data))
            elif head == b"\x01":
                self._on_server_more_data(packets.parse_auth_more_data(payload))
            else:
                raise RemoteProtocolError("unexpected packet during the backend login")
        except _LoginRefused as exc:
            self._server_login_failed(f"target '{self.settings.backend.name}': {exc}")

    def _on_server_more_data(self, data: bytes) -> None:
        if self._server_auth_plugin != CACHING_SHA2_PASSWORD:
            raise RemoteProtocolError("unexpected AuthMoreData")
        if data == bytes([CachingSha2State.FAST_AUTH_SUCCESS]):
            return  # an OK follows
        if data == bytes([CachingSha2State.PERFORM_FULL_AUTHENTICATION]):
            if self._server_tls is not None:
                self._server_reply(self.settings.backend.password + b"\0")
            elif self.settings.backend.tls != "disabled":
                # "preferred" fell back to plain: a server that offers no TLS may be an
                # impostor at its address, which would send its own public key and read
                # the vaulted password. Only a target the operator trusts in plain
                # ("disabled") is asked for its key.
                raise _LoginRefused(
                    "it asks for the whole password (caching_sha2_password) on a connection "
                    "without TLS, and the gateway does not fetch its public key in plain "
                    "where an impostor could give its own: have the target offer TLS "
                    '(tls = "required"), or set tls = "disabled" to trust the path'
                )
            else:
                self._server_reply(bytes([CachingSha2State.REQUEST_PUBLIC_KEY]))
            return
        if data.startswith(b"-----BEGIN"):
            try:
                sealed = self._rsa_encrypt(
                    self.settings.backend.password, self._server_nonce[:20], data
                )
            except Exception as exc:  # cryptography raises several types for bad keys
                raise _LoginRefused(
                    f"the target sent an unusable RSA public key ({type(exc).__name__})"
                ) from exc
            self._server_reply(sealed)
            return
        raise RemoteProtocolError("unexpected caching_sha2_password data")

    def _server_reply(self, payload: bytes) -> None:
        self._server_seq = (self._server_seq + 1) & 0xFF
        self._send_server(frame(self._server_seq, payload))

    def _server_login_failed(self, reason: str, code: int = ErrorCode.ACCESS_DENIED) -> None:
        denied = code == ErrorCode.ACCESS_DENIED
        message = f"sqlgate: access denied: {reason}" if denied else f"sqlgate: {reason}"
        self._send_client_seq(self._err(code, message))
        user = self.identity.user if self.identity else ""
        self._events.append(AuthFailed(user, reason, "target"))
        self._close(f"backend login failed: {reason}")

    def _server_login_done(self, ok: packets.OkPacket) -> None:
        self.server_status = ok.status
        if self._farewell:  # logged in: the count of the gateway's address is reset
            self._send_server(frame(0, bytes([Command.QUIT])))
            self._close("the gateway logged in to the target and quit")
            return
        if self.settings.read_sql_mode:
            self._mode_answer = _ModeAnswer()
            self._send_server(frame(0, bytes([Command.QUERY]) + SQL_MODE_QUERY))
            return
        self._enter_commands(SessionReady(self._server_tls is not None))

    def _on_mode_packet(self, answer: _ModeAnswer, payload: bytes) -> None:
        """One packet of the answer to ``SQL_MODE_QUERY``: column count, definition, EOF
        (without DEPRECATE_EOF), the row, then EOF or OK; or an ERR at any point."""
        first = payload[0] if payload else -1
        tls = self._server_tls is not None
        if first == 0xFF:
            err = packets.parse_err(payload)
            self._mode_answer = None
            self._enter_commands(SessionReady(tls, None, f"{err.code}: {err.message}"))
            return
        deprecate = bool(self._backend_caps() & Capability.DEPRECATE_EOF)
        state = answer.state
        if state == _R_START:
            count, _ = packets.read_lenenc_int(payload, 0)
            if count != _MODE_COLUMNS:
                raise RemoteProtocolError("unexpected answer to the gateway's sql_mode query")
            answer.columns = count
            answer.state = _R_COLUMNS
        elif state == _R_COLUMNS:
            answer.columns -= 1
            if answer.columns == 0:
                answer.state = _R_ROWS if deprecate else _R_COLUMNS_EOF
        elif state == _R_COLUMNS_EOF:
            if not packets.is_eof_packet(first, len(payload)):
                raise RemoteProtocolError("expected EOF after column definitions")
            answer.state = _R_ROWS
        elif packets.is_result_terminator(first, len(payload), deprecate):
            if deprecate:
                self.server_status = packets.ok_status(payload, self._backend_caps())
            else:
                self.server_status = _eof_status(payload)
            self._mode_answer = None
            value = answer.value
            if value is None or value[0] is None:
                self._enter_commands(SessionReady(tls, None, "no sql_mode in the answer"))
            else:
                mode, client, results = (
                    None if v is None else v.decode("utf-8", "replace") for v in value
                )
                assert mode is not None
                self._enter_commands(SessionReady(tls, mode, charsets=(client, results)))
        else:
            answer.value = packets.parse_text_row(payload, _MODE_COLUMNS)

    def _enter_commands(self, ready: SessionReady) -> None:
        self._send_client_seq(
            packets.build_ok(packets.OkPacket(status=self.server_status), self.client_caps)
        )
        self.phase = Phase.COMMAND
        self._client_in.max_payload = self.settings.max_payload
        self._events.append(ready)
        leftover = self._server_in.take_remaining()
        if leftover:
            if self.masker is None:
                self._relay_server(leftover)
            else:
                self._relay_masked(leftover)
        try:
            self._pump_commands()
        except ProtocolError as exc:  # the client's own bytes, buffered during the login
            self._client_violation(str(exc))

    # ---------------------------------------------------------------- command phase

    def _commands_from(self, data: bytes) -> None:
        """The common case: whole command packets in one chunk, taken without buffering."""
        n = len(data)
        pos = 0
        left = self.settings.intake or -1  # commands still to take in this call
        budget = self.settings.intake_bytes or -1  # their bytes still to take (see there)
        self._more = False
        while (
            n - pos >= 4
            and left
            and budget
            and self.phase is Phase.COMMAND
            and not self._quit_taken
        ):
            length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
            end = pos + 4 + length
            if length >= MAX_PAYLOAD or end > n:
                break
            raw = data if (pos == 0 and end == n) else data[pos:end]
            self._on_command(data[pos + 3], raw[4:], raw)
            pos = end
            left -= 1
            if budget > 0:
                budget = max(0, budget - len(raw))
        if pos < n and self.phase is Phase.COMMAND and not self._quit_taken:
            self._client_in.feed(data[pos:] if pos else data)
            if left and budget:
                self._pump_commands(left if left > 0 else 0, budget if budget > 0 else 0)
            else:
                self._more = True

    def _pump_commands(self, limit: int | None = None, budget: int | None = None) -> None:
        """Take buffered commands: up to ``limit`` (None: the intake; 0: all) and about
        ``budget`` bytes of them (None: ``intake_bytes``; 0: any)."""
        reader = self._client_in
        left = (self.settings.intake if limit is None else limit) or -1
        if budget is None:
            budget = self.settings.intake_bytes if limit is None else 0
        budget = budget or -1
        while self.phase is Phase.COMMAND:
            if self._quit_taken:
                reader.clear()  # sent behind COM_QUIT: the server would not read it either
                break
            if not left or not budget:
                self._more = True
                return
            pkt = reader.next_packet()
            if pkt is None:
                self._more = False
                return
            self._on_command(pkt.seq, pkt.payload, pkt.raw)
            left -= 1
            if budget > 0:
                budget = max(0, budget - len(pkt.raw))
        self._more = False

    def _on_command(self, seq: int, payload: bytes, raw: bytes) -> None:
        if seq != 0:
            raise RemoteProtocolError(f"command packet with sequence id {seq}")
        if not payload:
            raise RemoteProtocolError("empty command packet")
        self._next_id += 1
        code = payload[0]
        cmd = ClientCommand(self._next_id, code, payload, raw)
        last, self._last_prepared = self._last_prepared, None
        if code in RESPONSE_SHAPE:
            if code in _CARRIES_STATEMENT_ID:
                if len(payload) < 5:
                    raise RemoteProtocolError(f"{cmd.label} without a statement id")
                if code in _NOT_FOR_THE_LAST_PREPARED and payload[1:5] == _LAST_PREPARED:
                    if code != Command.STMT_EXECUTE or last is None:
                        self._refuse_in_core(
                            cmd,
                            ErrorCode.SPECIFIC_ACCESS_DENIED,
                            "last-prepared",
                            LAST_PREPARED_REFUSAL,
                        )
                        return
                    # the statement of the prepare just before it (see _LAST_PREPARED)
                    cmd.stands_for = last.prepare
                    self._standing[cmd.id] = self._last_prepared = last
            elif code == Command.STMT_PREPARE:
                self._last_prepared = self._prepares[cmd.id] = _LastPrepared(cmd.id)
            elif code in _READ_PAST_THEIR_END and (why := _malformed(code, payload)):
                self._refuse_in_core(cmd, ErrorCode.MALFORMED_PACKET, "malformed-packet", why)
                return
            if code == Command.QUIT or (
                not self._gated and (cmd.stands_for is not None or self._stopped is not None)
            ):
                # QUIT leaves after whatever is still waiting for a decision; an execute
                # that stands for a prepare waits for its answer (see _drain_decisions);
                # with forwarding stopped, a command waits its turn for the ERR
                self._quitting = self._quit_taken = code == Command.QUIT
                self._undecided.append(cmd)
                self._undecided_bytes += len(raw)
                self._decisions[cmd.id] = None
                self._drain_decisions()
            elif not self._gated and not self._undecided:
                self._forward(cmd)  # no one to ask: straight through, in order
            else:
                self._undecided.append(cmd)
                self._undecided_bytes += len(raw)
                self._events.append(CommandReceived(cmd))
            return
        if code in REFUSED_COMMANDS:
            self._refuse_in_core(cmd, ErrorCode.SPECIFIC_ACCESS_DENIED, *REFUSED_COMMANDS[code])
        else:
            self._refuse_in_core(
                cmd,
                ErrorCode.UNKNOWN_COM,
                "unknown-command",
                f"unknown or unsupported command {cmd.label}; the gateway relays "
                "COM_QUERY, the COM_STMT_* family, COM_INIT_DB, COM_PING, COM_QUIT, "
                "COM_FIELD_LIST, COM_SET_OPTION, COM_RESET_CONNECTION, COM_STATISTICS and "
                "COM_PROCESS_KILL",
            )

    def _refuse_in_core(self, cmd: ClientCommand, err_code: int, rule: str, why: str) -> None:
        """Answer a command the core itself refuses, in its place in the line."""
        message = f"sqlgate: {why}"
        self._events.append(CommandRefused(cmd, err_code, message, rule))
        self._undecided.append(cmd)
        self._undecided_bytes += len(cmd.raw)
        self._decisions[cmd.id] = self._err(err_code, message)
        self._drain_decisions()

    def _drain_decisions(self) -> None:
        undecided = self._undecided
        decisions = self._decisions
        while undecided and undecided[0].id in decisions:
            cmd = undecided[0]
            if cmd.stands_for is not None:
                last = self._standing[cmd.id]
                if decisions[cmd.id] is None:
                    if last.statement_id is None:
                        break  # the prepare's answer has not come: it goes after it
                    if last.statement_id < 0:
                        decisions[cmd.id] = self._err(
                            ErrorCode.SPECIFIC_ACCESS_DENIED,
                            "sqlgate: " + LAST_PREPARED_UNPREPARED.format(last.failed),
                        )
                    else:  # sent under the real id: decided, recorded, masked as it
                        cmd = _naming(cmd, last.statement_id)
                del self._standing[cmd.id]
            undecided.popleft()
            self._undecided_bytes -= len(cmd.raw)
            err = decisions.pop(cmd.id)
            why = self._refused_why.pop(cmd.id, None) if self._refused_why else None
            if err is None and self._stopped is not None and cmd.command != Command.QUIT:
                err = self._stopped  # allowed, but nothing goes to the backend any more
                why = self._stopped_why
            if (
                err is None
                and self._close_refused
                and cmd.command in _NAMES_A_CLOSED_STATEMENT
                and packets.parse_statement_id(cmd.payload) in self._close_refused
            ):  # the client closed it: it runs no more (see CLOSE_REFUSED)
                err, why = self._closed_statement(packets.parse_statement_id(cmd.payload))
            if err is None and cmd.command == Command.STMT_EXECUTE and self._long_data_refused:
                err = self._long_data_refused.get(packets.parse_statement_id(cmd.payload))
                if err is not None:  # it would run without a chunk of a parameter
                    why = LONG_DATA_REFUSED.format(printable(packets.parse_err(err).message))
            if cmd.command == Command.STMT_PREPARE and err is not None:
                refused = self._prepares.pop(cmd.id, None)
                if refused is not None:  # it prepared nothing: see _LAST_PREPARED
                    refused.statement_id = _REFUSED
            if err is not None and RESPONSE_SHAPE.get(cmd.command) == _NONE:
                self._refused_silently(cmd, err, why)  # the client expects no answer to it
                continue
            if err is not None:
                # the answer follows the command's last packet (it may have continued)
                seq = (len(cmd.payload) // MAX_PAYLOAD + 1) & 0xFF
                resp = _Response(cmd, _SIMPLE, local=frame(seq, err))
                resp.error = int.from_bytes(err[1:3], "little")
                resp.refused = why
                if self.record_limit > 0 and self._report:
                    self._record_start(resp)
                self._responses.append(resp)
                continue
            self._forward(cmd)
            if cmd.command == Command.QUIT:
                break
        self._flush_local()
        if self._quitting and not undecided and not self._responses:
            self._close(self._quit_reason)

    def _refused_silently(self, cmd: ClientCommand, err: bytes, why: str | None) -> None:
        """A refused COM_STMT_CLOSE or COM_STMT_SEND_LONG_DATA: the client expects no
        answer, so it gets none (an ERR would be read as the answer to its next command);
        its result carries the error. Nothing reached the target: a statement whose close
        was refused is still prepared there, and the gateway keeps what it knows of it
        (MariaDB never gives its id to another one in the session), but the client holds
        it closed: a later command naming it is answered as the server answers a closed
        statement, and sent nowhere (CLOSE_REFUSED). A refused chunk of long data makes
        the next execute of its statement fail instead of running without it
        (LONG_DATA_REFUSED)."""
        if cmd.command == Command.STMT_SEND_LONG_DATA:
            self._long_data_refused[packets.parse_statement_id(cmd.payload)] = err
        elif cmd.command == Command.STMT_CLOSE:
            statement_id = packets.parse_statement_id(cmd.payload)
            if statement_id not in self._close_refused:
                reason = printable(packets.parse_err(err).message.removeprefix("sqlgate: "))
                self._close_refused[statement_id] = reason
        if self._report:
            recorded = b"" if self.record_limit > 0 else None  # the client gets nothing
            error = int.from_bytes(err[1:3], "little")
            self._events.append(
                CommandCompleted(cmd, 0, 0, error, recorded=recorded, refused=why, sent=False)
            )

    def _closed_statement(self, statement_id: int) -> tuple[bytes, str]:
        """The ERR a command naming a statement whose close was refused gets, and why."""
        message = CLOSE_REFUSED.format(statement_id, self._close_refused[statement_id])
        err = self._err(ErrorCode.UNKNOWN_STMT_HANDLER, message)
        return err, CLOSE_REFUSED_WHY.format(statement_id)

    def _forward(self, cmd: ClientCommand) -> None:
        """Send an allowed command to the backend and expect its answer."""
        code = cmd.command
        shape = RESPONSE_SHAPE[code]
        resp = None
        if shape != _NONE:
            resp = _Response(cmd, shape)
            if self.record_limit > 0 and self._report:
                self._record_start(resp)
            self._responses.append(resp)
            if code == Command.STMT_PREPARE:
                resp.last = self._prepares.pop(cmd.id, None)
        # A cursor's plan ends with it (a close, a reset, a new execute, a reset of the
        # connection), but only once the answers to the commands sent before have been
        # read: a FETCH sent in the same write still needs it.
        if code == Command.STMT_CLOSE:
            statement_id = packets.parse_statement_id(cmd.payload)
            self._long_data_refused.pop(statement_id, None)
            self._close_refused.pop(statement_id, None)  # closed on the server now
            self.statements.pop(statement_id, None)
            self.prepared_sql.pop(statement_id, None)
            self.prepared_charsets.pop(statement_id, None)
            self._prepared_columns.pop(statement_id, None)
            if self._cursor_plans:
                self._plan_drops.append(statement_id)
        elif code == Command.RESET_CONNECTION:
            self._long_data_refused.clear()
            self._close_refused.clear()
            self.statements.clear()
            self.prepared_sql.clear()
            self.prepared_charsets.clear()
            self._prepared_columns.clear()
            if self._cursor_plans:
                self._plan_drops.append(_ALL_PLANS)
        else:
            if code == Command.STMT_RESET and self._long_data_refused:
                # the server drops the statement's long data: a new one may be sent
                self._long_data_refused.pop(packets.parse_statement_id(cmd.payload), None)
            if self._cursor_plans and code == Command.STMT_RESET:
                # it closes the statement's cursor, if it had one (an execute closes it
                # only once it runs: see _on_response_packet)
                self._plan_drops.append(packets.parse_statement_id(cmd.payload))
        if self._plan_drops:
            if resp is not None:
                resp.drops, self._plan_drops = self._plan_drops, []
            elif len(self._responses) == 0:  # nothing is on its way: it ends now
                self._end_plans(self._plan_drops)
                self._plan_drops = []
        if self._server_tls is None:
            self._to_server.append(cmd.raw)
        else:
            self._send_server(cmd.raw)
        if shape == _NONE and self._report:
            recorded = b"" if self.record_limit > 0 else None  # the client gets nothing
            self._events.append(CommandCompleted(cmd, 0, 0, None, recorded=recorded))

    def _flush_local(self) -> None:
        """Send the gateway's own answers that have reached the head of the line."""
        responses = self._responses
        while responses and responses[0].local is not None:
            resp = responses.popleft()
            assert resp.local is not None
            self._send_client(resp.local)
            if self._report:
                event = CommandCompleted(
                    resp.cmd, 0, 0, resp.error, refused=resp.refused, sent=False
                )
                if resp.recorded is not None:
                    self._record_end(resp, event, resp.local, 0, len(resp.local))
                self._events.append(event)

    def _relay_server(self, data: bytes) -> None:
        """Pass backend bytes to the client, following each answer to its end.

        The hot path: row and column-definition frames are skipped by length without
        copying, and whole chunks go out as they came unless a local answer has to be
        slotted in between.
        """
        if self._server_buf:
            data = self._server_buf + data
            self._server_buf = b""
        n = len(data)
        pos = 0
        emit_from = 0
        skip = self._skip
        if skip:
            take = skip if skip <= n else n
            pos = take
            skip -= take
        responses = self._responses
        deprecate = self.deprecate_eof
        eof_limit = MAX_PAYLOAD if deprecate else 9
        last_seq = self._last_seq
        report = self._report
        recording = self._recording
        rec_from = 0  # where the current answer's bytes in ``data`` begin
        handover = False  # the rest goes to the masked relay
        try:
            while pos < n and not skip:
                start = pos
                if n - pos < 4:
                    break
                length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
                if length and n - pos < 5:
                    break
                if self._continued:
                    # the rest of a packet over 16 MiB: pass it through
                    self._continued = length == MAX_PAYLOAD
                    last_seq = data[pos + 3]
                    pos += 4
                    take = length if length <= n - pos else n - pos
                    pos += take
                    skip = length - take
                    continue
                if not responses or responses[0].local is not None:
                    # nothing asked for this: only an error (the server killing us) may come
                    if length == 0 or data[pos + 4] != 0xFF:
                        raise RemoteProtocolError("target sent data nobody asked for")
                    if n - pos - 4 < length:
                        break
                    last_seq = data[pos + 3]
                    pos += 4 + length
                    continue
                resp = responses[0]
                first = data[pos + 4] if length else -1
                state = resp.state
                # Packets whose first byte tells all are streamed without a copy: rows (a
                # 0xFE too long for a terminator is a row too), column definitions, and a
                # one-byte column count.
                if state == _R_ROWS:
                    stream = first != 0xFF and (first != 0xFE or length >= eof_limit)
                    if stream:
                        resp.rows += 1
                elif state == _R_COLUMNS:
                    if resp.left == 2 and length > _DEFINITION_HEAD:
                        # the first of two columns: a SHOW CREATE TABLE's goes to the
                        # masked relay, which takes a connection's password out of it
                        # (the first bytes of one that may be wait for the rest)
                        if n - pos < 4 + _DEFINITION_HEAD:
                            if masking.may_be_table_definition(data[pos + 4 :], 0):
                                break
                        elif masking.may_be_table_definition(data, pos + 4):
                            resp.mask = self._begin_masking(resp)
                            resp.mask.defs = []
                            handover = True
                            break
                    stream = True
                    resp.left -= 1
                    if not resp.left:
                        resp.state = _R_ROWS if deprecate else _R_COLUMNS_EOF
                elif state == _R_START and length == 1 and 0 < first < 0xFB:
                    stream = True
                    resp.left = first
                    resp.state = _R_COLUMNS
                else:
                    stream = False
                if stream:
                    resp.started = True
                    self._continued = length == MAX_PAYLOAD
                    last_seq = data[pos + 3]
                    pos += 4
                    take = length if length <= n - pos else n - pos
                    pos += take
                    skip = length - take
                    continue
                if n - pos - 4 < length:
                    break
                if length == MAX_PAYLOAD:
                    raise RemoteProtocolError("a control packet over 16 MiB")
                payload = data[pos + 4 : pos + 4 + length]
                done = self._on_response_packet(resp, payload)
                resp.started = True
                last_seq = data[pos + 3]
                pos += 4 + length
                if done:
                    responses.popleft()
                    if report:
                        event = CommandCompleted(
                            resp.cmd, resp.rows, resp.affected, resp.error, resp.results
                        )
                        if recording:
                            rec_from = self._record_end(resp, event, data, rec_from, pos)
                        self._events.append(event)
                    if responses and responses[0].local is not None:
                        self._last_seq = last_seq
                        self._emit(data[emit_from:pos])
                        emit_from = pos
                        self._flush_local()
                    if self._quitting and not responses and not self._undecided:
                        self._close(self._quit_reason)
        except ProtocolError:
            # what was relayed stays relayed; the client learns the sequence id it expects
            if start > emit_from:
                self._emit(data[emit_from:start])
            self._last_seq = last_seq if start > emit_from else self._last_seq
            raise
        self._skip = skip
        self._last_seq = last_seq
        if recording and responses and pos > rec_from:
            self._record(responses[0], data, rec_from, pos)
        if pos < n:
            self._server_buf = data[pos:]
        if emit_from == 0 and pos == n:
            self._emit(data)
        elif pos > emit_from:
            self._emit(data[emit_from:pos])
        if handover:
            self._mask_sticky = True
            self._relay_masked(b"")

    def _emit(self, data: bytes) -> None:
        if self._client_tls is None:
            self._to_client.append(data)
        else:
            self._send_client(data)

    # ------------------------------------------------------------------ recording

    def _record_start(self, resp: _Response) -> None:
        """Capture this answer, with the limit in force now."""
        resp.recorded = bytearray()
        resp.room = self.record_limit
        self._recording += 1

    def _record(self, resp: _Response, data: bytes, start: int, end: int) -> None:
        """Add ``data[start:end]``, bytes of ``resp`` the client got, to its capture; past
        the limit only the flag grows (once cut, a capture never resumes)."""
        recorded = resp.recorded
        if recorded is None or start >= end:
            return
        room = resp.room
        if end - start <= room:
            recorded += data[start:end]
            resp.room = room - (end - start)
            return
        if room > 0:
            recorded += data[start : start + room]
            resp.room = 0
        resp.recorded_truncated = True

    def _record_end(
        self, resp: _Response, event: CommandCompleted, data: bytes, start: int, end: int
    ) -> int:
        """The answer ends at ``data[end]``: complete its capture into ``event``. Returns
        ``end``, where the next answer's bytes begin."""
        recorded = resp.recorded
        if recorded is not None:
            if not recorded and end - start <= resp.room:
                event.recorded = data[start:end]  # the whole answer came in this chunk
            else:
                self._record(resp, data, start, end)
                event.recorded = bytes(recorded)
                event.recorded_truncated = resp.recorded_truncated
            resp.recorded = None
            self._recording -= 1
        return end

    # ------------------------------------------------------------------ masked relay

    def _relay_masked(self, data: bytes) -> None:
        """Pass backend bytes to the client with a masker in place (see the module docstring).

        Follows the fast relay's rules, except that a packet the masker must see is taken
        whole: column definitions (held until the plan), rows of a planned result set, ERRs,
        and every packet after a row whose framing changed (they are renumbered). Only
        one such packet is buffered, bounded by ``max_payload``.
        """
        partial = self._partial
        if self._server_buf:  # an incomplete head the fast relay left behind
            partial += self._server_buf
            self._server_buf = b""
        if partial:
            partial += data
            if self._partial_whole and self._packet_end(partial, 0) < 0:
                return
            data = bytes(partial)
            partial.clear()
            self._partial_whole = False
        n = len(data)
        pos = 0
        emit_from = 0
        skip = self._skip
        if skip:
            take = skip if skip <= n else n
            pos = take
            skip -= take
        responses = self._responses
        deprecate = self.deprecate_eof
        eof_limit = MAX_PAYLOAD if deprecate else 9
        start = pos
        recording = self._recording
        rec_from = 0  # where the current answer's bytes in ``data`` begin
        try:
            while pos < n and not skip:
                start = pos
                if n - pos < 4:
                    break
                length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
                if length and n - pos < 5:
                    break
                if self._continued:
                    # the rest of a row over 16 MiB that streams
                    self._continued = length == MAX_PAYLOAD
                    self._last_seq = data[pos + 3]
                    pos += 4
                    take = length if length <= n - pos else n - pos
                    pos += take
                    skip = length - take
                    continue
                resp = responses[0] if responses and responses[0].local is None else None
                if resp is None:
                    if length == 0 or data[pos + 4] != 0xFF:
                        raise RemoteProtocolError("target sent data nobody asked for")
                elif not self._shift:
                    m = resp.mask
                    if m is None:
                        m = resp.mask = self._begin_masking(resp)
                    state = resp.state
                    # what the fast relay streams still streams, unless the masker must see it
                    if state == _R_ROWS:
                        if m.masks is not None and not resp.binary:
                            # the rows of a planned text result set: all the whole ones
                            # here are masked in one pass, then go out in one piece
                            end, out = self._mask_text_rows(resp, m, data, pos, eof_limit)
                            if end > pos:
                                if out is not None:
                                    if start > emit_from:
                                        self._emit(data[emit_from:start])
                                    self._emit(out)
                                    emit_from = end
                                    if recording:
                                        self._record(resp, data, rec_from, start)
                                        self._record(resp, out, 0, len(out))
                                        rec_from = end
                                resp.started = True
                                pos = end
                                continue
                        first = data[pos + 4] if length else -1
                        stream = (
                            m.masks is None
                            and first != 0xFF
                            and (first != 0xFE or length >= eof_limit)
                        )
                        if stream:
                            resp.rows += 1
                    elif state == _R_COLUMNS and m.defs is None:
                        stream = True  # definitions of a set that began before the masker
                        resp.left -= 1
                        if not resp.left:
                            resp.state = _R_ROWS if deprecate else _R_COLUMNS_EOF
                    else:
                        stream = False
                    if stream:
                        resp.started = True
                        self._continued = length == MAX_PAYLOAD
                        self._last_seq = data[pos + 3]
                        pos += 4
                        take = length if length <= n - pos else n - pos
                        pos += take
                        skip = length - take
                        continue
                end = self._packet_end(data, pos)
                if end < 0:
                    self._partial_whole = True
                    break
                raw = data[pos:end]
                payload = raw[4:] if length < MAX_PAYLOAD else join_frames(raw)
                out, done = self._whole_packet(resp, data[pos + 3], payload, raw)
                if out is not None:  # replaced (b"": held back for now)
                    if start > emit_from:
                        self._emit(data[emit_from:start])
                    if out:
                        self._emit(out)
                    emit_from = end
                    if recording and resp is not None:
                        self._record(resp, data, rec_from, start)
                        self._record(resp, out, 0, len(out))
                        rec_from = end
                pos = end
                if resp is None:
                    continue
                resp.started = True
                if done:
                    responses.popleft()
                    self._shift = 0
                    if self._report:
                        m = resp.mask
                        event = CommandCompleted(
                            resp.cmd,
                            resp.rows,
                            resp.affected,
                            resp.error,
                            resp.results,
                            m.masked if m is not None else {},
                            results_masked=resp.marks,
                        )
                        if recording:
                            rec_from = self._record_end(resp, event, data, rec_from, pos)
                        self._events.append(event)
                    if responses and responses[0].local is not None:
                        if pos > emit_from:
                            self._emit(data[emit_from:pos])
                        emit_from = pos
                        self._flush_local()
                    if self._quitting and not responses and not self._undecided:
                        self._close(self._quit_reason)
        except ProtocolError:
            # what was relayed stays relayed; _last_seq already says how far it went
            if start > emit_from:
                self._emit(data[emit_from:start])
            raise
        finally:
            self._mask_sticky = bool(
                self._partial
                or self._server_buf
                or self._shift
                or (responses and responses[0].mask is not None)
            )
        self._skip = skip
        if recording and responses and pos > rec_from:
            self._record(responses[0], data, rec_from, pos)
        if pos < n:
            partial += data[pos:]
            self._mask_sticky = True
        if emit_from == 0 and pos == n:
            self._emit(data)
        elif pos > emit_from:
            self._emit(data[emit_from:pos])

    def _mask_text_rows(
        self, resp: _Response, m: _Masking, data: bytes, pos: int, eof_limit: int
    ) -> tuple[int, bytes | None]:
        """Mask the text rows that lie whole, one frame each, in ``data`` from ``pos`` on,
        under the plan ``m.masks`` (the answer's sequence ids unshifted so far).

        Returns where the run ends (``pos`` when the packet there is not such a row: the
        caller then takes it one packet at a time) and what goes to the client in place of
        ``data[pos:end]``: one piece, or None when no value changed. A row whose masked
        payload needs a second frame ends the run, framed by ``_reframe`` (which shifts
        the rest of the answer).
        """
        rows = m.text
        masks = m.masks
        assert masks is not None
        if rows is None or rows.masks is not masks:
            rows = m.text = masking.TextRows(masks)
        mask_row = rows.mask
        n = len(data)
        kept = pos
        pieces: list[bytes] = []
        count = 0
        last = -1  # where the last row taken begins (its sequence id is the answer's last)
        while n - pos >= 5:
            length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
            end = pos + 4 + length
            if end > n or not length or length >= MAX_PAYLOAD:
                break
            first = data[pos + 4]
            if first == 0xFF or (first == 0xFE and length < eof_limit):
                break  # an ERR or the end of the set
            try:
                row = mask_row(data, pos + 4, end)
            except ProtocolError:
                break  # the rows before it go first; taken alone, it fails again
            count += 1
            last = pos
            if row is not None:
                size = len(row)
                if size == length:  # the same length: the same header
                    pieces.append(data[kept : pos + 4])
                elif size < MAX_PAYLOAD:
                    pieces.append(data[kept:pos])
                    pieces.append((size | data[pos + 3] << 24).to_bytes(4, "little"))
                else:
                    pieces.append(data[kept:pos])
                    framed = self._reframe(data[pos + 3], data[pos + 4 : end], data[pos:end], row)
                    assert framed is not None  # it set _last_seq and the shift
                    pieces.append(framed)
                    kept = pos = end
                    last = -1
                    break
                pieces.append(row)
                kept = end
            pos = end
        if last >= 0:
            self._last_seq = data[last + 3]
        if count:
            resp.rows += count
            masked = m.masked
            for i, changed in rows.take_counts().items():
                mask = masks[i]
                assert mask is not None
                masked[mask.label] = masked.get(mask.label, 0) + changed
        if not pieces:
            return pos, None
        if kept < pos:
            pieces.append(data[kept:pos])
        return pos, b"".join(pieces)

    def _end_plans(self, drops: list[int]) -> None:
        for statement_id in drops:
            if statement_id == _ALL_PLANS:
                self._cursor_plans.clear()
            else:
                self._cursor_plans.pop(statement_id, None)

    def _begin_masking(self, resp: _Response) -> _Masking:
        if resp.drops is not None:
            self._end_plans(resp.drops)
            resp.drops = None
        m = _Masking()
        if resp.shape == _FETCH and self.masker is not None and self._cursor_plans:
            plan = self._cursor_plans.get(packets.parse_statement_id(resp.cmd.payload))
            if plan is not None:
                m.columns, m.masks = plan
        return m

    def _packet_end(self, buf: bytes | bytearray, pos: int) -> int:
        """Where the logical packet at ``pos`` ends, or -1 while some of it is missing.

        A packet the masked relay must hold whole may span 16 MiB frames; it is refused
        when it would exceed ``max_payload`` (masking keeps one row in memory, bounded).
        """
        n = len(buf)
        total = 0
        expected = -1
        limit = self.settings.max_payload
        while True:
            if n - pos < 4:
                return -1
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            seq = buf[pos + 3]
            if expected >= 0 and seq != expected:
                raise RemoteProtocolError(
                    f"continuation frame has sequence id {seq}, expected {expected}"
                )
            expected = (seq + 1) & 0xFF
            total += length
            if total > limit:
                raise RemoteProtocolError(
                    f"a row of more than {limit} bytes exceeds what the gateway masks"
                )
            if n - pos - 4 < length:
                return -1
            pos += 4 + length
            if length < MAX_PAYLOAD:
                return pos

    def _whole_packet(
        self, resp: _Response | None, seq: int, payload: bytes, raw: bytes
    ) -> tuple[bytes | None, bool]:
        """Advance an answer by one whole packet under masking.

        Returns what goes to the client in place of ``raw`` (None: ``raw`` itself; b"":
        nothing yet, the packet is held) and whether the answer is complete.
        """
        masker = self.masker
        first = payload[0] if payload else -1
        if first == 0xFF:
            scrubbed = payload if masker is None else masking.scrub_err(payload, masker.scrub)
            done = resp is not None and self._on_response_packet(resp, payload)
            return self._reframe(seq, payload, raw, scrubbed), done
        assert resp is not None  # the caller lets only an ERR come unasked
        m = resp.mask
        if m is None:
            m = resp.mask = self._begin_masking(resp)
        state = resp.state
        deprecate = self.deprecate_eof
        if state == _R_ROWS and not packets.is_result_terminator(first, len(payload), deprecate):
            resp.rows += 1
            masks = m.masks
            if masks is None:
                return self._reframe(seq, payload, raw, payload), False
            if resp.binary:
                row, counts = masking.mask_binary_row(payload, m.columns, masks)
            else:
                row, counts = masking.mask_text_row(payload, masks)
            masked = m.masked
            for i, count in counts.items():
                mask = masks[i]
                assert mask is not None
                masked[mask.label] = masked.get(mask.label, 0) + count
            return self._reframe(seq, payload, raw, row), False
        if len(payload) >= MAX_PAYLOAD:
            raise RemoteProtocolError("a control packet over 16 MiB")
        defs = m.defs
        if defs is not None and (
            state == _R_COLUMNS or (state == _R_PREP_COLUMNS and resp.left > 0)
        ):
            defs.append(packets.parse_column_definition(payload))
            m.held.append((seq, raw, payload))
            done = self._on_response_packet(resp, payload)
            if resp.left:
                return b"", done
            return self._release_columns(m, resp, rows_follow=state == _R_COLUMNS), done
        if state == _R_LIST and first != 0xFE and self.masker is not None:
            # COM_FIELD_LIST: each definition ends with its column's default value
            new = masking.mask_field_list_default(payload, self.masker)
            done = self._on_response_packet(resp, payload)
            return self._reframe(seq, payload, raw, new), done
        done = self._on_response_packet(resp, payload)
        after = resp.state
        if after != state and (after == _R_COLUMNS or after == _R_PREP_COLUMNS):
            # a block of column definitions begins: collect it (without a masker, in an
            # answer with a SHOW CREATE TABLE, for DEFINITIONS_ONLY)
            m.defs = []
        elif (state == _R_COLUMNS_EOF and after != _R_ROWS) or state == _R_ROWS:
            # a result set ended (or opened a cursor): its plan ends with it
            if self.server_status & _CURSOR_EXISTS and resp.cmd.command == Command.STMT_EXECUTE:
                statement_id = packets.parse_statement_id(resp.cmd.payload)
                if m.masks is not None:
                    self._cursor_plans[statement_id] = (m.columns, m.masks)
                else:
                    self._cursor_plans.pop(statement_id, None)
            m.columns = ()
            m.masks = None
        return self._reframe(seq, payload, raw, payload), done

    def _statement_of(self, cmd: ClientCommand) -> bytes | None:
        """The SQL text whose result a command's answer holds: its own, or for an execute
        its prepared statement's (None: not known)."""
        if cmd.command == Command.STMT_EXECUTE:
            return self.prepared_sql.get(packets.parse_statement_id(cmd.payload))
        return cmd.sql

    def _release_columns(self, m: _Masking, resp: _Response, *, rows_follow: bool) -> bytes:
        """The held column definitions, once the last one is in: plan the set, replace the
        definitions of masked columns, and send them all."""
        defs = m.defs
        assert defs is not None
        held = m.held
        m.defs = None
        m.held = []
        masker = self.masker or masking.DEFINITIONS_ONLY
        if not rows_follow and resp.prep_id >= 0:
            self._prepared_columns[resp.prep_id] = tuple(defs)
        if rows_follow and packets.opens_cursor(resp.cmd.payload):
            # MariaDB gives a cursor's columns their alias as origin name (org_name):
            # the prepared definitions name the origins
            statement_id = packets.parse_statement_id(resp.cmd.payload)
            origins = masking.cursor_origins(defs, self._prepared_columns.get(statement_id))
            sql = self.prepared_sql.get(statement_id)
            if origins is None:
                planned = masker.plan(defs, origins_unsure=True, statement=sql)
            else:
                planned = masker.plan(origins, statement=sql)
            masks = masking.normalize_plan(planned, len(defs))
        else:
            planned = masker.plan(defs, statement=self._statement_of(resp.cmd))
            masks = masking.normalize_plan(planned, len(defs))
        if rows_follow:
            m.columns = tuple(defs)
            m.masks = masks
        out = []
        for i, (seq, raw, payload) in enumerate(held):
            new = payload
            if masks is not None and masks[i] is not None and not masking.reads_only(masks[i]):
                new = packets.build_column_definition(masking.masked_column_definition(defs[i]))
            replaced = self._reframe(seq, payload, raw, new)
            out.append(raw if replaced is None else replaced)
        return b"".join(out)

    def _reframe(self, seq: int, payload: bytes, raw: bytes, new: bytes) -> bytes | None:
        """Frame ``new`` in place of a packet that came as ``raw``, renumbered by the
        answer's shift; None when ``raw`` can go as it is. A payload that needs another
        number of frames than it came in shifts the rest of the answer."""
        shift = self._shift
        if new is payload or new == payload:
            if not shift:
                self._last_seq = (seq + frames_needed(len(payload)) - 1) & 0xFF
                return None
        out_seq = (seq + shift) & 0xFF
        frames = frames_needed(len(new))
        self._shift = (shift + frames - frames_needed(len(payload))) & 0xFF
        self._last_seq = (out_seq + frames - 1) & 0xFF
        return frame(out_seq, new)

    def _on_response_packet(self, resp: _Response, payload: bytes) -> bool:
        """Advance one answer by one packet; True when the answer is complete."""
        state = resp.state
        first = payload[0] if payload else -1
        if state == _R_ONE:
            if first == 0xFF:
                resp.error = packets.parse_err(payload).code
            elif first == 0x00 and resp.cmd.command != Command.STATISTICS:
                resp.affected = _affected(payload)
                self.server_status = packets.ok_status(payload, self.client_caps)
            return True
        if first == 0xFF:
            resp.error = packets.parse_err(payload).code
            if resp.last is not None:  # a prepare that failed prepared nothing
                self._learn_last(resp.last, _FAILED)
            return True
        deprecate = self.deprecate_eof
        if state == _R_START:
            if self._cursor_plans and resp.binary and resp.results is None:
                self._executed(resp)
            if first == 0x00:
                resp.affected += _affected(payload)
                status = packets.ok_status(payload, self.client_caps)
                return self._after_result(resp, status, result_set=False)
            if first == 0xFB:
                raise RemoteProtocolError("LOAD DATA LOCAL request, which the gateway never allows")
            count, _ = packets.read_lenenc_int(payload, 0)
            if not count:
                raise RemoteProtocolError("result set with no columns")
            resp.left = count
            resp.state = _R_COLUMNS
            return False
        if state == _R_COLUMNS:
            resp.left -= 1  # the last definition (the others were streamed)
            if resp.left == 0:
                resp.state = _R_ROWS if deprecate else _R_COLUMNS_EOF
            return False
        if state == _R_COLUMNS_EOF:
            if not packets.is_eof_packet(first, len(payload)):
                raise RemoteProtocolError("expected EOF after column definitions")
            status = _eof_status(payload)
            if status & _CURSOR_EXISTS and resp.binary:
                return self._after_result(resp, status)
            resp.state = _R_ROWS
            return False
        if state == _R_ROWS:
            # only terminators reach here (rows are skipped by the relay loop)
            if first == 0xFE and packets.is_result_terminator(first, len(payload), deprecate):
                if deprecate:
                    status = packets.ok_status(payload, self.client_caps)
                else:
                    status = _eof_status(payload)
                return self._after_result(resp, status)
            resp.rows += 1
            return False
        if state == _R_LIST:
            if first == 0xFE and packets.is_result_terminator(first, len(payload), deprecate):
                return True
            return False
        if resp.shape == _PREPARE:
            done = self._on_prepare_packet(resp, payload)
            if done and resp.last is not None:
                self._learn_last(resp.last, resp.prep_id)
            return done
        raise RemoteProtocolError("response in an unknown state")

    def _executed(self, resp: _Response) -> None:
        """A COM_STMT_EXECUTE's answer is not an ERR: the server ran the statement, which
        closed its open cursor first, so that cursor's plan ends (one the answer opens
        is planned anew). An execute answered with an ERR may have closed nothing: the
        server reads its parameters before it closes the cursor, and one that cannot be
        read (a short packet, a wrong count, long data that failed) leaves the cursor
        open, its rows to be fetched and masked with the plan."""
        if resp.cmd.command == Command.STMT_EXECUTE:
            self._cursor_plans.pop(packets.parse_statement_id(resp.cmd.payload), None)

    def _learn_last(self, last: _LastPrepared, statement_id: int) -> None:
        """A prepare's whole answer came: executes that stand for it may go on."""
        last.statement_id = statement_id
        self._prepared_last = bool(self._standing)

    def _after_result(self, resp: _Response, status: int, result_set: bool = True) -> bool:
        self.server_status = status
        if resp.shape == _FETCH:
            return True
        if status & _MORE_RESULTS or resp.results is not None:
            # one result of several: keep its own figures (the totals add them all up)
            results = resp.results
            if results is None:
                results = resp.results = []
            rows = resp.rows - sum(r for r, _, _ in results)
            affected = resp.affected - sum(a for _, a, _ in results)
            results.append((rows, affected, result_set))
            m = resp.mask
            marks = resp.marks
            if marks is None:
                marks = resp.marks = []
            marks.append(dict(m.masked) if m is not None else {})
        if status & _MORE_RESULTS:
            resp.state = _R_START
            return False
        return True

    def _on_prepare_packet(self, resp: _Response, payload: bytes) -> bool:
        state = resp.state
        deprecate = self.deprecate_eof
        if state == _R_PREP_OK:
            ok = packets.parse_stmt_prepare_ok(payload)
            self.statements[ok.statement_id] = ok.param_count
            self.prepared_sql[ok.statement_id] = resp.cmd.payload[1:]
            self.prepared_charsets[ok.statement_id] = self._prepare_charsets.pop(resp.cmd.id, None)
            if self._close_refused:  # a new statement under that id (after a reset)
                self._close_refused.pop(ok.statement_id, None)
            resp.prep_id = ok.statement_id
            resp.prep_cols = ok.column_count
            resp.left = ok.param_count
            resp.eof_after = False
            if ok.param_count:
                resp.state = _R_PREP_PARAMS
                return False
            return self._prepare_columns(resp)
        first = payload[0] if payload else -1
        if resp.left == 0:
            # the EOF closing a block of definitions
            if not packets.is_eof_packet(first, len(payload)):
                raise RemoteProtocolError("expected EOF after definitions")
            if state == _R_PREP_PARAMS:
                return self._prepare_columns(resp)
            return True
        resp.left -= 1
        if resp.left == 0 and deprecate:
            if state == _R_PREP_PARAMS:
                return self._prepare_columns(resp)
            return True
        return False

    def _prepare_columns(self, resp: _Response) -> bool:
        if not resp.prep_cols:
            return True
        resp.left = resp.prep_cols
        resp.state = _R_PREP_COLUMNS
        return False


class _LoginRefused(Exception):
    """The backend asked for something the gateway will not do during login."""


def new_scramble(length: int) -> bytes:
    """A fresh challenge for a client, made as MySQL and MariaDB servers make theirs:
    random 7-bit bytes, none of them NUL or '$'. Clients count on that: Connector/J
    reads the greeting's challenge as ASCII text (a byte over 0x7F turns into another)
    and a switch's up to its first NUL, so with any random byte its proof came out wrong
    and the login failed as a wrong password."""
    out = bytearray(os.urandom(length))
    for i, byte in enumerate(out):
        byte &= 0x7F
        out[i] = byte + 1 if byte in (0, 0x24) else byte
    return bytes(out)


def printable(text: str) -> str:
    """A name the client chose, fit for a message, the log and the ledger: control and
    other unprintable characters escaped (a user name holding a newline would otherwise
    forge a line of the gateway's log)."""
    return text if text.isprintable() else repr(text)[1:-1]


def _naming(cmd: ClientCommand, statement_id: int) -> ClientCommand:
    """``cmd`` (a command whose statement id is 0xFFFFFFFF) under ``statement_id``: the id
    follows the command byte in its first frame, so the frames keep their lengths."""
    sid = statement_id.to_bytes(4, "little")
    payload = cmd.payload[:1] + sid + cmd.payload[5:]
    raw = cmd.raw[:5] + sid + cmd.raw[9:]
    return ClientCommand(cmd.id, cmd.command, payload, raw, cmd.stands_for)


def _eof_status(payload: bytes) -> int:
    """Status flags of an EOF packet (0xFE, warnings, status), read in place."""
    if len(payload) != 5:
        raise RemoteProtocolError(f"EOF packet of {len(payload)} bytes")
    return payload[3] | (payload[4] << 8)


def _affected(ok_payload: bytes) -> int:
    value, _ = packets.read_lenenc_int(ok_payload, 1)
    return value or 0


__all__ = [
    "Account",
    "AuthFailed",
    "Backend",
    "ClientAuthenticated",
    "ClientCommand",
    "CommandCompleted",
    "CommandReceived",
    "CommandRefused",
    "CursorType",
    "Event",
    "Identity",
    "Phase",
    "Session",
    "SessionClosed",
    "SessionReady",
    "TokenPresented",
    "SessionSettings",
    "printable",
]


def _login_user(hello: packets.HandshakeResponse) -> str:
    """The user name as the server reads it: in the login's character set (a latin1
    client sends ``ü`` as one byte, which MariaDB converts before it looks the account
    up), UTF-8 when that is not known."""
    return read_text(hello.user, collation_charset(hello.charset))[0]
