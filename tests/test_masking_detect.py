"""Content detectors: a safety net over every string column, for values that sit where
no column rule looks (free text, computed values)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB

pytestmark = pytest.mark.integration

ROW_CANDIDATES = 100_000  # what the detectors examine in one row (docs/masking.md)

DETECT = """
[[masking]]
detect = ["card", "email"]
strategy = "last4"
exempt_groups = ["pii-readers"]
"""


@pytest.fixture(scope="module")
def gw(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    mariadb.admin_sql(
        "DROP TABLE IF EXISTS shop.mask_notes",
        "CREATE TABLE shop.mask_notes (id INT PRIMARY KEY, body TEXT, amount BIGINT)",
        "INSERT INTO shop.mask_notes VALUES (1, 'paid by 4111-1111-1111-1111, ann@example.com', "
        "5555555555554444), (2, 'order 4111111111111112 shipped', 4111111111111112)",
    )
    accounts = [
        GatewayAccount("agent", "agent-secret-1"),
        GatewayAccount("auditor", "auditor-secret-4", ("agents", "pii-readers")),
    ]
    work = tmp_path_factory.mktemp("gw")
    gw = GatewayProcess(work, mariadb, mariadb.pki, accounts=accounts, extra_toml=DETECT)
    gw.start()
    yield gw
    assert gw.stop() == 0


def query(gw: GatewayProcess, sql: str, user: str = "agent") -> list[tuple[object, ...]]:
    conn = gw.connect(user=user, database="shop")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def test_card_numbers_and_emails_in_any_column_are_masked(gw: GatewayProcess) -> None:
    assert query(gw, "SELECT body, amount FROM mask_notes ORDER BY id") == [
        ("paid by ***************1111, ***********.com", 5555555555554444),
        ("order 4111111111111112 shipped", 4111111111111112),  # fails the Luhn check
    ]  # string columns are scanned; a number column needs a column rule


def test_computed_values_are_scanned_too(gw: GatewayProcess) -> None:
    rows = query(gw, "SELECT CONCAT('card: ', '5555 5555 5555 4444') AS c, 42 AS n")
    assert rows == [("card: ***************4444", 42)]


def test_exempt_groups_see_them(gw: GatewayProcess) -> None:
    rows = query(gw, "SELECT body FROM mask_notes WHERE id = 1", user="auditor")
    assert rows == [("paid by 4111-1111-1111-1111, ann@example.com",)]


def test_a_row_of_more_candidates_than_the_detectors_examine_is_redacted_past_them(
    gw: GatewayProcess,
) -> None:
    """Each finding is masked on the gateway's event loop, where every session waits:
    a row's values hold at most ``ROW_CANDIDATES`` candidates between them. The value in
    which the row goes past it comes back as ``****``, and so does any later one that
    holds a candidate; a row under it is masked finding by finding."""
    half = ROW_CANDIDATES // 2 + 10
    (row,) = query(
        gw,
        f"SELECT REPEAT('ann@example.com ', {half}) AS a, "
        f"REPEAT('ann@example.com ', {half}) AS b, 'bob@example.com' AS c, 'plain' AS d",
    )
    assert row[0] == "***********.com " * half
    assert row[1:] == ("****", "****", "plain")
    rows = query(gw, f"SELECT REPEAT('ann@example.com ', {ROW_CANDIDATES + 1}) AS a")
    assert rows == [("****",)]
