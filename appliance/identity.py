"""OIDC tokens presented as MySQL passwords: verified against the identity provider's keys.

A client that is not a gateway account logs in with its user name and, as password, a JWT
issued by the organisation's identity provider (SPEC §5). ``TokenVerifier.verify`` either
returns what the token proves (``VerifiedToken``) or raises ``TokenRejected`` whose text
says, in words a person can act on, why the token was refused; that text goes into the
client's ERR 1045 and the ``auth_failed`` record. It never repeats the token.

What is enforced, in order:

- the password is ASCII, at most ``identity.max_token_bytes``, three base64url parts;
- the header's ``alg`` is in ``identity.algorithms`` (asymmetric only: ``none`` and HS*
  are refused by name, whatever the configuration says) and it has a ``kid``;
- the key with that ``kid`` comes from the JWKS (``jwks_file``, ``jwks_url``, or the
  ``jwks_uri`` of the issuer's discovery document); its type, curve and ``alg`` must fit
  the header's algorithm. Headers that point elsewhere for keys (``jku``, ``x5u``,
  ``jwk``) are never followed;
- PyJWT checks the signature with exactly that one algorithm, requires ``exp``, ``iss``
  and ``aud``, and checks ``iss`` (exact) and ``aud``; a list of audiences is accepted
  only when it is exactly ``[identity.audience]``;
- ``exp``, ``nbf`` and ``iat`` are checked here against the verifier's clock, with
  ``identity.leeway_s`` (PyJWT's own time checks read the system clock, which tests and
  the shell cannot set); the lifetime, ``exp`` minus the earliest of ``iat`` and ``nbf``
  (or minus now when neither is present), is at most ``identity.max_lifetime_s``;
- the ``username_claim`` equals the MySQL user name; ``groups_claim`` is a string or a
  list of strings (missing: no groups).

Keys are cached. A ``jwks_file`` is read again when it changes (modification time, size
or inode); a fetched JWKS is fetched again after an hour. A ``kid`` that is not in the
cache makes the verifier read or fetch the keys once more, at most once a minute, so a
key rotation needs no restart. A failed fetch keeps the cached keys (and logs a warning);
with no keys at all the token is refused, naming the URL and the reason. A JWKS that is
read but holds no usable key (``{"keys": []}``: the provider or the operator withdrew
them) replaces the cache: every token is refused until it has one again.

One fetch at a time, in a daemon thread, within ``FETCH_TIMEOUT_S`` from its start to
its last byte (a server that drips its answer is cut off); while one still runs, no
other starts, and logins whose key is cached do not wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

import jwt

from appliance.config import IdentityConfig, read_small_file

__all__ = ["KeysUnavailable", "TokenRejected", "TokenVerifier", "VerifiedToken", "jwks_problem"]

log = logging.getLogger("sqlgate.identity")

FETCH_TIMEOUT_S = 5.0
"""How long one HTTPS request to the identity provider may take."""

REFRESH_INTERVAL_S = 60.0
"""An unknown ``kid`` makes the verifier reload the keys at most this often."""

MAX_KEYS_AGE_S = 3600.0
"""Fetched keys older than this are fetched again (a failure keeps them)."""

RETRY_WITHOUT_KEYS_S = 10.0
"""With no keys at all, a failed fetch is not retried sooner than this."""

_MAX_DOCUMENT = 1024 * 1024  # a JWKS or discovery document larger than this is refused
_TOKEN_RE = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SHOWN_KIDS = 5

# What each algorithm needs of a JWK: its kty, and for EC and OKP keys the curves.
_KEY_KINDS: dict[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token proves about the client."""

    user: str  # the username_claim value (equals the MySQL user name)
    subject: str | None  # sub
    groups: frozenset[str]  # from groups_claim
    token_id: str | None  # jti
    expires_at: float  # exp (epoch seconds)


class TokenRejected(Exception):
    """Why a token was refused, in words a person can act on (goes into ERR 1045 and the
    auth_failed record)."""


class KeysUnavailable(TokenRejected):
    """No token can be checked now, whoever sends it: the provider's keys cannot be read
    or fetched, the provider withdrew them all, or the gateway failed. Not the client's
    doing, so such a refusal does not count toward its login backoff (once the keys are
    back, the agents that retried meanwhile must not be made to wait)."""


