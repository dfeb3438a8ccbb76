"""A real OpenID Connect provider for integration tests: ``oidc-provider`` run by node.

``tests/clients/idp/idp.js`` (see its header) serves HTTPS with a certificate of the lab's
PKI: discovery at ``<issuer>/.well-known/openid-configuration``, the JWKS, and the token
endpoint with the client credentials grant, issuing RS256 JWT access tokens whose claims
carry each client's ``email`` and ``groups``. :class:`Provider` writes its configuration
(private keys generated here, mode 0600), starts it (optionally inside a network
namespace), waits until discovery answers, fetches tokens as a client would, and rotates
the signing key by restarting it on the same port with a new key.

Nothing here prints a client secret or a token: errors name the endpoint, the HTTP status
and the provider's OAuth error code, and the provider's own log is in ``idp.log``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from netconfig.lab import inside

from .certs import Pki
from .clients import ClientError, ensure_npm_package
from .mariadb import free_port

IDP_DIR = Path(__file__).resolve().parents[1] / "clients" / "idp"
IDP_JS = IDP_DIR / "idp.js"

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 5.0
DEFAULT_RESOURCE = "urn:sqlgate:lab"
DEFAULT_AUDIENCE = "sqlgate"
DEFAULT_TTL_S = 600


class ProviderError(RuntimeError):
    """The provider did not start, or a request to it failed."""


# -- installing the node package --------------------------------------------------------


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ClientError(f"{program} not found on PATH: install Node.js (scripts/test does this)")
    return path


def ensure_idp() -> Path:
    """Install the provider's locked dependencies if missing; the path of idp.js."""
    ensure_npm_package(IDP_DIR, "oidc-provider")
    return IDP_JS


# -- keys and clients -------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """An RSA key the provider signs with; ``kid`` names it in tokens and the JWKS."""

    kid: str
    key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or f"idp-{uuid.uuid4().hex[:12]}", key)

    def private_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key))
        # PyJWT marks a private JWK key_ops ["sign"]; oidc-provider would publish that
        # on the public key too, and a verifier rightly refuses a key not for "verify".
        jwk.pop("key_ops", None)
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return jwk


@dataclass(frozen=True)
class OidcClient:
    """A confidential client of the provider (client credentials grant) and the claims its
    tokens carry: ``email`` is the MySQL user name, ``groups`` what sqlgate maps."""

    client_id: str
    secret: str = field(repr=False)
    email: str
    groups: tuple[str, ...] = ("agents",)

    @classmethod
    def make(cls, client_id: str, email: str, groups: Sequence[str] = ("agents",)) -> OidcClient:
        return cls(client_id, uuid.uuid4().hex + uuid.uuid4().hex, email, tuple(groups))


# -- the provider process ---------------------------------------------------------------


