"""The audit ledger's hash chain and signatures (SPEC §9): pure functions, no database.

A record is a flat JSON object. Every record carries ``seq`` (1, 2, 3, ... without gaps),
``ts`` (UTC, ISO 8601 with microseconds and ``Z``), ``kind``, its kind's fields,
``prev_hash`` and ``hash``:

    canonical_json(obj) = json.dumps(obj, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False, allow_nan=False).encode()
    hash = sha256(bytes.fromhex(prev_hash) + canonical_json(record without "hash")).hex()

The first record's ``prev_hash`` is 64 zeros (``GENESIS_HASH``). Field names are
identifiers (``[a-z_][a-z0-9_]*``) and values are str, int, float, bool, None or a list of
str, so a record never nests objects.

A checkpoint is a record of kind ``checkpoint``, chained like any other, whose fields sign
the record right before it::

    checkpoint_seq, checkpoint_hash   the seq and hash of the record before the checkpoint
    signature                         base64 Ed25519 over
                                      canonical_json({"seq": checkpoint_seq,
                                                      "hash": checkpoint_hash})
    key_id                            the first 16 hex digits of sha256(raw public key)

Because each hash covers the previous one, a valid signature over record N's hash vouches
for records 1..N. Records after the last checkpoint are chained but not yet signed: anyone
able to write the file could rewrite them undetectably, which is why the gateway signs at
least every second. An auditor who keeps a head (``sqlgate ledger head``: the latest
checkpoint's seq, hash, ts and signature) can later prove that nothing at or before it was
cut off or rolled back.

Verification (``Verifier``, ``verify_records``) streams: it holds one record at a time.
For each record, in this order, it checks: the record is a JSON object; seq continuity
(a missing, inserted or reordered record); the required fields; ``prev_hash`` against the
previous record's hash; the hash against the record's contents (an edited record); for a
checkpoint, that it names the record right before it, that its signature verifies, and
that it holds only the writer's fields with this key's ``key_id`` (its signature covers the
record before it, not its own fields); and for the held head, that the record at its seq
has exactly its hash. It reports the first bad seq and why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FIELD_KINDS",
    "GENESIS_HASH",
    "KINDS",
    "RESERVED_FIELDS",
    "FieldValue",
    "Head",
    "LedgerError",
    "LedgerKeyError",
    "Record",
    "VerifyResult",
    "Verifier",
    "canonical_json",
    "check_fields",
    "checkpoint_fields",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "record_hash",
    "seal",
    "seal_new",
    "seal_with_body",
    "sign_head",
    "utc_now",
    "verify_head",
    "verify_records",
]

GENESIS_HASH = "0" * 64
KINDS: tuple[str, ...] = (
    "appliance_start",
    "session_start",
    "auth_failed",
    "statement",
    "result",
    "approval",
    "session_end",
    "alert",
    "checkpoint",
)
FIELD_KINDS = frozenset(KINDS) - {"checkpoint"}  # kinds a caller may append
RESERVED_FIELDS = frozenset({"seq", "ts", "prev_hash", "hash"})  # set by the writer

FieldValue = str | int | float | bool | None | list[str]
Record = dict[str, Any]  # a parsed or sealed record: field name -> JSON value

_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_CHECKPOINT_NAMES = frozenset(
    {"seq", "ts", "kind", "checkpoint_seq", "checkpoint_hash", "signature", "key_id"}
    | {"prev_hash", "hash"}
)
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_known_names: set[str] = set()


class LedgerError(Exception):
    """Base class of the ledger's errors."""


class LedgerKeyError(LedgerError):
    """A signing or public key file cannot be used; the message names the file."""


# What json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False) builds on every call; one instance saves that per record.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_encode = _ENCODER.encode
# The scanner json.loads ends up in, without its checks for a BOM and for whitespace
# around the value: a body that needs them goes through json.loads itself.
# NaN and Infinity are not JSON (the writer never makes them, and export refuses them):
# a stored record holding one is not a record, whatever its hash says.


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_scan_pairs: Callable[[str, int], tuple[Any, int]]
_scan_pairs = json.JSONDecoder(  # type: ignore[attr-defined]
    parse_constant=_not_json, object_pairs_hook=tuple
).scan_once
"""An object as the tuple of its members in the text's order, a name given twice included
(a dict keeps one of them: SQLite's json_extract reads the first, Python the last)."""


def canonical_json(obj: object) -> bytes:
    """The one serialization that is hashed: sorted keys, no spaces, UTF-8, no NaN."""
    return _encode(obj).encode()