class _SourceError(Exception):
    """The keys could not be read or fetched: ``where`` (a URL or file) and ``reason``."""

    def __init__(self, where: str, reason: str, *, fetched: bool = True) -> None:
        super().__init__(where, reason)
        self.where = where
        self.reason = reason
        self.fetched = fetched

    def message(self) -> str:
        verb = "fetched from" if self.fetched else "read from"
        return f"the identity provider's keys cannot be {verb} {self.where}: {self.reason}"


@dataclass(slots=True)
class _Key:
    """One usable verification key of the JWKS."""

    kid: str
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", when it names one
    jwk: dict[str, Any]
    by_alg: dict[str, jwt.PyJWK] = field(default_factory=dict)

    def describe(self) -> str:
        return f"an {self.kty} key on curve {self.crv}" if self.crv else f"an {self.kty} key"

    def for_algorithm(self, alg: str) -> jwt.PyJWK:
        """This key bound to ``alg`` (checked to fit), built once."""
        key = self.by_alg.get(alg)
        if key is None:
            key = self.by_alg[alg] = jwt.PyJWK(self.jwk, algorithm=alg)
        return key

    def misfit(self, alg: str) -> str | None:
        """Why this key cannot verify an ``alg`` token, or None when it can."""
        kty, curves = _KEY_KINDS[alg]
        if self.alg is not None and self.alg != alg:
            return f"is for {self.alg} (its 'alg'), but the token says {alg}"
        if self.kty != kty:
            return f"is {self.describe()}, which cannot verify {alg} tokens"
        if curves is not None and self.crv not in curves:
            return f"is on curve {self.crv}, which {alg} does not use"
        return None


@dataclass(slots=True)
class _KeyCache:
    keys: dict[str, list[_Key]] | None = None  # by kid; None: never loaded
    loaded_at: float | None = None  # clock time of the last successful load
    attempted_at: float | None = None  # clock time of the last load, successful or not
    failure: _SourceError | None = None  # why the last load failed
    none_usable: str = ""  # the last load found no usable key: why (keys is then {})
    file_stamp: tuple[int, int, int] | None = None  # jwks_file: mtime_ns, size, inode
    jwks_uri: str | None = None  # discovery: the JWKS location it named


