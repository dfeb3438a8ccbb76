"""A private MariaDB with gateways on it, for the parts that need their own (masking,
recording): started together, stopped together, failures as BenchError."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB, MariaDBError

from .errors import BenchError
from .rig import Endpoint, StartStop


@dataclass
class PrivateRig(StartStop):
    """``with Rig(workdir) as rig``: a subclass's ``start`` builds what it needs with
    ``start_db`` and ``start_gateway``; everything stops on the way out."""

    workdir: Path
    db: MariaDB | None = None
    gateways: dict[str, GatewayProcess] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def start_db(self) -> MariaDB:
        try:
            self.db = MariaDB(
                self.workdir / "db", extra_args=["--innodb-buffer-pool-size=256M"]
            ).start()
        except MariaDBError as exc:
            first = str(exc).splitlines()[0]
            raise BenchError(f"cannot start the private MariaDB: {first}") from exc
        return self.db

    def start_gateway(
        self, name: str, toml: str, accounts: Sequence[GatewayAccount] | None = None
    ) -> GatewayProcess:
        assert self.db is not None
        extra = {"accounts": list(accounts)} if accounts is not None else {}
        gw = GatewayProcess(
            self.workdir / name,
            self.db,
            self.db.pki,
            backend_tls="disabled",
            name=f"bench-{name}",
            extra_toml=toml,
            **extra,  # type: ignore[arg-type]
        )
        self.gateways[name] = gw
        try:
            gw.start()
        except RuntimeError as exc:
            raise BenchError(f"{name}: {str(exc).splitlines()[0]} (log: {gw.log_path})") from exc
        return gw

    def stop_gateway(self, name: str) -> None:
        """SIGTERM a gateway (its ledger is then complete); a non-zero exit is an error."""
        gw = self.gateways[name]
        if gw.proc is not None:
            code = gw.stop()
            if code != 0:
                raise BenchError(f"{name} exited with {code} (log: {gw.log_path})")

    def stop(self) -> None:
        for gw in self.gateways.values():
            gw.stop()
        if self.db is not None:
            self.db.stop()