_clock: tuple[int, str] = (-1, "")  # a second since the epoch and its text


def utc_now() -> str:
    """The current time as the ledger writes it: ``2025-01-31T12:00:00.123456Z``.

    Like ``datetime.now(UTC)`` (the system clock, microseconds rounded down), with the
    text of the current second kept, since every record needs one.
    """
    global _clock
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    clock = _clock
    if clock[0] != second:
        t = time.gmtime(second)
        text = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        clock = _clock = (second, text)
    return f"{clock[1]}.{micros:06d}Z"


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash a record must carry: over its ``prev_hash`` and itself without ``hash``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    prev = bytes.fromhex(str(record["prev_hash"]))
    return hashlib.sha256(prev + canonical_json(body)).hexdigest()


def check_fields(fields: Mapping[str, object]) -> None:
    """Raise ValueError unless ``fields`` is what a caller may append.

    It needs a ``kind`` from ``FIELD_KINDS``, identifier names other than the reserved
    ``seq``, ``ts``, ``prev_hash`` and ``hash``, and values that are str, int, float
    (finite), bool, None or a list of str.
    """
    kind = fields.get("kind")
    if kind not in FIELD_KINDS:
        raise ValueError(f"kind must be one of {', '.join(sorted(FIELD_KINDS))}, not {kind!r}")
    for name, value in fields.items():
        if name not in _known_names:
            if not isinstance(name, str) or not _FIELD_NAME.match(name):
                raise ValueError(f"field name {name!r} is not an identifier")
            if name in RESERVED_FIELDS:
                raise ValueError(f"field {name!r} is set by the ledger writer")
            _known_names.add(name)
        t = type(value)
        if t is str or t is int or t is bool or value is None:
            continue
        if t is float:
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"field {name!r} is not a finite number")
            continue
        if t is list and all(type(item) is str for item in cast("list[object]", value)):
            continue
        raise ValueError(f"field {name!r} has a value of type {t.__name__}")


def seal(record: Mapping[str, Any], prev_hash: str) -> Record:
    """``record`` (without ``prev_hash``/``hash``) chained after ``prev_hash``."""
    return seal_with_body(record, prev_hash)[0]


def seal_with_body(record: Mapping[str, Any], prev_hash: str) -> tuple[Record, str]:
    """The sealed record and its canonical JSON text (what the database stores).

    The body is built by inserting ``"hash":"..."`` into the hashed JSON at its sorted
    place instead of serializing twice; records with nested objects take the slow path.
    """
    return seal_new({k: v for k, v in record.items() if k not in ("prev_hash", "hash")}, prev_hash)


def seal_new(record: Record, prev_hash: str) -> tuple[Record, str]:
    """``seal_with_body`` for a dict the caller hands over: it becomes the sealed record.

    The writer builds a new dict for every record anyway; sealing it in place saves a copy.
    """
    if "prev_hash" in record or "hash" in record:  # placed last, as seal_with_body does
        record.pop("prev_hash", None)
        record.pop("hash", None)
    sealed = record
    sealed["prev_hash"] = prev_hash
    body = _encode(sealed)
    digest = hashlib.sha256(bytes.fromhex(prev_hash) + body.encode()).hexdigest()
    names = tuple(sealed)
    marker = _hash_places.get(names)
    if marker is None:
        marker = _hash_place(names)
    sealed["hash"] = digest
    # one "{" in the text is the record's own: no nested object (checked only otherwise)
    if body.count("{") != 1 and dict in map(type, sealed.values()):
        return sealed, canonical_json(sealed).decode()
    member = f'"hash":"{digest}"'
    if not marker:  # no key sorts before "hash": it is the first member
        return sealed, "{" + member + "," + body[1:]
    at = body.index(marker)
    return sealed, body[:at] + "," + member + body[at:]


_hash_places: dict[tuple[str, ...], str] = {}


def _hash_place(names: tuple[str, ...]) -> str:
    """The text the ``hash`` member goes before: ``,"<next key>":`` ('' if it goes first).

    "prev_hash" always sorts after "hash", so some key follows it; without nested objects
    ``,"<key>":`` can only be that top-level member (a quote inside a string is escaped,
    and an array holds no colon).
    """
    after = min(k for k in names if k > "hash")
    marker = "" if min(names) == after else f",{json.dumps(after, ensure_ascii=False)}:"
    if len(_hash_places) < 1024:
        _hash_places[names] = marker
    return marker


