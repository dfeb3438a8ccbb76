"""Tokens signed with a key whose JWKS the gateway reads from a file: quick to make,
for tests of what the gateway does with a token (the real provider is in ``idp``)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ISSUER = "https://idp.lab.test"
AUDIENCE = "sqlgate"
USER = "carol@example.com"


def identity_toml(provider: Provider) -> str:
    """The ``[identity]`` section that trusts ``provider``."""
    return f"""
[identity]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{provider.jwks}"
"""


def write_jwks(path: Path) -> Path:
    """A JWKS file of one usable verification key (Ed25519, quick to make), for
    configurations whose checks only need one."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
    jwk.update(kid="any-1", use="sig")
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


class Provider:
    """A signing key and the JWKS file the gateway reads it from."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "lab-1"
        directory.mkdir(parents=True, exist_ok=True)
        self.jwks = directory / "jwks.json"
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        self.jwks.write_text(json.dumps({"keys": [jwk]}))

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-42",
            "email": USER,
            "groups": ["agents"],
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})