class TokenVerifier:
    """Verifies tokens for one ``[identity]`` configuration; keys are cached per verifier.

    ``clock`` gives the time in epoch seconds (token times and the refresh limits);
    ``fetch`` replaces the HTTPS GET (it is given a URL and returns the body, or raises
    with a reason); it runs in a thread either way.
    """

    def __init__(
        self,
        config: IdentityConfig,
        *,
        clock: Callable[[], float] = time.time,
        fetch: Callable[[str], bytes] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._fetch = fetch if fetch is not None else self._https_get
        self._ssl: ssl.SSLContext | None = None
        self._cache = _KeyCache()
        self._lock = asyncio.Lock()
        self._fetching = False  # a fetch thread is running (perhaps after its wait ended)

    # --- verification ----------------------------------------------------------------

    async def verify(self, user: str, token: bytes) -> VerifiedToken:
        """What ``token`` proves for MySQL user ``user``; ``TokenRejected`` says why not."""
        try:
            return await self._verify(user, token)
        except TokenRejected:
            raise
        except Exception:
            log.exception("unexpected error while checking a token for user %r", user)
            raise KeysUnavailable(
                "the token could not be checked because of an error in the gateway "
                "(its log has the details); try again or ask the gateway's operator"
            ) from None

    async def _verify(self, user: str, token: bytes) -> VerifiedToken:
        text = self._token_text(user, token)
        try:
            header = jwt.get_unverified_header(text)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"the token's header cannot be read: {_short(exc)}") from None
        alg = self._algorithm(header)
        if text.endswith("."):
            raise TokenRejected("the token is not signed: its signature part is empty")
        kid = header.get("kid")
        if kid is None:
            raise TokenRejected(
                "the token header has no 'kid' (key id): the gateway picks the identity "
                "provider's verification key by it; ask the provider for a token that names "
                "its signing key"
            )
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("the token header's 'kid' (key id) is not a non-empty string")
        claims = self._signed_claims(text, kid, alg, await self._signing_keys(kid))
        self._check_issuer(claims)
        self._check_audience(claims)
        expires_at = self._check_times(claims)
        token_user = self._check_user(user, claims)
        return VerifiedToken(
            user=token_user,
            subject=claims.get("sub"),
            groups=self._groups(claims),
            token_id=claims.get("jti"),
            expires_at=expires_at,
        )

    def _signed_claims(self, text: str, kid: str, alg: str, keys: list[_Key]) -> dict[str, Any]:
        """The claims, once a key with ``kid`` verifies the signature. Key ids need not
        be unique (a provider in the middle of a rotation may list two keys under one):
        each key that fits the algorithm is tried."""
        config = self.config
        fitting = self._choose(kid, alg, keys)
        for n, key in enumerate(fitting, 1):
            try:
                signing_key = key.for_algorithm(alg)
            except jwt.PyJWTError as exc:
                raise TokenRejected(
                    f"the identity provider's key {_quote(kid)} cannot verify {alg}: {_short(exc)}"
                ) from None
            try:
                claims: dict[str, Any] = jwt.decode(
                    text,
                    signing_key,
                    algorithms=[alg],
                    audience=config.audience,
                    issuer=config.issuer,
                    options={
                        "require": ["exp", "iss", "aud"],
                        "verify_exp": False,  # checked below, against self._clock
                        "verify_nbf": False,
                        "verify_iat": False,
                        "strict_aud": False,  # a list is checked below: exactly [audience]
                        "enforce_minimum_key_length": True,
                    },
                )
            except jwt.InvalidSignatureError as exc:
                if n < len(fitting):
                    continue  # another key under the same kid may have signed it
                raise TokenRejected(self._explain(exc, text, kid)) from None
            except jwt.PyJWTError as exc:
                raise TokenRejected(self._explain(exc, text, kid)) from None
            return claims
        raise AssertionError("_choose returns at least one key")

    def _token_text(self, user: str, token: bytes) -> str:
        """The token as text, after the checks that need no parsing."""
        token = token.strip(b" \t\r\n\0")
        not_a_token = (
            f"user {_quote(user)} is not a gateway account, so the password must be an OIDC "
            "token from the identity provider, and "
        )
        if not token:
            raise TokenRejected(not_a_token + "the password is empty")
        limit = self.config.max_token_bytes
        if len(token) > limit:
            raise TokenRejected(
                f"the token is {len(token)} bytes, more than the {limit} the gateway accepts "
                "(identity.max_token_bytes); ask the identity provider for a smaller token "
                "(fewer claims or groups)"
            )
        if not token.isascii():
            raise TokenRejected(not_a_token + "this password is not one: it has non-ASCII bytes")
        if _TOKEN_RE.fullmatch(token) is None:
            parts = token.count(b".") + 1
            if parts == 1:
                shape = "this has no dots"
            elif parts != 3:
                shape = f"this has {parts} parts"
            else:
                shape = "these parts are not base64url text"
            raise TokenRejected(
                not_a_token + f"this password is not one: a JWT is three base64url parts "
                f"separated by dots, and {shape}"
            )
        return token.decode("ascii")

    def _algorithm(self, header: Mapping[str, Any]) -> str:
        """The header's algorithm, if the configuration accepts it."""
        allowed = ", ".join(self.config.algorithms)
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise TokenRejected("the token header names no algorithm ('alg')")
        if alg.lower() == "none":
            raise TokenRejected(
                "alg none is never accepted: the token must be signed by the identity provider"
            )
        if alg.upper().startswith("HS"):
            raise TokenRejected(
                f"{_clip(alg)} is refused: only asymmetric algorithms ({allowed}) are "
                "accepted; a token signed with a shared secret (or with the provider's public "
                "key used as one) proves nothing about who made it"
            )
        if alg not in self.config.algorithms or alg not in _KEY_KINDS:
            raise TokenRejected(
                f"algorithm {_quote(alg)} is not accepted: identity.algorithms allows {allowed}"
            )
        return alg

    def _choose(self, kid: str, alg: str, keys: list[_Key]) -> list[_Key]:
        """The keys with this kid that can verify an ``alg`` token (at least one)."""
        reasons = []
        fitting = []
        for key in keys:
            misfit = key.misfit(alg)
            if misfit is None:
                fitting.append(key)
            else:
                reasons.append(misfit)
        if fitting:
            return fitting
        raise TokenRejected(
            f"the identity provider's signing key {_quote(kid)} {reasons[0]}; "
            "the token's header and the provider's key disagree"
        )

    def _explain(self, exc: jwt.PyJWTError, text: str, kid: str) -> str:
        """A PyJWT refusal in words a person can act on."""
        config = self.config
        claims = _unverified_claims(text)
        if isinstance(exc, jwt.MissingRequiredClaimError):
            claim = exc.claim
            if claim == "exp":
                return (
                    "the token has no 'exp' (expiry) claim: the gateway accepts only tokens "
                    "that expire"
                )
            if claim == "iss":
                return f"the token has no 'iss' (issuer) claim; it must be {_quote(config.issuer)}"
            if claim == "aud":
                return (
                    f"the token has no 'aud' (audience) claim; ask the identity provider for a "
                    f"token for {_quote(config.audience)}"
                )
            return f"the token has no {_quote(claim)} claim"
        if isinstance(exc, jwt.InvalidSignatureError):
            return (
                f"the token's signature does not verify with the identity provider's key "
                f"{_quote(kid)}: it was not issued by {config.issuer} or it was altered; get "
                "a new token"
            )
        if isinstance(exc, jwt.InvalidAudienceError):
            return (
                f"the token is for audience {_quote(claims.get('aud'))}, not "
                f"{_quote(config.audience)} (identity.audience); ask the identity provider "
                f"for a token for {_quote(config.audience)}"
            )
        if isinstance(exc, jwt.InvalidIssuerError):
            return (
                f"the token was issued by {_quote(claims.get('iss'))}, not by "
                f"{_quote(config.issuer)} (identity.issuer); get a token from that provider"
            )
        if isinstance(exc, jwt.ExpiredSignatureError):
            return f"the token expired{_at(claims.get('exp'))}; get a new one"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return (
                f"the token is not valid yet{_at(claims.get('nbf'))}; check the clocks of "
                "this client, the gateway and the identity provider"
            )
        if isinstance(exc, jwt.InvalidIssuedAtError):
            return "the token's 'iat' (issued at) claim is not a number of seconds"
        if isinstance(exc, jwt.exceptions.InvalidSubjectError):
            return "the token's 'sub' (subject) claim is not a string"
        if isinstance(exc, jwt.exceptions.InvalidJTIError):
            return "the token's 'jti' (token id) claim is not a string"
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return f"the token's algorithm is not accepted: {_short(exc)}"
        if isinstance(exc, jwt.InvalidKeyError):
            return f"the identity provider's key {_quote(kid)} cannot be used: {_short(exc)}"
        if isinstance(exc, jwt.DecodeError):
            return f"the token cannot be decoded: {_short(exc)}"
        return f"the token is not valid: {_short(exc)}"

    def _check_issuer(self, claims: Mapping[str, Any]) -> None:
        """``iss`` equals the configured issuer, character for character. PyJWT checks
        it too, but PyJWT 2.10.0 took any part of the issuer (CVE-2024-53861): an
        ``iss`` of ``"idp"`` or ``""`` passed for ``https://idp.example.com``."""
        iss = claims.get("iss")
        if iss != self.config.issuer:
            raise TokenRejected(
                f"the token was issued by {_quote(iss)}, not by {_quote(self.config.issuer)} "
                "(identity.issuer); get a token from that provider"
            )

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        aud = claims["aud"]  # PyJWT found the configured audience in it
        if isinstance(aud, list) and aud != [self.config.audience]:
            listed = ", ".join(_quote(a) for a in aud[:_SHOWN_KIDS])
            raise TokenRejected(
                f"the token is for several audiences ({listed}); the gateway accepts only a "
                f"token for {_quote(self.config.audience)} alone, so that a token meant for "
                "another service cannot be used here; ask the identity provider for one"
            )

    def _check_times(self, claims: Mapping[str, Any]) -> float:
        """``exp``, ``nbf``, ``iat`` and the lifetime against the clock; returns ``exp``."""
        config = self.config
        now = self._clock()
        leeway = config.leeway_s
        exp = _seconds(claims, "exp", "expiry")
        nbf = _seconds(claims, "nbf", "not before")
        iat = _seconds(claims, "iat", "issued at")
        assert exp is not None  # required above
        if exp <= now - leeway:
            raise TokenRejected(f"the token expired{_at(exp)}; get a new one")
        if nbf is not None and nbf > now + leeway:
            raise TokenRejected(
                f"the token is not valid before {_utc(nbf)}; check the clocks of this "
                "client, the gateway and the identity provider"
            )
        if iat is not None and iat > now + leeway:
            raise TokenRejected(
                f"the token says it was issued in the future ({_utc(iat)}); check the clocks "
                "of the gateway and the identity provider"
            )
        starts = [t for t in (iat, nbf) if t is not None]
        lifetime = exp - (min(starts) if starts else now)
        if lifetime > config.max_lifetime_s:
            raise TokenRejected(
                f"the token's lifetime of {_duration(lifetime)} is longer than the "
                f"{_duration(config.max_lifetime_s)} the gateway accepts "
                "(identity.max_lifetime_s); ask the identity provider for a shorter-lived token"
            )
        return exp

    def _check_user(self, user: str, claims: Mapping[str, Any]) -> str:
        name = self.config.username_claim
        value = claim(claims, name)
        if value is None:
            raise TokenRejected(
                f"the token has no {_quote(name)} claim, which must hold the MySQL user name "
                "(identity.username_claim)"
            )
        if not isinstance(value, str):
            raise TokenRejected(f"the token's {_quote(name)} claim is not a string")
        if not value or value != value.strip():
            # an empty identity names nobody; "agent " reads as the account "agent"
            raise TokenRejected(
                f"the token's {_quote(name)} claim {_quote(value)} is empty or starts or ends "
                "with blanks, so it cannot name who is asking"
            )
        if value != user:
            raise TokenRejected(
                f"the MySQL user name {_quote(user)} does not match the token's {name} "
                f"{_quote(value)}: log in as {_quote(value)} with this token"
            )
        verified = claims.get("email_verified", True)
        if name == "email" and not _email_vouched(verified):
            raise TokenRejected(
                "the token's email is not verified (email_verified is "
                f"{json.dumps(verified)}): the identity provider does not "
                "vouch for it, so it cannot name who is asking"
            )
        return value

    def _groups(self, claims: Mapping[str, Any]) -> frozenset[str]:
        name = self.config.groups_claim
        value = claim(claims, name)
        if value is None:
            return frozenset()
        if isinstance(value, str):
            return frozenset({value})
        if isinstance(value, list) and all(isinstance(g, str) for g in value):
            return frozenset(value)
        raise TokenRejected(
            f"the token's {_quote(name)} claim (identity.groups_claim) is neither a string "
            "nor a list of strings"
        )

    # --- keys ------------------------------------------------------------------------

    async def _signing_keys(self, kid: str) -> list[_Key]:
        """The cached keys with ``kid``, loading or refreshing them as the rules allow."""
        cache = self._cache
        if self._lock.locked() and cache.keys:  # a fetch is under way: it may be slow
            found = cache.keys.get(kid)
            if found:
                return found
        async with self._lock:
            cache = self._cache
            now = self._clock()
            if self._needs_load(now):
                await self._load(now)
            assert cache.keys is not None
            found = cache.keys.get(kid)
            if not found and _since(cache.attempted_at, now) >= REFRESH_INTERVAL_S:
                await self._load(now)
                found = cache.keys.get(kid)
            if found:
                return found
            if not cache.keys:
                raise KeysUnavailable(
                    f"the identity provider's JWKS has no usable signing key "
                    f"({cache.none_usable}): every token is refused until it has one"
                )
            kids = sorted(cache.keys)
            listed = ", ".join(_quote(k) for k in kids[:_SHOWN_KIDS])
            if len(kids) > _SHOWN_KIDS:
                listed += f" and {len(kids) - _SHOWN_KIDS} more"
            again = "reading" if self.config.jwks_file is not None else "fetching"
            stale = (
                f"; {again} them again failed: {cache.failure.reason}"
                if cache.failure is not None
                else ""
            )
            raise TokenRejected(
                f"unknown signing key id {_quote(kid)} (the identity provider's JWKS has "
                f"{listed}{stale}); if the provider has just rotated its keys, try again in a "
                "minute, otherwise get a token from the configured provider"
            )

    def _needs_load(self, now: float) -> bool:
        cache = self._cache
        if cache.keys is None:
            ago = _since(cache.attempted_at, now)
            failure = cache.failure
            if failure is not None and ago < RETRY_WITHOUT_KEYS_S and not self._file_changed():
                raise KeysUnavailable(
                    f"{failure.message()} (tried {ago:.0f} s ago; the next try is in "
                    f"{math.ceil(RETRY_WITHOUT_KEYS_S - ago):.0f} s)"
                )
            return True
        if self.config.jwks_file is not None:
            return self._file_changed()
        return (
            _since(cache.loaded_at, now) >= MAX_KEYS_AGE_S
            and _since(cache.attempted_at, now) >= REFRESH_INTERVAL_S
        )

    def _file_changed(self) -> bool:
        """Whether ``jwks_file`` changed since it was last read (reading it is cheap: a
        file just put right is read at once, not after ``RETRY_WITHOUT_KEYS_S``)."""
        path = self.config.jwks_file
        return path is not None and _file_stamp(path) != self._cache.file_stamp

    async def _load(self, now: float) -> None:
        """Read or fetch the JWKS; keep the cached keys when that fails and there are any."""
        cache = self._cache
        cache.attempted_at = now
        try:
            keys = await self._read_keys()
        except _SourceError as exc:
            cache.failure = exc
            if cache.keys is None:
                raise KeysUnavailable(exc.message()) from None
            log.warning("%s; keeping the %d keys already known", exc.message(), len(cache.keys))
            return
        cache.keys, cache.none_usable = keys
        cache.loaded_at = now
        cache.failure = None
        if not cache.keys:
            log.warning(
                "the identity provider's JWKS has no usable signing key (%s): token logins "
                "are refused until it has one",
                cache.none_usable,
            )

    async def _read_keys(self) -> tuple[dict[str, list[_Key]], str]:
        config = self.config
        if config.jwks_file is not None:
            path = config.jwks_file
            self._cache.file_stamp = _file_stamp(path)
            try:  # not a FIFO swapped in (it would hold the loop), at most 1 MiB
                data = read_small_file(path, _MAX_DOCUMENT)
            except OSError as exc:
                raise _SourceError(str(path), _os_reason(exc), fetched=False) from None
            except ValueError as exc:
                raise _SourceError(str(path), str(exc), fetched=False) from None
            try:
                return _parse_jwks(data)
            except ValueError as exc:
                raise _SourceError(str(path), str(exc), fetched=False) from None
        if config.jwks_url is not None:
            return _parse_at(config.jwks_url, await self._get(config.jwks_url))
        uri = self._cache.jwks_uri
        if uri is None:
            uri = self._cache.jwks_uri = await self._discover()
        try:
            return _parse_at(uri, await self._get(uri))
        except _SourceError:
            self._cache.jwks_uri = None  # the next load asks the discovery document again
            raise

    async def _discover(self) -> str:
        """The ``jwks_uri`` of the issuer's discovery document (HTTPS only)."""
        issuer = self.config.issuer
        if not _is_https(issuer):
            raise _SourceError(
                issuer,
                "the issuer is not an https:// URL, so its discovery document is not used; "
                "set identity.jwks_file or identity.jwks_url",
            )
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        data = await self._get(url)
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            raise _SourceError(url, "the discovery document is not JSON") from None
        if not isinstance(document, dict):
            raise _SourceError(url, "the discovery document is not a JSON object")
        named = document.get("issuer")
        if named is not None and named != issuer:
            raise _SourceError(
                url, f"the discovery document is for issuer {_quote(named)}, not {issuer}"
            )
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri:
            raise _SourceError(url, "the discovery document has no 'jwks_uri'")
        if not _is_https(uri):
            raise _SourceError(
                url,
                f"its jwks_uri {_quote(uri)} is not an https:// URL, and keys come over HTTPS only",
            )
        return uri

    async def _get(self, url: str) -> bytes:
        """The body at ``url`` (in a thread); ``_SourceError`` with a reason otherwise."""
        if not _is_https(url):
            raise _SourceError(url, "not an https:// URL")
        if self._fetching:
            raise _SourceError(url, "the previous request there has not finished yet")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        def fetch() -> None:
            try:
                data = self._fetch(url)
            except BaseException as exc:
                outcome: tuple[bytes | None, BaseException | None] = (None, exc)
            else:
                outcome = (data, None)
            finally:
                self._fetching = False
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle, answer, *outcome)

        self._fetching = True
        # A daemon thread: one that hangs (name resolution has no timeout) neither holds
        # a pool's thread nor keeps the gateway from exiting.
        threading.Thread(target=fetch, name="sqlgate-jwks", daemon=True).start()
        try:
            data = await asyncio.wait_for(answer, FETCH_TIMEOUT_S + 1)
        except _SourceError:
            raise
        except Exception as exc:
            raise _SourceError(url, _fetch_reason(exc)) from None
        if len(data) > _MAX_DOCUMENT:
            raise _SourceError(url, f"the answer is larger than {_MAX_DOCUMENT} bytes")
        return data

    def _https_get(self, url: str) -> bytes:
        """GET ``url`` over verified HTTPS (never redirected to plain HTTP)."""
        if self._ssl is None:
            ca_file = self.config.ca_file
            try:
                self._ssl = ssl.create_default_context(
                    cafile=None if ca_file is None else os.fspath(ca_file)
                )
            except (OSError, ssl.SSLError) as exc:
                raise _SourceError(
                    url, f"the CA bundle identity.ca_file ({ca_file}) cannot be used: {exc}"
                ) from None
            self._ssl.sslsocket_class = _DeadlineSocket
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self._ssl), _HttpsOnlyRedirects()
        )
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": "sqlgate"}
        )
        _fetch_deadline.at = time.monotonic() + FETCH_TIMEOUT_S
        chunks: list[bytes] = []
        size = 0
        try:
            with opener.open(request, timeout=FETCH_TIMEOUT_S) as response:
                while size <= _MAX_DOCUMENT:
                    chunk: bytes = response.read1(64 * 1024)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        finally:
            _fetch_deadline.at = None
        return b"".join(chunks)