# -- keys and signatures -------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The key as unencrypted PKCS8 PEM (``ledger.key``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """The key as SubjectPublicKeyInfo PEM (``ledger.pub``)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise LedgerKeyError(f"{path}: cannot read the key: is a directory") from None
    except OSError as exc:
        raise LedgerKeyError(f"{path}: cannot read the key: {exc.strerror or exc}") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 signing key in a PEM file (LedgerKeyError naming the file if not)."""
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" not in data:
        raise LedgerKeyError(f"{path}: not a PEM private key (expected 'sqlgate keygen' output)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise LedgerKeyError(
            f"{path}: the key is encrypted; sqlgate needs it unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise LedgerKeyError(f"{path}: not a valid PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerKeyError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file (LedgerKeyError naming the file if not)."""
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        raise LedgerKeyError(f"{path}: holds a private key; give the public key (ledger.pub)")
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        raise LedgerKeyError(f"{path}: not a PEM public key (expected ledger.pub)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise LedgerKeyError(f"{path}: not a valid PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerKeyError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def _head_message(seq: int, digest: str) -> bytes:
    return canonical_json({"seq": seq, "hash": digest})


def sign_head(key: Ed25519PrivateKey, seq: int, digest: str) -> str:
    """Base64 Ed25519 signature over ``canonical_json({"seq": seq, "hash": digest})``."""
    return base64.b64encode(key.sign(_head_message(seq, digest))).decode()


def verify_head(key: Ed25519PublicKey, seq: int, digest: str, signature: str) -> bool:
    """Whether ``signature`` is ``key``'s signature over this seq and hash."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, _head_message(seq, digest))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


def checkpoint_fields(key: Ed25519PrivateKey, seq: int, digest: str) -> dict[str, FieldValue]:
    """The fields of a checkpoint signing record ``seq`` whose hash is ``digest``."""
    return {
        "kind": "checkpoint",
        "checkpoint_seq": seq,
        "checkpoint_hash": digest,
        "signature": sign_head(key, seq, digest),
        "key_id": key_id(key.public_key()),
    }


@dataclass(frozen=True, slots=True)
class Head:
    """A signed checkpoint as ``sqlgate ledger head`` prints it and an auditor keeps it.

    ``seq`` and ``hash`` are the signed record's (the checkpoint's ``checkpoint_seq`` and
    ``checkpoint_hash``); ``ts`` is the checkpoint record's time.
    """

    seq: int
    hash: str
    signature: str
    ts: str | None = None
    key_id: str | None = None

    @classmethod
    def from_checkpoint(cls, record: Mapping[str, Any]) -> Head:
        """The head a checkpoint record carries (ValueError if it is not one)."""
        if record.get("kind") != "checkpoint":
            raise ValueError(f"record {record.get('seq')} is not a checkpoint")
        return cls.from_json(
            {
                "seq": record.get("checkpoint_seq"),
                "hash": record.get("checkpoint_hash"),
                "ts": record.get("ts"),
                "signature": record.get("signature"),
                "key_id": record.get("key_id"),
            }
        )

    @classmethod
    def from_json(cls, value: object) -> Head:
        """A head from its parsed JSON object (ValueError naming what is wrong)."""
        if not isinstance(value, dict):
            raise ValueError("a head is a JSON object with seq, hash and signature")
        seq, digest, signature = value.get("seq"), value.get("hash"), value.get("signature")
        ts, kid = value.get("ts"), value.get("key_id")
        if type(seq) is not int or seq < 1:
            raise ValueError("'seq' must be a positive integer")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise ValueError("'hash' must be 64 lowercase hex digits")
        if not isinstance(signature, str) or not signature:
            raise ValueError("'signature' must be a base64 string")
        if ts is not None and not isinstance(ts, str):
            raise ValueError("'ts' must be a string")
        if kid is not None and not isinstance(kid, str):
            raise ValueError("'key_id' must be a string")
        return cls(seq=seq, hash=digest, signature=signature, ts=ts, key_id=kid)

    def to_json(self) -> dict[str, object]:
        """The head as one JSON object: seq, hash, ts, signature, key_id."""
        return {
            "seq": self.seq,
            "hash": self.hash,
            "ts": self.ts,
            "signature": self.signature,
            "key_id": self.key_id,
        }


# -- verification --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What verification found.

    ``records`` counts the records that verified (all of them when ``ok``);
    ``last_checkpoint_seq`` is the seq of the last valid checkpoint *record* (None if
    there is none); the records after it are chained but not yet signed (``unsigned``).
    ``signed_after_the_fact``: the ranges (first seq, last seq) that signed
    ``unsigned_tail_signed`` alerts name, records the gateway found unsigned and signed
    without having written them (``verify_file`` fills it in).
    """

    ok: bool
    first_bad_seq: int | None
    reason: str | None
    records: int
    last_checkpoint_seq: int | None
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    signed_after_the_fact: tuple[tuple[int, int], ...] = ()

    @property
    def unsigned(self) -> int:
        """How many records follow the last checkpoint (not yet covered by a signature)."""
        return self.last_seq - (self.last_checkpoint_seq or 0)


