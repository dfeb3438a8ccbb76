"""Property test with real clients: random rows of every common column type, stored in
MariaDB and read through the gateway with masking rules on half of the columns, decode
in PyMySQL (text protocol) and mysql-connector (prepared statements, binary protocol) to
the masked form of the value the server itself would send, and the other columns to
exactly what a direct connection reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import mysql.connector
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB

from appliance.config import MaskStrategy
from appliance.policy.masking import mask_value

pytestmark = pytest.mark.integration

# column, SQL type, strategy (None: not masked), values
COLUMNS: list[tuple[str, str, str | None, st.SearchStrategy[Any]]] = [
    ("c_int", "INT", "last4", st.integers(-(2**31), 2**31 - 1)),
    ("c_big", "BIGINT UNSIGNED", None, st.integers(0, 2**64 - 1)),
    ("c_dec", "DECIMAL(12,3)", "redact", st.decimals(-(10**8), 10**8, places=3, allow_nan=False)),
    ("c_dbl", "DOUBLE", None, st.floats(-1e12, 1e12, allow_nan=False).map(lambda f: round(f, 4))),
    ("c_date", "DATE", "last4", st.dates(dt.date(1000, 1, 1), dt.date(9999, 12, 31))),
    ("c_dt", "DATETIME(6)", "hash", st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1))),
    ("c_time", "TIME", None, st.timedeltas(dt.timedelta(hours=-838), dt.timedelta(hours=838)).map(
        lambda t: dt.timedelta(seconds=int(t.total_seconds())))),
    ("c_vc", "VARCHAR(40)", "last4", st.text(max_size=40).filter(lambda s: "\x00" not in s)),
    ("c_txt", "TEXT", None, st.text(max_size=200)),
    ("c_blob", "BLOB", "null", st.binary(max_size=100)),
    ("c_enum", "ENUM('red','green','blue')", "last4", st.sampled_from(["red", "green", "blue"])),
]  # fmt: skip
TABLE = "shop.mask_prop"


@pytest.fixture(scope="module")
def gw(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    definition = ", ".join(f"{name} {sql} NULL" for name, sql, _, _ in COLUMNS)
    mariadb.admin_sql(
        f"DROP TABLE IF EXISTS {TABLE}",
        f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, {definition}) CHARACTER SET utf8mb4",
    )
    rules = "".join(
        f'[[masking]]\ncolumn = "{TABLE}.{name}"\nstrategy = "{strategy}"\n\n'
        for name, _, strategy, _ in COLUMNS
        if strategy is not None
    )
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), mariadb, mariadb.pki, extra_toml=rules)
    gw.start()
    yield gw
    assert gw.stop() == 0


def rows() -> st.SearchStrategy[list[list[Any]]]:
    row = st.tuples(*[st.one_of(st.none(), values) for _, _, _, values in COLUMNS]).map(list)
    return st.lists(row, min_size=1, max_size=5)


def raw_text(mariadb: MariaDB) -> list[tuple[bytes | None, ...]]:
    """The rows as the server sends them in the text protocol, undecoded."""
    conn = mariadb.connect(conv={}, use_unicode=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {TABLE} ORDER BY id")
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes | bytearray) else value


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=rows())
def test_random_rows_decode_masked_in_real_clients(
    data: list[list[Any]], gw: GatewayProcess, mariadb: MariaDB
) -> None:
    names = ", ".join(name for name, _, _, _ in COLUMNS)
    admin = mariadb.connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f"DELETE FROM {TABLE}")
            marks = ", ".join(["%s"] * (len(COLUMNS) + 1))
            cur.executemany(
                f"INSERT INTO {TABLE} (id, {names}) VALUES ({marks})",
                [[i, *row] for i, row in enumerate(data)],
            )
        admin.commit()
        with admin.cursor() as cur:
            cur.execute(f"SELECT * FROM {TABLE} ORDER BY id")
            direct = [tuple(r) for r in cur.fetchall()]
    finally:
        admin.close()
    server_text = raw_text(mariadb)
    key = (gw.workdir / "masking.key").read_bytes()

    def masked(row_index: int, column_index: int) -> Any:
        strategy = COLUMNS[column_index - 1][2]
        raw = server_text[row_index][column_index]
        assert strategy is not None
        if raw is None:
            return None
        value = mask_value(MaskStrategy(strategy), raw, key)
        return None if value is None else value.decode("utf-8", "surrogateescape")

    conn = gw.connect(database="shop")
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {TABLE} ORDER BY id")
            text_rows = [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()
    connector = gw.connector()
    try:
        cur = connector.cursor(prepared=True)
        cur.execute(f"SELECT * FROM {TABLE} WHERE id >= ? ORDER BY id", (0,))
        binary_rows = [tuple(r) for r in cur.fetchall()]
        cur.close()
    finally:
        connector.close()
    direct_binary = connector_direct(mariadb)

    for r in range(len(data)):
        for c in range(len(COLUMNS) + 1):
            strategy = COLUMNS[c - 1][2] if c else None
            if strategy is None:
                assert text_rows[r][c] == direct[r][c]
                assert binary_rows[r][c] == direct_binary[r][c]
            else:
                want = masked(r, c)
                assert decoded(text_rows[r][c]) == want
                assert decoded(binary_rows[r][c]) == want


def connector_direct(mariadb: MariaDB) -> list[tuple[Any, ...]]:
    conn = mysql.connector.connect(
        host=mariadb.host,
        port=mariadb.port,
        user=mariadb.root_user,
        password=mariadb.root_password,
        database="shop",
        use_pure=True,
        ssl_disabled=True,
    )
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(f"SELECT * FROM {TABLE} WHERE id >= ? ORDER BY id", (0,))
        found = [tuple(r) for r in cur.fetchall()]
        cur.close()
        return found
    finally:
        conn.close()