class _FetchDeadline(threading.local):
    """When the fetch running in this thread must be over (None: no fetch runs)."""

    at: float | None = None


_fetch_deadline = _FetchDeadline()


class _DeadlineSocket(ssl.SSLSocket):
    """A TLS socket whose every read waits only for what is left of its fetch's time: a
    read timeout alone lets a server that drips its status line, headers or body a byte at
    a time hold the fetch (and every later one, which waits for it) for as long as it
    likes. (The handshake already counts its timeout once for the whole of it.)"""

    def _time_left(self) -> None:
        deadline = _fetch_deadline.at
        if deadline is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.settimeout(left)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._time_left()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self._time_left()
        return super().recv_into(buffer, nbytes, flags)


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to other https:// URLs."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not _is_https(newurl):
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirected to a non-https URL {newurl}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# --- JWKS ------------------------------------------------------------------------------


def _settle(answer: asyncio.Future[bytes], data: bytes | None, exc: BaseException | None) -> None:
    if answer.done():  # the wait gave up
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        assert data is not None
        answer.set_result(data)


def _parse_at(where: str, data: bytes) -> tuple[dict[str, list[_Key]], str]:
    try:
        return _parse_jwks(data)
    except ValueError as exc:
        raise _SourceError(where, str(exc)) from None


