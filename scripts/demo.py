"""Bring up the demo lab (MariaDB + gateway), show a scripted session, open a client."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import pymysql  # noqa: E402
from lab.gateway import GatewayProcess  # noqa: E402
from lab.mariadb import MariaDB  # noqa: E402


def scripted_session(gw: GatewayProcess) -> None:
    acct = gw.account()
    conn = pymysql.connect(
        host=gw.host,
        port=gw.port,
        user=acct.user,
        password=acct.password,
        database="shop",
        ssl={"ca": str(gw.pki.ca_cert)},
    )
    with conn, conn.cursor() as cur:
        for sql in (
            "SELECT CURRENT_USER()",
            "SELECT id, name, email FROM customers ORDER BY id",
            "SELECT COUNT(*), SUM(total) FROM orders",
        ):
            cur.execute(sql)
            print(f"agent> {sql}")
            for row in cur.fetchall():
                print("      ", row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo")
    parser.add_argument(
        "--no-client", action="store_true", help="run the scripted session only, then exit"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sqlgate-demo-"))
    print(f"demo lab in {work}")
    db = MariaDB(work / "db").start()
    gw = GatewayProcess(work / "gateway", db, db.pki)
    try:
        gw.start()
        print(f"gateway listening on {gw.host}:{gw.port}, target MariaDB {db.version}")
        print(f"gateway log: {gw.log_path}\n")
        scripted_session(gw)
        if not args.no_client:
            acct = gw.account()
            print(
                "\nOpening the mariadb client through the gateway as gateway account "
                f"'{acct.user}' (the backend password stays inside the gateway)."
            )
            subprocess.run(
                [
                    "mariadb",
                    "--no-defaults",
                    "--protocol=TCP",
                    f"--host={gw.host}",
                    f"--port={gw.port}",
                    f"--user={acct.user}",
                    f"--password={acct.password}",
                    f"--ssl-ca={gw.pki.ca_cert}",
                    "--ssl-verify-server-cert",
                    "shop",
                ],
                check=False,
                env=dict(os.environ),
            )
    except KeyboardInterrupt:
        pass
    finally:
        code = gw.stop()
        db.stop()
        print(f"\ngateway stopped (exit {code}); lab torn down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
