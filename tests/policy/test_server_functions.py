"""appliance/policy/server_functions.py against the lab MariaDB: the names it calls the
server's own functions must be exactly what the server says (a name no longer built in
would let a stored function of that name run unseen; a new one would be held for review
for nothing). On drift, run ``python3 scripts/server-functions``."""

from __future__ import annotations

import pytest
from lab.functions import candidates, frozen, probe, server_version
from lab.mariadb import MariaDB

from appliance.policy import server_functions as listed

pytestmark = pytest.mark.integration


def test_the_frozen_list_is_what_the_server_says(mariadb: MariaDB) -> None:
    expected = frozen(
        listed.NATIVE_FUNCTIONS,
        listed.KEYWORD_FUNCTIONS,
        listed.TIGHT_FUNCTIONS,
        listed.ARGUMENT_COUNTS,
    )
    with mariadb.connect() as conn:
        version = server_version(conn)
        # what the server reports (not the binary's strings: that takes a while), and
        # every name the list holds, which must still be built in as it says
        found = probe(conn, candidates(conn) | set(expected))
    missing = sorted(set(found) - set(expected))
    gone = sorted(set(expected) - set(found))
    changed = sorted(n for n in set(found) & set(expected) if found[n] != expected[n])
    assert not (missing or gone or changed), (
        f"{listed.SERVER} list, server {version}: built in but not listed {missing}; "
        f"listed but not built in {gone}; read differently {changed}. "
        "Run python3 scripts/server-functions"
    )