def _parse_jwks(data: bytes) -> tuple[dict[str, list[_Key]], str]:
    """The usable verification keys of a JWKS document, by kid, and when there is none,
    why (a JWKS with no usable key is an answer: the keys were withdrawn); ValueError
    when it is not a JWKS."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError("not a JWKS: not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS: no 'keys' array")
    keys: dict[str, list[_Key]] = {}
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        try:
            key = _usable_key(entry)
        except ValueError as exc:
            log.debug("JWKS key %d skipped: %s", index, exc)
            skipped.append(str(exc))
            continue
        keys.setdefault(key.kid, []).append(key)
    if not keys:
        why = f"{len(skipped)} skipped: {skipped[0]}" if skipped else "it lists none"
        return keys, why
    return keys, ""


def jwks_problem(data: bytes) -> str | None:
    """Why a JWKS document cannot verify any token (not a JWKS, or no usable key), or
    None: ``sqlgate check`` and ``run`` refuse a ``jwks_file`` that would refuse every
    token login from the start."""
    try:
        keys, why = _parse_jwks(data)
    except ValueError as exc:
        return str(exc)
    return None if keys else f"no key that can verify a token ({why})"


def _usable_key(entry: object) -> _Key:
    """A JWK that can verify a signature, or ValueError saying why it cannot."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no 'kid'")
    kty = entry.get("kty")
    if not isinstance(kty, str) or kty not in ("RSA", "EC", "OKP"):
        raise ValueError(f"key {_quote(kid)}: kty {_quote(kty)} is not an asymmetric key type")
    use = entry.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"key {_quote(kid)}: for {_quote(use)}, not for signatures")
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError(f"key {_quote(kid)}: its key_ops do not include 'verify'")
    if "d" in entry:
        raise ValueError(f"key {_quote(kid)}: a private key has no place in a JWKS")
    alg = entry.get("alg")
    if alg is not None and alg not in _KEY_KINDS:
        raise ValueError(f"key {_quote(kid)}: alg {_quote(alg)} is not a signature algorithm")
    crv = entry.get("crv")
    if crv is not None and not isinstance(crv, str):
        raise ValueError(f"key {_quote(kid)}: its 'crv' is not a string")
    key = _Key(kid=kid, kty=kty, crv=crv, alg=alg, jwk=entry)
    probe = alg or _default_algorithm(kty, crv)
    if probe is None:
        raise ValueError(f"key {_quote(kid)}: curve {_quote(crv)} is not supported")
    try:
        key.for_algorithm(probe)
    except jwt.PyJWTError as exc:
        raise ValueError(f"key {_quote(kid)}: {_short(exc)}") from None
    return key


