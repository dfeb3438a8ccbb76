"""The arithmetic of MySQL and MariaDB password authentication, with no I/O.

The gateway plays both sides of a login: it is the server to its clients, which prove a
password against a hash kept in the gateway config (``mysql_native_password``,
``caching_sha2_password``), and it is the client to its backends (including MariaDB's
``client_ed25519``). Every function here is pure: bytes in, bytes or a verdict out.

Rules that hold throughout:

* A *nonce* is the server's 20-byte scramble; only its first 20 bytes are used, so a nonce
  that still carries the NUL of the handshake packet gives the same result.
* A secret, or anything derived from one, is compared with :func:`hmac.compare_digest`.
* A response of the wrong length is a failed login, never an exception: it is what a
  client with a wrong or empty password sends. An empty password has no hash to prove,
  so accounts without a password must be handled before calling the verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.mysql import ed25519

__all__ = [
    "NONCE_LENGTH",
    "SHA2_SCRAMBLE_LENGTH",
    "ed25519_password_public_key",
    "ed25519_password_sign",
    "ed25519_verify",
    "native_password_hash",
    "native_scramble",
    "native_verify",
    "native_verify_cleartext",
    "parse_native_password_hash",
    "sha2_double_hash",
    "sha2_rsa_decrypt",
    "sha2_rsa_encrypt",
    "sha2_scramble",
    "sha2_verify_fast",
]

#: The length of the server's scramble; both plugins hash only this much of the nonce.
NONCE_LENGTH: Final = 20
#: The length of a caching_sha2_password scramble (the client's fast-auth proof).
SHA2_SCRAMBLE_LENGTH: Final = 32

_SHA1_LENGTH: Final = 20
_SHA256_LENGTH: Final = SHA2_SCRAMBLE_LENGTH
_NATIVE_HASH_RE: Final = re.compile(r"\*[0-9A-Fa-f]{40}")

# MySQL 8 encrypts with RSA_PKCS1_OAEP_PADDING, which is OAEP with SHA-1 and MGF1-SHA-1.
_OAEP: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
)


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    """Bytewise XOR of two strings of the same length."""
    if len(a) != len(b):
        raise ValueError("XOR of strings of different lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


# --- hashes stored in the gateway config --------------------------------------------------


def native_password_hash(password: bytes) -> str:
    """MySQL's ``PASSWORD()``: what an operator puts in ``[[accounts]] password_hash``.

    Unlike MySQL, which returns ``''`` for an empty password, this always gives the
    41-character form, so the config has a single syntax for hashes.
    """
    return "*" + _sha1(_sha1(password)).hex().upper()


def parse_native_password_hash(text: str) -> bytes:
    """The 20-byte stage-2 hash from ``*`` + 40 hex digits, or ValueError saying what is wrong.

    The message never repeats the text: a hash in a log is a hash an attacker can replay
    against ``mysql_native_password``.
    """
    if _NATIVE_HASH_RE.fullmatch(text) is None:
        raise ValueError(
            "password_hash must be '*' followed by 40 hex digits, as MySQL's PASSWORD() "
            f"prints it (the value given is {len(text)} characters long)"
        )
    return bytes.fromhex(text[1:])


# --- mysql_native_password -----------------------------------------------------------------


def native_scramble(password: bytes, nonce: bytes) -> bytes:
    """The client's proof: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))); empty for no password."""
    if not password:
        return b""
    stage1 = _sha1(password)
    return _xor(stage1, _sha1(nonce[:NONCE_LENGTH] + _sha1(stage1)))


def native_verify(stage2: bytes, nonce: bytes, response: bytes) -> bytes | None:
    """Check a client's proof knowing only stage2 = SHA1(SHA1(pw)).

    Returns the recovered stage1 = SHA1(pw) when the proof is right, else None. The XOR
    undoes the client's mask, and stage1 is right exactly when it hashes to stage2.
    Stage1 is what the gateway would need to scramble for a native backend.
    """
    if len(response) != _SHA1_LENGTH or len(stage2) != _SHA1_LENGTH:
        return None
    stage1 = _xor(response, _sha1(nonce[:NONCE_LENGTH] + stage2))
    if hmac.compare_digest(_sha1(stage1), stage2):
        return stage1
    return None


