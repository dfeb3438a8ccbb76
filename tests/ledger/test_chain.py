"""The pure hash chain and signatures: byte-exact encodings, and each kind of tampering
caught on in-memory records."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from lab.certs import rsa_key_pem

from appliance.ledger import records
from appliance.ledger.chain import (
    GENESIS_HASH,
    Head,
    LedgerKeyError,
    Verifier,
    canonical_json,
    check_fields,
    checkpoint_fields,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    record_hash,
    seal,
    seal_with_body,
    sign_head,
    utc_now,
    verify_head,
    verify_records,
)

FIXED = {
    "seq": 1,
    "ts": "2025-01-31T12:00:00.000001Z",
    "kind": "statement",
    "session": "s1",
    "identity": "agent@example.com",
    "groups": ["agents", "readers"],
    "client": "10.0.1.10:40000",
    "target": "orders",
    "db": "shop",
    "command": "COM_QUERY",
    "sql": "SELECT 'é' /* ☃ */, \"q\"",
    "decision": "allowed",
    "rule": None,
    "statement_seq": 1,
    "duration_ms": 1.5,
    "masked": [],
    "tls": True,
}
FIXED_JSON = (
    '{"client":"10.0.1.10:40000","command":"COM_QUERY","db":"shop","decision":"allowed",'
    '"duration_ms":1.5,"groups":["agents","readers"],"identity":"agent@example.com",'
    '"kind":"statement","masked":[],"prev_hash":"' + "0" * 64 + '","rule":null,"seq":1,'
    '"session":"s1","sql":"SELECT \'é\' /* ☃ */, \\"q\\"","statement_seq":1,'
    '"target":"orders","tls":true,"ts":"2025-01-31T12:00:00.000001Z"}'
).encode()
FIXED_HASH = "4b15ab5b094e1f30ba5337eacca5d82e1075980bcbf8aba32078eea35ef9af7b"


# -- encodings -----------------------------------------------------------------------------


def test_canonical_json_is_byte_exact() -> None:
    assert canonical_json({**FIXED, "prev_hash": GENESIS_HASH}) == FIXED_JSON


def test_fixed_record_hash() -> None:
    assert hashlib.sha256(bytes(32) + FIXED_JSON).hexdigest() == FIXED_HASH
    sealed = seal(FIXED, GENESIS_HASH)
    assert sealed["prev_hash"] == GENESIS_HASH
    assert sealed["hash"] == FIXED_HASH
    assert record_hash(sealed) == FIXED_HASH


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"duration_ms": float("nan")})


def test_hash_covers_prev_hash() -> None:
    other_prev = "ab" * 32
    sealed = seal(FIXED, other_prev)
    body = {k: v for k, v in sealed.items() if k != "hash"}
    expected = hashlib.sha256(bytes.fromhex(other_prev) + canonical_json(body)).hexdigest()
    assert sealed["hash"] == expected != FIXED_HASH


@pytest.mark.parametrize(
    "fields",
    [
        FIXED,
        {"seq": 3, "ts": "t", "kind": "alert"},  # no key sorts before "hash"
        {"seq": 3, "ts": "t", "kind": "alert", "a": 1, "z": None},
        {"seq": 3, "ts": "t", "kind": "alert", "sql": 'x,"kind":1,"hash":"y"', "groups": ["]"]},
        {"seq": 3, "ts": "t", "kind": "alert", "reason": "ü\u2028\x00\\", "f": -0.25, "b": False},
    ],
)
def test_stored_body_is_the_canonical_json_of_the_sealed_record(fields: dict[str, Any]) -> None:
    sealed, body = seal_with_body(fields, "cd" * 32)
    assert body.encode() == canonical_json(sealed)
    assert json.loads(body) == sealed


def test_utc_now_format() -> None:
    ts = utc_now()
    assert len(ts) == 27 and ts[10] == "T" and ts.endswith("Z") and ts[19] == "."


# -- fields --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"sql": "x"}, "kind must be one of"),
        ({"kind": "checkpoint"}, "kind must be one of"),
        ({"kind": "alert", "seq": 3}, "set by the ledger writer"),
        ({"kind": "alert", "hash": "x"}, "set by the ledger writer"),
        ({"kind": "alert", "Bad-Name": 1}, "not an identifier"),
        ({"kind": "alert", "x": {"a": 1}}, "of type dict"),
        ({"kind": "alert", "x": [1, 2]}, "of type list"),
        ({"kind": "alert", "x": b"raw"}, "of type bytes"),
        ({"kind": "alert", "x": float("inf")}, "not a finite number"),
    ],
)
def test_check_fields_refuses(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_fields(fields)


def test_builders_produce_appendable_fields() -> None:
    built = [
        records.appliance_start(appliance="edge-1", version="0.1.0", config_sha256="ab" * 32),
        records.session_start(
            session="s1", identity="a", groups=("g",), client="1.2.3.4:5", target="t"
        ),
        records.auth_failed(client="1.2.3.4:5", target="t", identity=None, reason="bad token"),
        records.statement(
            session="s1",
            statement_seq=1,
            identity="a",
            groups=["g"],
            client="1.2.3.4:5",
            target="t",
            db=None,
            command="COM_QUERY",
            sql="SELECT 1",
            sql_sha256=records.sql_sha256(b"SELECT 1"),
            decision="allowed",
            rule="r",
            reason=None,
        ),
        records.result(
            session="s1", statement_seq=1, rows=1, affected=0, error=None, duration_ms=2 / 3
        ),
        records.approval(
            session="s1", statement_seq=1, decision="approved", approver="op", reason="ok"
        ),
        records.session_end(session="s1", reason="client quit", statements=1),
        records.alert(alert="bypass", reason="a connection slipped past", client="1.2.3.4:5"),
    ]
    for fields in built:
        check_fields(fields)
    assert [f["kind"] for f in built] == [
        "appliance_start",
        "session_start",
        "auth_failed",
        "statement",
        "result",
        "approval",
        "session_end",
        "alert",
    ]
    assert built[3]["sql_sha256"] == hashlib.sha256(b"SELECT 1").hexdigest()
    assert built[4]["duration_ms"] == 0.667
    assert built[4]["masked"] == [] and built[4]["approver"] is None
    assert built[7]["client"] == "1.2.3.4:5"


# -- keys and signatures -------------------------------------------------------------------


def test_sign_and_verify_head() -> None:
    key = generate_key()
    signature = sign_head(key, 41, "ab" * 32)
    public = key.public_key()
    assert verify_head(public, 41, "ab" * 32, signature)
    assert not verify_head(public, 42, "ab" * 32, signature)
    assert not verify_head(public, 41, "ac" * 32, signature)
    assert not verify_head(generate_key().public_key(), 41, "ab" * 32, signature)
    assert not verify_head(public, 41, "ab" * 32, "not base64!")
    assert not verify_head(public, 41, "ab" * 32, "")


def test_signature_covers_canonical_seq_and_hash() -> None:
    key = generate_key()
    import base64

    raw = base64.b64decode(sign_head(key, 7, "ef" * 32))
    message = b'{"hash":"' + b"ef" * 32 + b'","seq":7}'
    key.public_key().verify(raw, message)  # raises if the message differs


def test_key_id_is_sha256_of_raw_public_key() -> None:
    key = generate_key()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_key_files_round_trip(tmp_path: Path) -> None:
    key = generate_key()
    (tmp_path / "ledger.key").write_bytes(private_key_pem(key))
    (tmp_path / "ledger.pub").write_bytes(public_key_pem(key.public_key()))
    assert private_key_pem(load_private_key(tmp_path / "ledger.key")) == private_key_pem(key)
    loaded = load_public_key(tmp_path / "ledger.pub")
    assert key_id(loaded) == key_id(key.public_key())


def _rsa_pem() -> tuple[bytes, bytes]:
    return rsa_key_pem(1024)


def test_key_loading_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(LedgerKeyError, match=f"^{missing}: cannot read the key: No such file"):
        load_private_key(missing)
    with pytest.raises(LedgerKeyError, match="is a directory"):
        load_public_key(tmp_path)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00" * 32)
    with pytest.raises(LedgerKeyError, match="not a PEM private key"):
        load_private_key(garbage)
    with pytest.raises(LedgerKeyError, match="not a PEM public key"):
        load_public_key(garbage)
    rsa_private, rsa_public = _rsa_pem()
    (tmp_path / "rsa.key").write_bytes(rsa_private)
    (tmp_path / "rsa.pub").write_bytes(rsa_public)
    with pytest.raises(LedgerKeyError, match="not an Ed25519 key"):
        load_private_key(tmp_path / "rsa.key")
    with pytest.raises(LedgerKeyError, match="not an Ed25519 key"):
        load_public_key(tmp_path / "rsa.pub")
    key = generate_key()
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    (tmp_path / "enc.key").write_bytes(encrypted)
    with pytest.raises(LedgerKeyError, match="encrypted"):
        load_private_key(tmp_path / "enc.key")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(key))
    with pytest.raises(LedgerKeyError, match="holds a private key"):
        load_public_key(tmp_path / "ledger.key")
    broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    (tmp_path / "broken.pub").write_bytes(broken)
    with pytest.raises(LedgerKeyError, match="not a valid PEM public key"):
        load_public_key(tmp_path / "broken.pub")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([], "JSON object"),
        ({"hash": "ab" * 32, "signature": "x"}, "'seq'"),
        ({"seq": True, "hash": "ab" * 32, "signature": "x"}, "'seq'"),
        ({"seq": 0, "hash": "ab" * 32, "signature": "x"}, "'seq'"),
        ({"seq": 1, "hash": "AB" * 32, "signature": "x"}, "'hash'"),
        ({"seq": 1, "hash": "ab" * 32}, "'signature'"),
        ({"seq": 1, "hash": "ab" * 32, "signature": "x", "ts": 5}, "'ts'"),
    ],
)
def test_head_from_json_refuses(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Head.from_json(value)


# -- verification on in-memory chains ------------------------------------------------------

KEY = generate_key()
PUBLIC = KEY.public_key()


def build_chain(count: int, checkpoints_after: tuple[int, ...] = (10, 20)) -> list[dict[str, Any]]:
    """``count`` records, a checkpoint after the record whose seq is in
    ``checkpoints_after``, and one at the end: by default checkpoints are 11, 21 and
    ``count + 3``."""
    chain: list[dict[str, Any]] = []
    prev = GENESIS_HASH

    def add(fields: dict[str, Any]) -> None:
        nonlocal prev
        record = seal({"seq": len(chain) + 1, "ts": utc_now(), **fields}, prev)
        chain.append(record)
        prev = record["hash"]

    for i in range(count):
        add({"kind": "statement", "session": "s1", "statement_seq": i, "sql": f"SELECT {i}"})
        if len(chain) in checkpoints_after:
            add(checkpoint_fields(KEY, len(chain), prev))
    add(checkpoint_fields(KEY, len(chain), prev))
    return chain


def rechain(chain: list[dict[str, Any]], start: int) -> None:
    """Recompute hashes from index ``start`` on, like an attacker without the key would
    (checkpoints get the new checkpoint_hash but keep their old signature)."""
    prev = chain[start - 1]["hash"] if start else GENESIS_HASH
    for i in range(start, len(chain)):
        record = {k: v for k, v in chain[i].items() if k not in ("prev_hash", "hash")}
        record["seq"] = i + 1
        if record["kind"] == "checkpoint":
            record["checkpoint_seq"], record["checkpoint_hash"] = i, prev
        chain[i] = seal(record, prev)
        prev = chain[i]["hash"]


def head_of(chain: list[dict[str, Any]]) -> Head:
    return Head.from_checkpoint(next(r for r in reversed(chain) if r["kind"] == "checkpoint"))


def test_intact_chain_verifies() -> None:
    chain = build_chain(25)
    result = verify_records(chain, PUBLIC, head_of(chain))
    assert result.ok and result.first_bad_seq is None and result.reason is None
    assert result.records == len(chain) == 28
    assert result.last_checkpoint_seq == 28 and result.unsigned == 0


def test_records_after_the_last_checkpoint_are_reported_unsigned() -> None:
    chain = build_chain(25)[:-1]  # drop the final checkpoint
    result = verify_records(chain, PUBLIC)
    assert result.ok
    assert result.last_checkpoint_seq == 21 and result.unsigned == 6


def test_empty_ledger_verifies() -> None:
    result = verify_records([], PUBLIC)
    assert result.ok and result.records == 0 and result.last_checkpoint_seq is None


def bad(chain: list[dict[str, Any]], head: Head | None = None) -> tuple[int | None, str]:
    result = verify_records(chain, PUBLIC, head)
    assert not result.ok
    assert result.reason is not None
    return result.first_bad_seq, result.reason


def test_edited_record() -> None:
    chain = build_chain(25)
    chain[4]["sql"] = "DROP TABLE audit"
    assert bad(chain) == (5, "hash does not match the record's contents (the record was edited)")


def test_edited_and_rehashed_record_breaks_the_next_link() -> None:
    chain = build_chain(25)
    chain[4]["sql"] = "DROP TABLE audit"
    chain[4] = seal({k: v for k, v in chain[4].items() if k != "hash"}, chain[4]["prev_hash"])
    seq, reason = bad(chain)
    assert seq == 6 and reason.startswith("prev_hash does not match the hash of record 5")


def test_rewritten_chain_is_caught_by_the_next_signature() -> None:
    chain = build_chain(25)
    chain[4]["sql"] = "DROP TABLE audit"
    rechain(chain, 4)
    seq, reason = bad(chain)
    assert seq == 11
    assert reason.startswith("checkpoint signature does not verify with this public key")


def test_deleted_record() -> None:
    chain = build_chain(25)
    del chain[6]
    seq, reason = bad(chain)
    assert seq == 7 and reason.startswith("missing: the next record is seq 8")


def test_inserted_record() -> None:
    chain = build_chain(25)
    forged = seal({"seq": 5, "ts": utc_now(), "kind": "statement", "sql": "x"}, chain[3]["hash"])
    chain.insert(4, forged)
    seq, reason = bad(chain)
    assert seq == 6 and reason.startswith("found seq 5 where seq 6 was expected")


def test_reordered_records() -> None:
    chain = build_chain(25)
    chain[4], chain[5] = chain[5], chain[4]
    seq, reason = bad(chain)
    assert seq == 5 and "reordered" in reason


def test_first_record_must_start_at_genesis() -> None:
    chain = build_chain(3)
    chain[0] = seal({k: v for k, v in chain[0].items() if k != "prev_hash"}, "11" * 32)
    assert bad(chain) == (1, "prev_hash is not the genesis hash (64 zeros)")


def test_checkpoint_with_a_broken_signature() -> None:
    chain = build_chain(25)
    chain[20]["signature"] = chain[10]["signature"]  # record 21 is a checkpoint
    rechain(chain, 20)
    seq, reason = bad(chain)
    assert seq == 21 and reason.startswith("checkpoint signature does not verify")


def test_checkpoint_must_name_the_record_before_it() -> None:
    chain = build_chain(25)
    fields = checkpoint_fields(KEY, 5, chain[4]["hash"])  # a valid signature, wrong record
    chain[10] = seal({"seq": 11, "ts": utc_now(), **fields}, chain[9]["hash"])
    rechain(chain, 11)
    seq, reason = bad(chain)
    assert seq == 11 and reason.startswith("checkpoint names record 5, not the record right")


def test_checkpoint_by_another_key_names_both_key_ids() -> None:
    chain = build_chain(5)
    other = generate_key().public_key()
    result = verify_records(chain, other)
    assert result.first_bad_seq == 6
    assert result.reason is not None
    assert f"key_id {key_id(PUBLIC)}, not this public key ({key_id(other)})" in result.reason


def test_held_head_beyond_the_end_means_the_tail_was_cut() -> None:
    chain = build_chain(25)
    head = head_of(chain)  # seq 27
    seq, reason = bad(chain[:20], head)
    assert seq == 21
    assert reason.startswith("ledger ends at seq 20, before the held checkpoint at seq 27")
    assert verify_records(chain[:20], PUBLIC).ok  # without the head nothing shows


def test_held_head_with_another_hash_means_a_rollback() -> None:
    chain = build_chain(25)
    head = head_of(chain)
    other = build_chain(25)  # same shape, other history (timestamps differ)
    seq, reason = bad(other, head)
    assert seq == 27
    assert reason.startswith(f"has hash {other[26]['hash']}, the held checkpoint says {head.hash}")


def test_held_head_with_a_bad_signature() -> None:
    chain = build_chain(25)
    head = head_of(chain)
    forged = Head(seq=head.seq, hash=head.hash, signature=sign_head(generate_key(), 27, head.hash))
    seq, reason = bad(chain, forged)
    assert seq == 27
    assert reason == "the held checkpoint's signature does not verify with this public key"


def test_verifier_fast_path_and_slow_path_agree_on_stored_text() -> None:
    chain = build_chain(5)
    bodies = [canonical_json(r).decode() for r in chain]
    verifier = Verifier(PUBLIC)
    assert all(verifier.feed_body(body, seq) for seq, body in enumerate(bodies, 1))
    assert verifier.result().ok
    # the same content with the hash member first: the hashed bytes plus that member, which
    # is the canonical JSON of a statement (no name sorts before "hash"), not of the
    # checkpoint ("checkpoint_hash" does): other bytes that read the same, reported
    moved = copy.deepcopy(chain)
    texts = [
        json.dumps({"hash": r.pop("hash"), **dict(sorted(r.items()))}, separators=(",", ":"))
        for r in moved
    ]
    assert texts[:5] == bodies[:5] and texts[5] != bodies[5]
    verifier = Verifier(PUBLIC)
    assert all(verifier.feed_body(text) for text in texts[:5])
    assert not verifier.feed_body(texts[5])
    assert verifier.result().first_bad_seq == 6
    assert str(verifier.result().reason).startswith(
        "the stored text is not the record's canonical JSON"
    )
    # an added field is an edit, whichever path looks at it
    edited = json.loads(bodies[2])
    edited["note"] = "x"
    verifier = Verifier(PUBLIC)
    assert verifier.feed_body(bodies[0]) and verifier.feed_body(bodies[1])
    assert not verifier.feed_body(canonical_json(edited).decode())
    assert verifier.result().first_bad_seq == 3


def test_hash_member_smuggled_into_a_string_is_not_accepted() -> None:
    chain = build_chain(2)
    record = chain[0]
    # remove the real member and hide its text inside a value: not the same record
    text = canonical_json({k: v for k, v in record.items() if k != "hash"}).decode()
    smuggled = text.replace('"sql":"', '"sql":"\\"hash\\":\\"' + record["hash"] + '\\",', 1)
    verifier = Verifier(PUBLIC)
    assert not verifier.feed_body(smuggled)
    assert verifier.result().reason == "the record has no valid 'hash'"


def test_stored_row_must_match_the_record_seq() -> None:
    chain = build_chain(3)
    verifier = Verifier(PUBLIC)
    assert verifier.feed_body(canonical_json(chain[0]).decode(), 1)
    assert not verifier.feed_body(canonical_json(chain[1]).decode(), 7)
    assert verifier.result().reason == "stored in row 7 but the record says seq 2"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "the stored record is not valid JSON"),
        ("[1, 2]", "the stored record is not a JSON object"),
        ('{"seq": "1"}', "the record has no integer 'seq'"),
        (
            '{"seq": 1, "ts": "t", "kind": "alert", "prev_hash": "' + "0" * 64 + '"}',
            "the record has no valid 'hash'",
        ),
    ],
)
def test_malformed_records(text: str, reason: str) -> None:
    verifier = Verifier(PUBLIC)
    assert not verifier.feed_body(text)
    result = verifier.result()
    assert (result.first_bad_seq, result.reason) == (1, reason)


REWRITTEN = (
    "the stored text is not the record's canonical JSON (it was rewritten; a key may be "
    "repeated with another value)"
)


def twice(key: str) -> str:
    return (
        f"the stored text gives the key '{key}' twice (readers may take either value): it "
        "is not the record's canonical JSON"
    )


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        (lambda body: json.dumps(json.loads(body), separators=(", ", ": ")), REWRITTEN),  # spaces
        (lambda body: json.dumps(json.loads(body), indent=1), REWRITTEN),  # one member a line
        (
            lambda body: json.dumps(  # another key order
                dict(reversed(json.loads(body).items())), separators=(",", ":")
            ),
            REWRITTEN,
        ),
        (lambda body: '{"ts":"2000-01-01T00:00:00.000000Z",' + body[1:], twice("ts")),
        (lambda body: body.replace('"kind":', '"kind":"alert","kind":', 1), twice("kind")),
    ],
)
def test_a_rewritten_text_fails_even_when_its_values_hash_right(
    rewrite: Callable[[str], str], reason: str
) -> None:
    """Another reader (SQLite's json_extract, an auditor's script) may read a repeated key
    or a reordered text otherwise than the verifier does: only the hashed bytes pass."""
    chain = build_chain(4)
    bodies = [canonical_json(r).decode() for r in chain]
    bodies[2] = rewrite(bodies[2])
    assert bodies[2] != canonical_json(chain[2]).decode()
    verifier = Verifier(PUBLIC)
    fed = [verifier.feed_body(body, seq) for seq, body in enumerate(bodies, 1)]
    assert fed == [True, True] + [False] * (len(bodies) - 2)
    assert verifier.result().first_bad_seq == 3
    assert verifier.result().reason == reason


def test_a_repeated_key_fails_though_the_hash_is_over_its_own_text() -> None:
    """A record chained at the tail whose text gives "kind" twice, hashed over that very
    text: the fast path vouched for it (SQLite's json_extract reads the first "kind",
    Python the last), and the next gateway would have signed it."""
    chain = build_chain(2)
    bodies = [canonical_json(r).decode() for r in chain]
    last = chain[-1]
    inner = (
        f'"kind":"checkpoint","prev_hash":"{last["hash"]}","seq":{len(chain) + 1},'
        f'"ts":"{last["ts"]}","kind":"alert","alert":"x","reason":"y"'
    )
    digest = hashlib.sha256(bytes.fromhex(last["hash"]) + ("{" + inner + "}").encode())
    bodies.append("{" + f'"hash":"{digest.hexdigest()}",' + inner + "}")
    verifier = Verifier(PUBLIC)
    assert [verifier.feed_body(b, seq) for seq, b in enumerate(bodies, 1)][-2:] == [True, False]
    result = verifier.result()
    assert (result.first_bad_seq, result.reason) == (len(bodies), twice("kind"))


def test_a_hash_member_moved_fails_though_the_rest_is_the_hashed_bytes() -> None:
    """A signed record's hash member moved to the end of its text: the rest is the bytes
    that were hashed, and the fast path vouched for text that is not the canonical JSON."""
    chain = build_chain(3)
    bodies = [canonical_json(r).decode() for r in chain]
    record = dict(chain[1])
    digest = record.pop("hash")
    bodies[1] = canonical_json(record).decode()[:-1] + f',"hash":"{digest}"}}'
    verifier = Verifier(PUBLIC)
    assert [verifier.feed_body(b, seq) for seq, b in enumerate(bodies, 1)][:2] == [True, False]
    assert (verifier.result().first_bad_seq, verifier.result().reason) == (2, REWRITTEN)