def _default_algorithm(kty: str, crv: str | None) -> str | None:
    if kty == "RSA":
        return "RS256"
    if kty == "EC":
        return _EC_ALGORITHMS.get(crv or "")
    return "EdDSA" if crv in ("Ed25519", "Ed448") else None


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# --- words ------------------------------------------------------------------------------


def _is_https(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname)


def _since(then: float | None, now: float) -> float:
    return math.inf if then is None else now - then


def _clip(text: str, limit: int = 64) -> str:
    """``text`` safe to show: printable characters only, at most ``limit`` of them."""
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _quote(value: object) -> str:
    """A claim or header value as it may appear in a refusal: quoted and clipped."""
    if isinstance(value, str):
        return f"'{_clip(value)}'"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return _clip(text)


def _short(exc: BaseException) -> str:
    return _clip(str(exc) or type(exc).__name__, 160)


def _utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f} (epoch seconds)"


def _at(ts: object) -> str:
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts):
        return f" at {_utc(ts)}"
    return ""


def _duration(seconds: float) -> str:
    if seconds >= 365 * 86400:  # exp = 1e308 would print a 300-digit number of days
        return "more than a year"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"


def _email_vouched(verified: object) -> bool:
    """Whether ``email_verified`` vouches for the email: true, or absent (providers that
    verify every address leave it out). Some providers send it as a string: "true"
    vouches, "false", 0 or anything else does not."""
    return verified is True or (isinstance(verified, str) and verified.lower() == "true")


