"""Server-side cursors by hand, through PyMySQL's packet layer: PyMySQL cannot prepare,
and the tests need the exact commands a cursor client sends (and some no client sends)."""

from __future__ import annotations

import struct
from typing import Any

import pymysql
import pytest

COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_CLOSE = 0x19
COM_STMT_FETCH = 0x1C


def open_cursor(
    conn: pymysql.connections.Connection[Any],
    sql: str,
    param: tuple[int, bytes] = (8, struct.pack("<q", 0)),
) -> int:
    """Prepare ``sql`` (one parameter, by default a LONGLONG bound to 0) and execute it
    with a read-only cursor, as MariaDB Connector/Python's cursor_type=READ_ONLY does: the
    statement id, its cursor open and nothing fetched yet."""
    statement = prepare(conn, sql)
    execute_cursor(conn, statement, param)
    return statement


def prepare(conn: pymysql.connections.Connection[Any], sql: str) -> int:
    """COM_STMT_PREPARE of ``sql``: its statement id (its definitions read and dropped)."""
    conn._execute_command(COM_STMT_PREPARE, sql)
    ok = conn._read_packet().get_all_data()
    statement, columns, params = struct.unpack("<IHH", ok[1:9])
    for _ in range(params + (params > 0) + columns + (columns > 0)):  # definitions, EOFs
        conn._read_packet()
    return statement


def execute_cursor(
    conn: pymysql.connections.Connection[Any], statement: int, param: tuple[int, bytes]
) -> None:
    """Execute ``statement`` with a read-only cursor, its one parameter ``param`` (its
    type byte and its value as the binary protocol writes it)."""
    kind, value = param
    # flags CURSOR_TYPE_READ_ONLY, iteration count 1, no NULL, new types: the one type
    execute = struct.pack("<IBI", statement, 1, 1) + b"\x00\x01" + struct.pack("<BB", kind, 0)
    conn._execute_command(COM_STMT_EXECUTE, execute + value)
    count = conn._read_packet().read_length_encoded_integer()
    for _ in range(count + 1):  # definitions and the EOF that says the cursor is open
        conn._read_packet()


def fail_execute(conn: pymysql.connections.Connection[Any], statement: int) -> None:
    """An execute of ``statement`` without its parameters: MariaDB reads them before it
    closes the open cursor, so it answers 1210 and the cursor stays open."""
    conn._execute_command(COM_STMT_EXECUTE, struct.pack("<IBI", statement, 1, 1))
    with pytest.raises(pymysql.err.MySQLError) as err:
        conn._read_packet()
    assert err.value.args[0] == 1210


def fetch(conn: pymysql.connections.Connection[Any], statement: int) -> list[bytes]:
    """Every binary row a COM_STMT_FETCH of up to 100 rows gives, as its packet's bytes."""
    conn._execute_command(COM_STMT_FETCH, struct.pack("<II", statement, 100))
    rows = []
    while not (packet := conn._read_packet()).is_eof_packet():
        rows.append(packet.get_all_data())
    return rows


def first_column(rows: list[bytes]) -> list[bytes | None]:
    """The first column's text of binary rows of one string column: 0x00, the NULL
    bitmap (one byte), then a length-encoded string (shorter than 251 bytes)."""
    return [None if row[1] & 4 else row[3 : 3 + row[2]] for row in rows]


def close(conn: pymysql.connections.Connection[Any], statement: int) -> None:
    conn._execute_command(COM_STMT_CLOSE, struct.pack("<I", statement))