@dataclass
class Provider:
    """``node idp.js CONFIG`` serving ``https://<host>:<port>`` with ``pki``'s server
    certificate (its names must include ``host``).

    ``netns``: run it inside that network namespace (through ``ip netns exec``); the
    readiness check then runs there too. :meth:`token` and :meth:`jwks` dial from the
    calling thread's namespace (switch with ``lab.in_ns(...)`` to ask as an agent would).
    """

    workdir: Path
    pki: Pki
    clients: Sequence[OidcClient]
    host: str = "127.0.0.1"
    port: int = 0
    netns: str | None = None
    resource: str = DEFAULT_RESOURCE
    audience: str = DEFAULT_AUDIENCE
    ttl_s: int = DEFAULT_TTL_S
    keys: list[SigningKey] = field(default_factory=list)  # the first one signs
    issued: list[str] = field(default_factory=list, repr=False)  # every token handed out
    proc: subprocess.Popen[bytes] | None = None
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def kid(self) -> str:
        """The key id new tokens are signed with."""
        return self.keys[0].kid

    @property
    def config_path(self) -> Path:
        return self.workdir / "idp.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "idp.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, client_id: str) -> OidcClient:
        return next(c for c in self.clients if c.client_id == client_id)

    # --- lifecycle ---------------------------------------------------------------------

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host) if self.netns is None else 8443
        if not self.keys:
            self.keys.append(SigningKey.generate())
        config = {
            "issuer": self.issuer,
            "host": self.host,
            "port": self.port,
            "cert": str(self.pki.server_cert),
            "key": str(self.pki.server_key),
            "jwks": {"keys": [k.private_jwk() for k in self.keys]},
            "resource": self.resource,
            "audience": self.audience,
            "ttl": self.ttl_s,
            "clients": [
                {
                    "client_id": c.client_id,
                    "client_secret": c.secret,
                    "email": c.email,
                    "groups": list(c.groups),
                }
                for c in self.clients
            ],
        }
        path = self.config_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        return path

    def start(self) -> Provider:
        """Start the provider; returns once its discovery document answers."""
        if self.running:
            return self
        idp_js = ensure_idp()
        node = _require("node")
        self.write_config()
        argv = [node, str(idp_js), str(self.config_path)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=IDP_DIR,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise ProviderError(f"the OIDC provider exited {code}:\n{self.log()}")
            try:
                with self._where():
                    document = self.discovery()
                if document.get("issuer") == self.issuer:
                    return self
                last = f"discovery names issuer {document.get('issuer')!r}"
            except ProviderError as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop()
        raise ProviderError(f"the OIDC provider did not answer in time ({last}):\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM, wait (SIGKILL after a while); the exit code, None if not running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        return proc.returncode

    def rotate(self, *, keep_previous: bool = False) -> SigningKey:
        """Sign with a new key (new kid) from now on: restart on the same port with the
        new key first. The old key is withdrawn from the JWKS unless ``keep_previous``.
        Tokens issued before stay as they are (signed with the old key)."""
        new = SigningKey.generate()
        self.keys = [new, *self.keys[:1]] if keep_previous else [new]
        self.stop()
        self.start()
        return new

    def _where(self) -> AbstractContextManager[None]:
        return inside(self.netns) if self.netns is not None else nullcontext()

    # --- requests ----------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        return self._ssl

    def _opener(self) -> urllib.request.OpenerDirector:
        # No proxies from the environment: the provider is in the lab, dialled directly.
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._context())
        )

    def _request(self, request: urllib.request.Request, what: str) -> dict[str, Any]:
        try:
            with self._opener().open(request, timeout=HTTP_TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read()).get("error", "")
            except (ValueError, AttributeError):
                error = ""
            raise ProviderError(f"{what}: HTTP {exc.code} {error}".rstrip()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ProviderError(f"{what}: {reason}") from None
        try:
            document: dict[str, Any] = json.loads(body)
        except ValueError:
            raise ProviderError(f"{what}: the answer is not JSON") from None
        return document

    def _get(self, url: str) -> dict[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        return self._request(request, f"GET {url}")

    def discovery(self) -> dict[str, Any]:
        return self._get(self.issuer + "/.well-known/openid-configuration")

    def jwks(self) -> dict[str, Any]:
        """The public JWKS, fetched from the ``jwks_uri`` the discovery document names."""
        return self._get(str(self.discovery()["jwks_uri"]))

    def published_kids(self) -> list[str]:
        return [str(k.get("kid")) for k in self.jwks().get("keys", [])]

    def token(self, client_id: str, secret: str | None = None, resource: str | None = None) -> str:
        """An access token by the client credentials grant (client_secret_basic), for
        ``resource`` (default: the one sqlgate's audience is configured for)."""
        secret = self.client(client_id).secret if secret is None else secret
        endpoint = str(self.discovery()["token_endpoint"])
        # client_secret_basic: both parts form-urlencoded, then base64 (RFC 6749 §2.3.1)
        pair = ":".join(urllib.parse.quote(part, safe="") for part in (client_id, secret))
        basic = base64.b64encode(pair.encode()).decode()
        body = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "resource": resource or self.resource}
        ).encode()
        request = urllib.request.Request(
            endpoint,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        answer = self._request(request, f"client credentials token for {client_id}")
        token = answer.get("access_token")
        if not isinstance(token, str) or token.count(".") != 2:
            raise ProviderError(f"client credentials token for {client_id}: not a JWT")
        self.issued.append(token)
        return token

    def secrets(self) -> dict[str, str]:
        """Every client secret and token of this provider, by a name that may be shown."""
        named = {f"secret of {c.client_id}": c.secret for c in self.clients}
        named.update({f"token {i}": t for i, t in enumerate(self.issued)})
        return named

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def claims_of(token: str) -> dict[str, Any]:
    """The token's claims, unverified (for assertions about what the provider issued)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token).get("kid"))