class Verifier:
    """Streaming verification: feed records in stored order, then take ``result()``.

    ``after_seq``/``after_hash`` start the check in the middle of a ledger (the gateway
    checks its tail from the last checkpoint); ``after_hash=None`` accepts the first
    record's ``prev_hash`` as given. ``held_head`` is a head an auditor kept: its
    signature must verify and the ledger must hold a record with exactly its seq and hash.
    """

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        held_head: Head | None = None,
        *,
        after_seq: int = 0,
        after_hash: str | None = GENESIS_HASH,
    ) -> None:
        self._key = public_key
        self._key_id = key_id(public_key)
        self._held = held_head
        self._expected = after_seq + 1
        self._prev = after_hash
        # the hash every record must name as prev_hash is known to be 64 hex digits
        self._prev_hex = after_hash is not None and _HEX64.match(after_hash) is not None
        self._count = 0
        self._last_checkpoint: int | None = None
        self._bad: tuple[int, str] | None = None
        self.last_record: Mapping[str, Any] = {}  # the record feed_body read last
        if held_head is not None and not verify_head(
            public_key, held_head.seq, held_head.hash, held_head.signature
        ):
            problem = self._signature_problem(held_head.key_id)
            self._bad = (held_head.seq, f"the held checkpoint's {problem}")

    @property
    def ok(self) -> bool:
        """False once a bad record was found."""
        return self._bad is None

    @property
    def next_seq(self) -> int:
        """The seq the next record must have."""
        return self._expected

    def fail(self, reason: str, seq: int | None = None) -> None:
        """Record a problem found outside the records (e.g. a damaged database, a missing
        session recording). Of several problems the one at the lowest seq is kept: the
        result names the first bad record, whichever check found it, and in any order."""
        seq = self._expected if seq is None else seq
        if self._bad is None or seq < self._bad[0]:
            self._bad = (seq, reason)

    def feed_body(self, body: str, stored_seq: int | None = None) -> bool:
        """Check one stored record text; ``stored_seq`` is the row's seq column, if any.
        The record it read is ``last_record`` (for checks of the row's other columns).

        The fast path removes the ``hash`` member from the text and hashes the rest: if
        that matches, those are the bytes that were hashed when the record was written,
        and the text differs from them only by the top-level ``hash`` member (an insertion
        anywhere else is not valid JSON). It takes only a text that gives each name once
        (read as its members in order): a name given twice is read as its first value by
        SQLite's json_extract and as its last by Python, whatever was hashed. Otherwise
        the record is re-serialized to say what is wrong; a text that is not those bytes
        fails even when its values hash right, since another reader may take them
        otherwise.
        """
        if self._bad is not None:
            return False
        once = False  # whether the text gives each name once: only then is it vouched for
        try:
            try:
                pairs, end = _scan_pairs(body, 0)
            except (StopIteration, ValueError, TypeError):
                end = -1
            # a flat object, as the writer stores them, read as its members in order
            if end == len(body) and type(pairs) is tuple and body.find("{", 1) < 0:
                record: Any = dict(pairs)
                once = len(record) == len(pairs)
            else:  # whitespace, a BOM, bytes, no JSON or an object inside: as json.loads says
                record = json.loads(body, parse_constant=_not_json)
        except (ValueError, RecursionError):
            self.fail("the stored record is not valid JSON", stored_seq)
            return False
        if not isinstance(record, dict):
            self.fail("the stored record is not a JSON object", stored_seq)
            return False
        self.last_record = record
        return self._check(record, body if once else None, stored_seq, body)

    def feed(self, record: Mapping[str, Any]) -> bool:
        """Check one parsed record; False once the ledger is found bad."""
        if self._bad is not None:
            return False
        if not isinstance(record, Mapping):
            self.fail("the record is not a JSON object")
            return False
        return self._check(record, None, None)

    def _check(
        self,
        record: Mapping[str, Any],
        body: str | None,
        stored: int | None,
        text: str | None = None,
    ) -> bool:
        """``body``: the stored text when it may be canonical (the fast path may vouch for
        it); ``text``: the stored text in any case (None for a parsed record)."""
        expected = self._expected
        seq = record.get("seq")
        if type(seq) is not int:
            self.fail("the record has no integer 'seq'", expected)
            return False
        if seq != expected:
            if seq > expected:
                why = f"missing: the next record is seq {seq} (a record was deleted, or "
                why += "records were reordered)"
            else:
                why = f"found seq {seq} where seq {expected} was expected (a record was "
                why += "inserted, or records were reordered)"
            self.fail(why, expected)
            return False
        if stored is not None and stored != seq:
            row = stored if isinstance(stored, int) else f"{stored!r} (not an integer)"
            self.fail(f"stored in row {row} but the record says seq {seq}", seq)
            return False
        prev: Any = record.get("prev_hash")  # a str once checked below
        digest: Any = record.get("hash")
        if not (type(prev) is str and type(digest) is str and type(record.get("ts")) is str):
            for name in ("ts", "kind", "prev_hash", "hash"):
                if not isinstance(record.get(name), str):
                    self.fail(f"the record has no valid '{name}'", seq)
                    return False
        elif not isinstance(record.get("kind"), str):
            self.fail("the record has no valid 'kind'", seq)
            return False
        prev_hex = self._prev_hex
        if self._prev is None:  # starting mid-ledger: the first prev_hash is taken as given
            if not _HEX64.match(prev):
                self.fail("prev_hash is not 64 hex digits", seq)
                return False
            prev_hex = True
        elif prev != self._prev:
            if seq == 1:
                self.fail("prev_hash is not the genesis hash (64 zeros)", seq)
            else:
                self.fail(
                    f"prev_hash does not match the hash of record {seq - 1} (a record "
                    "before it was changed, removed or replaced)",
                    seq,
                )
            return False
        # The fast path vouches for a text that gives each name once, with the hash member
        # in its place, the rest being the bytes that were hashed; any other text goes the
        # slow way, which says exactly what it is.
        if not (
            body is not None
            and _hash_in_place(record)
            and _fast_hash_ok(body, prev, digest, prev_hex)
        ) and not self._check_slowly(record, text, seq, digest):
            return False
        if record["kind"] == "checkpoint" and not self._check_checkpoint(record, seq, prev):
            return False
        held = self._held
        if held is not None and seq == held.seq and digest != held.hash:
            self.fail(
                f"has hash {digest}, the held checkpoint says {held.hash} (the ledger was "
                "rolled back to an older copy or rewritten)",
                seq,
            )
            return False
        self._prev = digest
        self._prev_hex = True  # it matched a SHA-256 hex digest
        self._expected = seq + 1
        self._count += 1
        return True

    def _check_slowly(
        self, record: Mapping[str, Any], text: str | None, seq: int, digest: str
    ) -> bool:
        """The hash over the record's values, and a stored ``text`` against their canonical
        JSON: what another reader (SQLite's json_extract, an auditor's script) reads must
        be the very bytes that were hashed."""
        try:
            canonical = text is None or _encode(record) == text
        except (TypeError, ValueError):  # a number too large for a float reads as inf
            canonical = False
        if not canonical and text is not None:
            repeated = _repeated_name(text)
            if repeated is not None:
                self.fail(
                    f"the stored text gives the key '{repeated}' twice (readers may take "
                    "either value): it is not the record's canonical JSON",
                    seq,
                )
                return False
        try:
            good = record_hash(record) == digest
        except (TypeError, ValueError):
            good = False
        if not good:
            self.fail("hash does not match the record's contents (the record was edited)", seq)
            return False
        if not canonical:
            # The values hash right, but the stored text is not the canonical JSON the
            # writer stored: spaces, another key order, the hash member moved, or a line
            # break. What an auditor's tools read must be the very bytes that were hashed.
            self.fail(
                "the stored text is not the record's canonical JSON (it was rewritten; "
                "a key may be repeated with another value)",
                seq,
            )
            return False
        return True

    def _check_checkpoint(self, record: Mapping[str, Any], seq: int, prev: str) -> bool:
        signed_seq, signed_hash = record.get("checkpoint_seq"), record.get("checkpoint_hash")
        signature = record.get("signature")
        if signed_seq != seq - 1 or type(signed_seq) is not int:
            self.fail(
                f"checkpoint names record {signed_seq!r}, not the record right before it", seq
            )
            return False
        if signed_hash != prev:
            self.fail(
                f"checkpoint_hash is not the hash of record {seq - 1} (the record before it)",
                seq,
            )
            return False
        if not isinstance(signature, str) or not verify_head(
            self._key, signed_seq, signed_hash, signature
        ):
            kid = record.get("key_id")
            problem = "checkpoint " + self._signature_problem(kid if isinstance(kid, str) else None)
            self.fail(f"{problem}; records up to {seq - 1} are not vouched for", seq)
            return False
        # Its signature covers the record before it, not its own fields: the newest one's
        # are anyone's to change (what ``ledger head`` hands out). Only the writer's fields,
        # and its key's id, are a checkpoint's.
        if len(record) != len(_CHECKPOINT_NAMES) or not _CHECKPOINT_NAMES.issuperset(record):
            extra = ", ".join(sorted(set(record) - _CHECKPOINT_NAMES)) or "some missing"
            self.fail(f"checkpoint holds fields the gateway does not write ({extra})", seq)
            return False
        if record.get("key_id") != self._key_id:
            self.fail(
                f"checkpoint says key_id {str(record.get('key_id'))[:40]!r}, but this public "
                f"key ({self._key_id}) signed it",
                seq,
            )
            return False
        self._last_checkpoint = seq
        return True

    def _signature_problem(self, signer: str | None) -> str:
        if signer is not None and signer != self._key_id:
            return f"signature is by key_id {signer}, not this public key ({self._key_id})"
        return "signature does not verify with this public key"

    def result(self) -> VerifyResult:
        """The verdict; a held head beyond the last record means the tail is gone."""
        last_seq = self._expected - 1
        if self._bad is None and self._held is not None and last_seq < self._held.seq:
            self._bad = (
                last_seq + 1,
                f"ledger ends at seq {last_seq}, before the held checkpoint at seq "
                f"{self._held.seq} (its tail was cut off, or it was rolled back to an "
                "older copy)",
            )
        bad = self._bad
        return VerifyResult(
            ok=bad is None,
            first_bad_seq=None if bad is None else bad[0],
            reason=None if bad is None else bad[1],
            records=self._count,
            last_checkpoint_seq=self._last_checkpoint,
            last_seq=last_seq,
            last_hash=self._prev or GENESIS_HASH,
        )


