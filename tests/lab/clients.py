"""Real MySQL clients as subprocesses: node ``mysql2`` and the ``mariadb`` command line.

The node client lives in ``tests/clients/node`` (``run.js``, see its header for the JSON it
takes and prints); :func:`ensure_node_client` installs its locked dependencies once.
Failures raise :class:`ClientError` carrying the exit code, stderr and, for node, the
MySQL error (code, errno, sqlState, message) when the server or gateway sent one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

NODE_CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "node"
NODE_RUN_JS = NODE_CLIENT_DIR / "run.js"

DEFAULT_TIMEOUT_S = 60.0


class ClientError(RuntimeError):
    """A client subprocess failed; ``error`` holds the MySQL error when there was one."""

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
        error: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.error: dict[str, Any] = dict(error or {})

    @property
    def errno(self) -> int | None:
        value = self.error.get("errno")
        return value if isinstance(value, int) else None


def _require(program: str, hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ClientError(f"{program} not found on PATH: {hint}")
    return path


# -- node mysql2 ----------------------------------------------------------------------


def ensure_npm_package(directory: Path, package: str) -> None:
    """Install ``directory``'s locked npm dependencies unless ``package`` is already
    installed at the version its package.json pins."""
    _require("node", "install Node.js (scripts/test does this)")
    pinned = json.loads((directory / "package.json").read_text())["dependencies"][package]
    installed = directory / "node_modules" / package / "package.json"
    try:
        current = json.loads(installed.read_text())["version"]
    except (OSError, ValueError, KeyError):
        current = None
    if current == pinned:
        return
    npm = _require("npm", "install npm (scripts/test does this)")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise ClientError(
            f"npm ci in {directory} failed (exit {result.returncode})",
            returncode=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
        )


def ensure_node_client() -> Path:
    """Install the node client's locked dependencies if missing; the path of run.js."""
    for package in ("mysql2", "mariadb"):
        ensure_npm_package(NODE_CLIENT_DIR, package)
    return NODE_RUN_JS


def run_node(
    spec: Mapping[str, Any], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """Run ``node run.js SPEC``; its parsed JSON output.

    With ``check`` (the default) a MySQL or connection error raises ClientError with
    ``.error`` set; without it, the output (with its ``error`` key) is returned as is.
    """
    run_js = ensure_node_client()
    node = _require("node", "install Node.js (scripts/test does this)")
    result = subprocess.run(
        [node, str(run_js), json.dumps(dict(spec))],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise ClientError(
            f"node client crashed (exit {result.returncode}): {result.stderr.strip()}",
            returncode=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
        ) from exc
    if check and (result.returncode != 0 or "error" in output):
        error = output.get("error") or {}
        raise ClientError(
            f"node {spec.get('driver', 'mysql2')} failed: {error.get('code')} "
            f"({error.get('errno')}): {error.get('message')}",
            returncode=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
            error=error,
        )
    return output


def node_spec(
    *,
    host: str,
    port: int,
    user: str,
    password: str,
    queries: Sequence[str],
    database: str | None = None,
    ssl_ca: str | Path | None = None,
    reject_unauthorized: bool = True,
    prepared: bool = False,
    continue_on_error: bool = False,
    options: Mapping[str, Any] | None = None,
    driver: str = "mysql2",
) -> dict[str, Any]:
    """The JSON spec for :func:`run_node`; ``ssl_ca`` (a path or PEM text) turns TLS on;
    ``driver``: "mysql2" or "mariadb" (MariaDB Connector/Node.js)."""
    spec: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "queries": list(queries),
        "prepared": prepared,
        "continueOnError": continue_on_error,
        "driver": driver,
    }
    if database is not None:
        spec["database"] = database
    if ssl_ca is not None:
        spec["ssl"] = {"ca": str(ssl_ca), "rejectUnauthorized": reject_unauthorized}
    if options:
        spec["options"] = dict(options)
    return spec


# -- mariadb command line -------------------------------------------------------------


def run_mariadb(
    sql: str,
    *,
    host: str,
    port: int,
    user: str,
    password: str,
    database: str | None = None,
    ssl: bool = False,
    ssl_ca: str | Path | None = None,
    verify_server_cert: bool = False,
    column_names: bool = True,
    extra_args: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Run ``mariadb --batch -e SQL`` over TCP; its stdout, or ClientError with stderr.

    ``ssl`` (or giving ``ssl_ca``) requires TLS; otherwise ``--skip-ssl`` forces plain.
    """
    mariadb = _require("mariadb", "install the Debian package mariadb-client")
    cmd = [
        mariadb,
        "--no-defaults",  # must come first: ignore /etc/mysql and ~/.my.cnf
        "--protocol=TCP",
        f"--host={host}",
        f"--port={port}",
        f"--user={user}",
        f"--password={password}",
        "--batch",
        "--connect-timeout=10",
    ]
    if ssl or ssl_ca is not None:
        cmd.append("--ssl")
        if ssl_ca is not None:
            cmd.append(f"--ssl-ca={ssl_ca}")
        if verify_server_cert:
            cmd.append("--ssl-verify-server-cert")
    else:
        cmd.append("--skip-ssl")
    if not column_names:
        cmd.append("--skip-column-names")
    if database is not None:
        cmd.append(f"--database={database}")
    cmd += [*extra_args, "-e", sql]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise ClientError(
            f"mariadb client failed (exit {result.returncode}): {result.stderr.strip()}",
            returncode=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
        )
    return result.stdout


def parse_batch(stdout: str) -> list[list[str]]:
    """Rows of ``mariadb --batch`` output as lists of fields (the header row included)."""
    return [line.split("\t") for line in stdout.splitlines()]


# -- the sqlgate command line -----------------------------------------------------------


def run_sqlgate(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``sqlgate ARGS`` as this interpreter running this tree's ``appliance.cli``."""
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ledger_records(ledger: Path, *args: str) -> list[dict[str, Any]]:
    """``sqlgate ledger export`` of ``ledger`` (with ARGS such as ``--session``), parsed."""
    out = run_sqlgate("ledger", "export", "--ledger", ledger, *args)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]