def native_verify_cleartext(stage2: bytes, password: bytes) -> bool:
    """Check a clear password (caching_sha2 full auth, clear-text plugin) against stage2."""
    return hmac.compare_digest(_sha1(_sha1(password)), stage2)


# --- caching_sha2_password -----------------------------------------------------------------


def sha2_double_hash(password: bytes) -> bytes:
    """SHA256(SHA256(pw)): what the gateway caches after a full auth to allow fast auth."""
    return _sha256(_sha256(password))


def sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """The client's fast-auth proof: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)."""
    if not password:
        return b""
    p1 = _sha256(password)
    return _xor(p1, _sha256(_sha256(p1) + nonce[:NONCE_LENGTH]))


def sha2_verify_fast(double_hash: bytes, nonce: bytes, response: bytes) -> bool:
    """Check a fast-auth proof knowing only SHA256(SHA256(pw)), as the server's cache does."""
    if len(response) != _SHA256_LENGTH or len(double_hash) != _SHA256_LENGTH:
        return False
    p1 = _xor(response, _sha256(double_hash + nonce[:NONCE_LENGTH]))
    return hmac.compare_digest(_sha256(p1), double_hash)


def _xor_repeated(data: bytes, nonce: bytes) -> bytes:
    """XOR with the nonce repeated, which binds the RSA-encrypted password to this login."""
    key = nonce[:NONCE_LENGTH]
    if not key:
        raise ValueError("the nonce is empty")
    stream = (key * (len(data) // len(key) + 1))[: len(data)]
    return _xor(data, stream)


def sha2_rsa_encrypt(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """The client's full-auth answer without TLS: (pw + NUL) XOR nonce, under the server's key.

    Raises ValueError if the PEM is not an RSA public key.
    """
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the server's public key is not an RSA key")
    return key.encrypt(_xor_repeated(password + b"\0", nonce), _OAEP)


def sha2_rsa_decrypt(ciphertext: bytes, nonce: bytes, private_key_pem: bytes) -> bytes:
    """The server side of :func:`sha2_rsa_encrypt`: the password, without its trailing NUL.

    Raises ValueError when the key is not an RSA private key, when the ciphertext does not
    decrypt (wrong key, tampered data) or when the plaintext lacks the NUL, which is what a
    wrong nonce produces.
    """
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the private key is not an RSA key")
    plain = _xor_repeated(key.decrypt(ciphertext, _OAEP), nonce)
    if not plain.endswith(b"\0"):
        raise ValueError("the decrypted password does not end with NUL (wrong nonce?)")
    return plain[:-1]


# --- MariaDB client_ed25519 ------------------------------------------------------------------


def _ed25519_key(password: bytes) -> tuple[int, bytes, bytes]:
    """The scalar a, the prefix for nonces and the encoded A, derived like MariaDB does.

    MariaDB treats the whole password as the Ed25519 seed: az = SHA512(password).
    """
    az = hashlib.sha512(password).digest()
    a = ed25519.clamp(az[:32])
    public = ed25519.encode_point(ed25519.scalar_mult(a, ed25519.BASE))
    return a, az[32:], public


def ed25519_password_public_key(password: bytes) -> bytes:
    """The 32-byte public key A that MariaDB stores for ``USING PASSWORD('...')``.

    MariaDB shows it base64-encoded without padding (43 characters); see
    :func:`ed25519_password_public_key_b64`.
    """
    return _ed25519_key(password)[2]


def ed25519_password_public_key_b64(password: bytes) -> str:
    """A in the 43-character form of ``mysql.global_priv`` and MariaDB's ``ed25519_password()``."""
    return base64.b64encode(ed25519_password_public_key(password)).decode("ascii").rstrip("=")


def ed25519_password_sign(password: bytes, message: bytes) -> bytes:
    """Sign the server's nonce as ``client_ed25519`` does: R || S, 64 bytes.

    This is RFC 8032 Ed25519 with SHA512(password) in place of SHA512(seed), so a
    standard verifier accepts it against :func:`ed25519_password_public_key`.
    """
    a, prefix, public = _ed25519_key(password)
    r = int.from_bytes(hashlib.sha512(prefix + message).digest(), "little") % ed25519.L
    big_r = ed25519.encode_point(ed25519.scalar_mult(r, ed25519.BASE))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % ed25519.L
    s = (r + k * a) % ed25519.L
    return big_r + s.to_bytes(32, "little")


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Standard Ed25519 verification (cryptography); False for any malformed input."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
