"""Numbers of the MySQL client/server protocol, named once.

Each discriminator carries the protocol rule it encodes; everything the gateway
reads or writes on the wire refers to these names, never to bare numbers.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

MAX_PAYLOAD = 0xFFFFFF
"""A payload of exactly this length is continued by the next packet (16 MiB rule)."""

MAX_USER_BYTES = 256
"""The longest user name (UTF-8) the gateway reads in a login (MariaDB's limit is 128
characters); a gateway account's name must fit."""

PROTOCOL_VERSION = 10
SCRAMBLE_LENGTH = 20


class Capability(IntFlag):
    """Capability flags exchanged in the greeting and the handshake response."""

    LONG_PASSWORD = 1 << 0
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25
    ZSTD_COMPRESSION = 1 << 26
    QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTH = 1 << 28
    CAPABILITY_EXTENSION = 1 << 29
    SSL_VERIFY_SERVER_CERT = 1 << 30
    REMEMBER_OPTIONS = 1 << 31


GATEWAY_CAPABILITIES = (
    Capability.LONG_PASSWORD
    | Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.CONNECT_WITH_DB
    | Capability.ODBC
    | Capability.PROTOCOL_41
    | Capability.INTERACTIVE
    | Capability.IGNORE_SIGPIPE
    | Capability.TRANSACTIONS
    | Capability.SECURE_CONNECTION
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.SESSION_TRACK
    | Capability.DEPRECATE_EOF
)
"""The allow-list: the only capabilities the gateway ever negotiates on either leg.

Left out on purpose: COMPRESS and ZSTD_COMPRESSION (the gateway must read every byte),
LOCAL_FILES (LOAD DATA LOCAL lets the server pull client files), OPTIONAL_RESULTSET_METADATA
and QUERY_ATTRIBUTES (result and command layouts the gateway does not parse),
CAN_HANDLE_EXPIRED_PASSWORDS and MULTI_FACTOR_AUTH (the gateway owns the backend login),
IGNORE_SPACE (the server adds the sql_mode IGNORE_SPACE to the session, under which it
reads function names differently from the gateway; node's mysql2 asks for it by default),
NO_SCHEMA (the server then drops the schema of every qualified name and reads it in the
current schema: ``UPDATE scratch.orders`` after ``USE shop`` changes ``shop.orders``,
which no rule on ``shop.orders`` would see), SSL (added per leg by the gateway itself),
and the MariaDB extended capabilities.
"""


class ServerStatus(IntFlag):
    """Status flags carried by OK and EOF packets."""

    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002
    MORE_RESULTS_EXISTS = 0x0008
    NO_GOOD_INDEX_USED = 0x0010
    NO_INDEX_USED = 0x0020
    CURSOR_EXISTS = 0x0040
    LAST_ROW_SENT = 0x0080
    DB_DROPPED = 0x0100
    NO_BACKSLASH_ESCAPES = 0x0200
    METADATA_CHANGED = 0x0400
    QUERY_WAS_SLOW = 0x0800
    PS_OUT_PARAMS = 0x1000
    IN_TRANS_READONLY = 0x2000
    SESSION_STATE_CHANGED = 0x4000


class Command(IntEnum):
    """First byte of every packet the client sends in the command phase."""

    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F
    STMT_BULK_EXECUTE = 0xFA

    @property
    def label(self) -> str:
        """The name the ledger and the logs use, e.g. ``COM_QUERY``."""
        return f"COM_{self.name}"


class SetOption(IntEnum):
    """Argument of COM_SET_OPTION."""

    MULTI_STATEMENTS_ON = 0
    MULTI_STATEMENTS_OFF = 1


class CursorType(IntFlag):
    """Flags byte of COM_STMT_EXECUTE."""

    NO_CURSOR = 0
    READ_ONLY = 1
    FOR_UPDATE = 2
    SCROLLABLE = 4


class FieldType(IntEnum):
    """Column and parameter types (column definition, binary protocol)."""

    DECIMAL = 0x00
    TINY = 0x01
    SHORT = 0x02
    LONG = 0x03
    FLOAT = 0x04
    DOUBLE = 0x05
    NULL = 0x06
    TIMESTAMP = 0x07
    LONGLONG = 0x08
    INT24 = 0x09
    DATE = 0x0A
    TIME = 0x0B
    DATETIME = 0x0C
    YEAR = 0x0D
    NEWDATE = 0x0E
    VARCHAR = 0x0F
    BIT = 0x10
    TIMESTAMP2 = 0x11
    DATETIME2 = 0x12
    TIME2 = 0x13
    VECTOR = 0xF2
    JSON = 0xF5
    NEWDECIMAL = 0xF6
    ENUM = 0xF7
    SET = 0xF8
    TINY_BLOB = 0xF9
    MEDIUM_BLOB = 0xFA
    LONG_BLOB = 0xFB
    BLOB = 0xFC
    VAR_STRING = 0xFD
    STRING = 0xFE
    GEOMETRY = 0xFF


