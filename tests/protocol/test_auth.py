"""Tests of the authentication arithmetic against PyMySQL, cryptography and MariaDB vectors."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable

import pymysql._auth as pymysql_auth
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519 as crypto_ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from lab.certs import rsa_key_pem

from appliance.mysql import auth, ed25519

NONCE = bytes(range(1, 21))
OTHER_NONCE = bytes(range(21, 41))
PASSWORDS = [b"secret", b"x", b"p\xc3\xa4ssw\xc3\xb6rd", b"a" * 100]

passwords = st.binary(min_size=1, max_size=64)
nonces = st.binary(min_size=20, max_size=20)


def _flip_first_bit(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


# --- stored hashes -------------------------------------------------------------------------


def test_native_password_hash_matches_mysql_password_function() -> None:
    # SELECT PASSWORD('secret') on MySQL 5.7 / MariaDB.
    assert auth.native_password_hash(b"secret") == "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"


def test_native_password_hash_of_empty_password_keeps_the_41_character_form() -> None:
    text = auth.native_password_hash(b"")
    assert len(text) == 41
    assert (
        auth.parse_native_password_hash(text) == hashlib.sha1(hashlib.sha1(b"").digest()).digest()
    )


@pytest.mark.parametrize("password", PASSWORDS)
def test_parse_native_password_hash_round_trips_in_any_case(password: bytes) -> None:
    stage2 = hashlib.sha1(hashlib.sha1(password).digest()).digest()
    text = auth.native_password_hash(password)
    assert auth.parse_native_password_hash(text) == stage2
    assert auth.parse_native_password_hash(text.lower()) == stage2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "*",
        "14E65567ABDB5135D0CFD9A70B3032C179A49EE7",  # no star
        "*14E65567ABDB5135D0CFD9A70B3032C179A49EE",  # 39 digits
        "*14E65567ABDB5135D0CFD9A70B3032C179A49EE77",  # 41 digits
        "*14E65567ABDB5135D0CFD9A70B3032C179A49EEG",  # not hex
        "*14 E65567ABDB5135D0CFD9A70B3032C179A49EE7",  # bytes.fromhex would skip the space
        "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7\n",
        " *14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
    ],
)
def test_parse_native_password_hash_rejects_malformed_text_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError, match="40 hex digits") as excinfo:
        auth.parse_native_password_hash(text)
    if len(text) > 1:
        assert text.strip() not in str(excinfo.value)


# --- mysql_native_password -----------------------------------------------------------------


@pytest.mark.parametrize("password", PASSWORDS)
def test_native_scramble_matches_pymysql(password: bytes) -> None:
    assert auth.native_scramble(password, NONCE) == pymysql_auth.scramble_native_password(
        password, NONCE
    )


@given(password=passwords, nonce=nonces)
def test_native_scramble_matches_pymysql_for_any_input(password: bytes, nonce: bytes) -> None:
    assert auth.native_scramble(password, nonce) == pymysql_auth.scramble_native_password(
        password, nonce
    )


def test_native_scramble_of_empty_password_is_empty() -> None:
    assert auth.native_scramble(b"", NONCE) == b""


def test_native_scramble_ignores_the_handshake_nul_after_the_nonce() -> None:
    assert auth.native_scramble(b"secret", NONCE + b"\0") == auth.native_scramble(b"secret", NONCE)


@given(password=passwords, nonce=nonces)
def test_native_verify_accepts_the_right_proof_and_recovers_stage1(
    password: bytes, nonce: bytes
) -> None:
    stage2 = auth.parse_native_password_hash(auth.native_password_hash(password))
    response = auth.native_scramble(password, nonce)
    assert auth.native_verify(stage2, nonce, response) == hashlib.sha1(password).digest()


@pytest.mark.parametrize(
    ("password", "nonce", "mutate"),
    [
        pytest.param(b"wrong", NONCE, lambda r: r, id="wrong password"),
        pytest.param(b"secret", OTHER_NONCE, lambda r: r, id="wrong nonce"),
        pytest.param(b"secret", NONCE, lambda r: r[:-1], id="truncated"),
        pytest.param(b"secret", NONCE, lambda r: r + b"\0", id="too long"),
        pytest.param(b"secret", NONCE, _flip_first_bit, id="one bit flipped"),
        pytest.param(b"", NONCE, lambda r: r, id="empty response"),
    ],
)
def test_native_verify_rejects(
    password: bytes, nonce: bytes, mutate: Callable[[bytes], bytes]
) -> None:
    stage2 = auth.parse_native_password_hash(auth.native_password_hash(b"secret"))
    response = mutate(auth.native_scramble(password, nonce))
    assert auth.native_verify(stage2, NONCE, response) is None


def test_native_verify_cleartext() -> None:
    stage2 = auth.parse_native_password_hash(auth.native_password_hash(b"secret"))
    assert auth.native_verify_cleartext(stage2, b"secret")
    assert not auth.native_verify_cleartext(stage2, b"secreT")
    assert not auth.native_verify_cleartext(stage2, b"")


# --- caching_sha2_password -----------------------------------------------------------------


def test_sha2_double_hash() -> None:
    assert (
        auth.sha2_double_hash(b"secret")
        == hashlib.sha256(hashlib.sha256(b"secret").digest()).digest()
    )


@given(password=passwords, nonce=nonces)
def test_sha2_scramble_matches_pymysql(password: bytes, nonce: bytes) -> None:
    assert auth.sha2_scramble(password, nonce) == pymysql_auth.scramble_caching_sha2(
        password, nonce
    )


def test_sha2_scramble_of_empty_password_is_empty_and_nul_is_ignored() -> None:
    assert auth.sha2_scramble(b"", NONCE) == b""
    assert auth.sha2_scramble(b"secret", NONCE + b"\0") == auth.sha2_scramble(b"secret", NONCE)


@given(password=passwords, nonce=nonces)
def test_sha2_verify_fast_accepts_the_right_proof(password: bytes, nonce: bytes) -> None:
    double_hash = auth.sha2_double_hash(password)
    assert auth.sha2_verify_fast(double_hash, nonce, auth.sha2_scramble(password, nonce))


@pytest.mark.parametrize(
    ("password", "nonce", "mutate"),
    [
        pytest.param(b"wrong", NONCE, lambda r: r, id="wrong password"),
        pytest.param(b"secret", OTHER_NONCE, lambda r: r, id="wrong nonce"),
        pytest.param(b"secret", NONCE, lambda r: r[:-1], id="truncated"),
        pytest.param(b"secret", NONCE, _flip_first_bit, id="one bit flipped"),
        pytest.param(b"", NONCE, lambda r: r, id="empty response"),
    ],
)
def test_sha2_verify_fast_rejects(
    password: bytes, nonce: bytes, mutate: Callable[[bytes], bytes]
) -> None:
    response = mutate(auth.sha2_scramble(password, nonce))
    assert not auth.sha2_verify_fast(auth.sha2_double_hash(b"secret"), NONCE, response)


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[bytes, bytes]:
    """A fresh 2048-bit key pair as (private PEM, public PEM)."""
    return rsa_key_pem(2048)


# Longer than the nonce, so the repeated XOR is exercised.
RSA_PASSWORDS = [b"", b"secret", bytes(range(1, 50))]


@pytest.mark.parametrize("password", RSA_PASSWORDS)
def test_sha2_rsa_round_trip(rsa_pem: tuple[bytes, bytes], password: bytes) -> None:
    private, public = rsa_pem
    ciphertext = auth.sha2_rsa_encrypt(password, NONCE, public)
    assert len(ciphertext) == 256
    assert auth.sha2_rsa_decrypt(ciphertext, NONCE, private) == password
    # Only the 20 bytes of the scramble count, not the NUL that ends it in the packet.
    ciphertext = auth.sha2_rsa_encrypt(password, NONCE + b"\0", public)
    assert auth.sha2_rsa_decrypt(ciphertext, NONCE, private) == password


@pytest.mark.parametrize("password", RSA_PASSWORDS)
def test_sha2_rsa_decrypt_reads_what_pymysql_encrypts(
    rsa_pem: tuple[bytes, bytes], password: bytes
) -> None:
    private, public = rsa_pem
    ciphertext = pymysql_auth.sha2_rsa_encrypt(password, NONCE, public)
    assert auth.sha2_rsa_decrypt(ciphertext, NONCE, private) == password


def test_sha2_rsa_decrypt_rejects_a_wrong_nonce(rsa_pem: tuple[bytes, bytes]) -> None:
    private, public = rsa_pem
    ciphertext = auth.sha2_rsa_encrypt(b"secret", NONCE, public)
    with pytest.raises(ValueError, match="NUL"):
        auth.sha2_rsa_decrypt(ciphertext, OTHER_NONCE, private)


def test_sha2_rsa_decrypt_rejects_tampered_ciphertext(rsa_pem: tuple[bytes, bytes]) -> None:
    private, public = rsa_pem
    ciphertext = auth.sha2_rsa_encrypt(b"secret", NONCE, public)
    with pytest.raises(ValueError):
        auth.sha2_rsa_decrypt(_flip_first_bit(ciphertext), NONCE, private)


def test_sha2_rsa_rejects_keys_that_are_not_rsa() -> None:
    key = crypto_ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="RSA"):
        auth.sha2_rsa_encrypt(b"secret", NONCE, public)
    with pytest.raises(ValueError, match="RSA"):
        auth.sha2_rsa_decrypt(b"\0" * 256, NONCE, private)


# --- MariaDB client_ed25519 ------------------------------------------------------------------

# SELECT ed25519_password(...) in MariaDB's mysql-test/suite/plugins/r/auth_ed25519.result;
# the empty password's key is in PyMySQL's CI setup (ci/docker-entrypoint-initdb.d).
MARIADB_PUBLIC_KEYS = {
    b"foo": "vubFBzIrapbfHct1/J72dnUryz5VS7lA6XHH8sIx4TI",
    b"foobar": "qv2mG6HWCuy32Slb5xhV4THStewNz2VINVPbgk+XAJ8",
    b"foo bar": "Y5fV74JAVRMOK2cdnUsYS+WW9sXaaL/o+6WGKOgqnzc",
    b"bar": "pfzkeWMzkTefY1oshXS+/kATeN51M+4jxi3/cbyTd10",
    b"secret": "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY",
    b"": "4LH+dBF+G5W2CKTyId8xR3SyDqZoQjUNUVNxx8aWbG4",
}


@pytest.mark.parametrize(("password", "stored"), MARIADB_PUBLIC_KEYS.items())
def test_ed25519_public_key_matches_mariadb(password: bytes, stored: str) -> None:
    assert auth.ed25519_password_public_key(password) == base64.b64decode(stored + "=")
    assert auth.ed25519_password_public_key_b64(password) == stored


def test_ed25519_signature_matches_mariadb_connector() -> None:
    # Signature of the nonce 00..1f under "ed25519_pass_1" by MariaDB Connector/C's
    # ma_crypto_sign, as recorded in ProxySQL's ed25519 tests.
    expected = bytes.fromhex(
        "004a2ab8c18a320bdde27a5fff54ae43f66b4c21373ba3c1852ce0eb9255d073"
        "f7b6125fb6ee1a236633da90d0e38b3b58c3295b4ab9eb418402cbfa6f879701"
    )
    assert auth.ed25519_password_sign(b"ed25519_pass_1", bytes(range(32))) == expected


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), hashlib.sha256(b"seed").digest()])
def test_ed25519_equals_standard_ed25519_for_a_32_byte_password(seed: bytes) -> None:
    # Standard Ed25519 also computes SHA512(seed), so a 32-byte password is a plain seed.
    key = crypto_ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert auth.ed25519_password_public_key(seed) == public
    assert auth.ed25519_password_sign(seed, NONCE + NONCE[:12]) == key.sign(NONCE + NONCE[:12])


@pytest.mark.parametrize("length", [0, 1, 10, 31, 33, 100])
def test_ed25519_signature_verifies_for_any_password_length(length: int) -> None:
    password = os.urandom(length)
    message = os.urandom(32)
    public = auth.ed25519_password_public_key(password)
    signature = auth.ed25519_password_sign(password, message)
    assert len(signature) == 64
    assert auth.ed25519_verify(public, message, signature)
    crypto_ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    assert not auth.ed25519_verify(public, _flip_first_bit(message), signature)
    assert not auth.ed25519_verify(public, message, _flip_first_bit(signature))
    other = auth.ed25519_password_public_key(password + b"x")
    assert not auth.ed25519_verify(other, message, signature)


@settings(max_examples=25)
@given(password=st.binary(max_size=80), message=st.binary(max_size=64))
def test_ed25519_sign_verify_property(password: bytes, message: bytes) -> None:
    public = auth.ed25519_password_public_key(password)
    assert auth.ed25519_verify(public, message, auth.ed25519_password_sign(password, message))


def test_ed25519_verify_is_false_for_malformed_input() -> None:
    public = auth.ed25519_password_public_key(b"secret")
    signature = auth.ed25519_password_sign(b"secret", NONCE)
    assert not auth.ed25519_verify(public[:31], NONCE, signature)
    assert not auth.ed25519_verify(public, NONCE, signature[:63])
    assert not auth.ed25519_verify(public, NONCE, b"")


def test_ed25519_matches_pymysql_when_pynacl_is_installed() -> None:
    pytest.importorskip("nacl")
    message = os.urandom(32)
    assert auth.ed25519_password_sign(b"secret", message) == pymysql_auth.ed25519_password(
        b"secret", message
    )


def test_ed25519_curve_basics() -> None:
    identity = ed25519.encode_point(ed25519.scalar_mult(ed25519.L, ed25519.BASE))
    assert identity == b"\x01" + bytes(31)  # L * B is the neutral point (0, 1)
    assert ed25519.encode_point(ed25519.BASE) == b"\x58" + b"\x66" * 31  # RFC 8032 base point
    assert ed25519.clamp(b"\xff" * 32) == 2**255 - 8  # bits 0-2 and 255 cleared
    assert ed25519.clamp(bytes(32)) == 2**254  # bit 254 set
    with pytest.raises(ValueError):
        ed25519.clamp(bytes(31))
    with pytest.raises(ValueError):
        ed25519.scalar_mult(2**256, ed25519.BASE)