def _seconds(claims: Mapping[str, Any], name: str, meaning: str) -> float | None:
    """A time claim as epoch seconds (None when absent); refused when not a finite number
    (an integer too large for a float among them)."""
    value = claims.get(name)
    if value is None:
        return None
    not_a_time = TokenRejected(f"the token's {_quote(name)} ({meaning}) claim is not a time")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise not_a_time
    try:
        seconds = float(value)
    except OverflowError:
        raise not_a_time from None
    if not math.isfinite(seconds):
        raise not_a_time
    return seconds


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``, or with dots a path into nested objects when no claim has the
    whole name: ``realm_access.roles`` (Keycloak) is ``claims["realm_access"]["roles"]``,
    while ``https://example.com/groups`` (a namespaced claim) is found as it is. None
    when absent."""
    if name in claims or "." not in name:
        return claims.get(name)
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _unverified_claims(text: str) -> dict[str, Any]:
    """The payload, for wording a refusal only (the signature may not have been checked)."""
    try:
        claims = jwt.decode(text, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return exc.strerror or str(exc)


def _fetch_reason(exc: BaseException) -> str:
    """Why an HTTPS GET failed, in a few words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _fetch_reason(reason)
        return _clip(str(reason), 160)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the server's TLS certificate is not trusted ({exc.verify_message}); "
            "identity.ca_file names the CA bundle to trust"
        )
    if isinstance(exc, TimeoutError):
        return f"no answer within {FETCH_TIMEOUT_S:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _short(exc)