class ColumnFlag(IntFlag):
    """Flags of a column definition (16 bits on the wire; the server's field flags)."""

    NOT_NULL = 0x0001
    PRI_KEY = 0x0002
    UNIQUE_KEY = 0x0004
    MULTIPLE_KEY = 0x0008
    BLOB = 0x0010
    UNSIGNED = 0x0020  # integers: the binary protocol's bytes are unsigned
    ZEROFILL = 0x0040  # numbers: the text protocol pads them with zeros to the length
    BINARY = 0x0080
    ENUM = 0x0100
    AUTO_INCREMENT = 0x0200
    TIMESTAMP = 0x0400
    SET = 0x0800
    NO_DEFAULT_VALUE = 0x1000
    ON_UPDATE_NOW = 0x2000
    PART_KEY = 0x4000
    NUM = 0x8000


class PacketHeader(IntEnum):
    """First payload byte that tells response packets apart.

    OK is 0x00 (or 0xFE in place of EOF under DEPRECATE_EOF); EOF is 0xFE with a payload
    shorter than 9 bytes (a text row can also start with 0xFE, as the prefix of an 8-byte
    length, but is then at least 9 bytes long); ERR is 0xFF; 0xFB in a text row is NULL;
    0x01 opens AuthMoreData; 0xFE during authentication is an auth switch request.
    """

    OK = 0x00
    AUTH_MORE_DATA = 0x01
    LOCAL_INFILE = 0xFB
    EOF = 0xFE
    ERR = 0xFF


class CachingSha2State(IntEnum):
    """Second byte of AuthMoreData during caching_sha2_password."""

    REQUEST_PUBLIC_KEY = 0x02
    FAST_AUTH_SUCCESS = 0x03
    PERFORM_FULL_AUTHENTICATION = 0x04


class ErrorCode(IntEnum):
    """Server error numbers the gateway sends itself."""

    CON_COUNT = 1040
    OUT_OF_RESOURCES = 1041  # ER_OUT_OF_RESOURCES: the gateway's buffers are full
    HANDSHAKE = 1043
    DBACCESS_DENIED = 1044  # ER_DBACCESS_DENIED_ERROR: a database the user may not use
    ACCESS_DENIED = 1045
    BAD_DB = 1049  # ER_BAD_DB_ERROR: the database the client named does not exist
    SERVER_SHUTDOWN = 1053  # ER_SERVER_SHUTDOWN: the gateway stops before the answer
    NOT_SUPPORTED_AUTH_MODE = 1251
    UNKNOWN_COM = 1047
    UNKNOWN = 1105
    SPECIFIC_ACCESS_DENIED = 1227
    NET_PACKET_TOO_LARGE = 1153
    TOO_MANY_USER_CONNECTIONS = 1203  # ER_TOO_MANY_USER_CONNECTIONS: max_user_connections
    NET_READ_ERROR = 1158
    NOT_SUPPORTED_YET = 1235
    UNKNOWN_STMT_HANDLER = 1243  # ER_UNKNOWN_STMT_HANDLER: a statement id the client closed
    MALFORMED_PACKET = 1835  # ER_MALFORMED_PACKET: a command too short for its fixed fields
    # The client's own (CR_*, 2000-2999), never sent: libmariadb (the mariadb CLI) reads
    # one in a server's error packet as a malformed packet and shows nothing else.
    CONN_HOST_ERROR = 2003  # a client that cannot connect at all
    SERVER_LOST = 2013  # only in the ledger: a command's answer never came


SQLSTATE_FOR: dict[int, bytes] = {
    ErrorCode.CON_COUNT: b"08004",
    ErrorCode.OUT_OF_RESOURCES: b"HY000",
    ErrorCode.HANDSHAKE: b"08S01",
    ErrorCode.DBACCESS_DENIED: b"42000",
    ErrorCode.ACCESS_DENIED: b"28000",
    ErrorCode.BAD_DB: b"42000",
    ErrorCode.SERVER_SHUTDOWN: b"08S01",
    ErrorCode.NOT_SUPPORTED_AUTH_MODE: b"08004",
    ErrorCode.UNKNOWN_COM: b"08S01",
    ErrorCode.UNKNOWN: b"HY000",
    ErrorCode.SPECIFIC_ACCESS_DENIED: b"42000",
    ErrorCode.NET_PACKET_TOO_LARGE: b"08S01",
    ErrorCode.TOO_MANY_USER_CONNECTIONS: b"42000",
    ErrorCode.NET_READ_ERROR: b"08S01",
    ErrorCode.NOT_SUPPORTED_YET: b"42000",
    ErrorCode.UNKNOWN_STMT_HANDLER: b"HY000",
    ErrorCode.MALFORMED_PACKET: b"HY000",
    ErrorCode.CONN_HOST_ERROR: b"HY000",
    ErrorCode.SERVER_LOST: b"HY000",
}

NATIVE_PASSWORD = "mysql_native_password"
CACHING_SHA2_PASSWORD = "caching_sha2_password"
CLEAR_PASSWORD = "mysql_clear_password"
CLIENT_ED25519 = "client_ed25519"

UTF8MB4_GENERAL_CI = 45