def _repeated_name(text: str) -> str | None:
    """The first name a JSON object's text gives twice (None if none, or not an object)."""
    names: list[str] = []

    def pairs(members: list[tuple[str, Any]]) -> dict[str, Any]:
        names.extend(name for name, _ in members)
        return dict(members)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _hash_in_place(record: Mapping[str, Any]) -> bool:
    """Whether the ``hash`` member is where canonical JSON has it, after the names that sort
    before it and before those that sort after (``record`` in its text's order, each name
    once). The rest of the text is the hashed bytes, in order when the gateway wrote them:
    a member moved elsewhere is text that reads the same in other bytes."""
    names = list(record)
    at = names.index("hash")
    return (at == 0 or names[at - 1] < "hash") and at + 1 < len(names) and names[at + 1] > "hash"


def _fast_hash_ok(body: str, prev: str, digest: str, prev_hex: bool = False) -> bool:
    """Whether ``body`` minus its top-level ``hash`` member hashes to ``digest``.

    ``prev_hex``: ``prev`` is known to be 64 hex digits (the verifier checked it before).
    """
    member = f'"hash":"{digest}"'
    at = body.find(member)
    if at < 1 or not (prev_hex or _HEX64.match(prev)):
        return False
    end = at + len(member)
    if body[at - 1] == ",":
        text = body[: at - 1] + body[end:]
    elif body[at - 1] == "{" and body[end : end + 1] == ",":
        text = body[:at] + body[end + 1 :]
    else:
        return False
    try:
        data = text.encode()
    except UnicodeEncodeError:
        return False
    return hashlib.sha256(bytes.fromhex(prev) + data).hexdigest() == digest


def verify_records(
    records: Iterable[Mapping[str, Any]],
    public_key: Ed25519PublicKey,
    held_head: Head | None = None,
) -> VerifyResult:
    """Verify parsed records in stored order; stops at the first bad one."""
    verifier = Verifier(public_key, held_head)
    for record in records:
        if not verifier.feed(record):
            break
    return verifier.result()
