"""The signed audit ledger (SPEC §9): ``chain`` hashes and signs, ``store`` writes and reads.

The gateway needs ``LedgerWriter`` (``open``, ``append``, ``checkpoint``, ``close``), the
field builders in ``records`` and the two errors: ``LedgerUnavailable`` (refuse the
statement with 1105) and ``LedgerFileError`` / ``LedgerKeyError`` (misconfiguration).
"""

from appliance.ledger.chain import (
    Head,
    LedgerError,
    LedgerKeyError,
    Record,
    VerifyResult,
    load_private_key,
    load_public_key,
)
from appliance.ledger.store import (
    LedgerDamaged,
    LedgerFileError,
    LedgerUnavailable,
    LedgerWriter,
    WriterStats,
)

__all__ = [
    "Head",
    "LedgerDamaged",
    "LedgerError",
    "LedgerFileError",
    "LedgerKeyError",
    "LedgerUnavailable",
    "LedgerWriter",
    "Record",
    "VerifyResult",
    "WriterStats",
    "load_private_key",
    "load_public_key",
]
