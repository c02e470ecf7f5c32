"""Test helpers for access control: keys, JWKS files, tokens."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from churnops.jobs.keys import NewKey, create_key
from churnops.settings import Settings

ISSUER = "https://auth.churnops.test"
AUDIENCE = "churnops-api"
HS_SECRET = "test-hs256-secret-of-at-least-32-bytes!!"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any
    public_jwk: dict[str, Any]


def rsa_key(kid: str) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return SigningKey(kid, "RS256", private, jwk | {"kid": kid, "use": "sig"})


def ec_key(kid: str) -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    return SigningKey(kid, "ES256", private, jwk | {"kid": kid})


def ed_key(kid: str) -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    return SigningKey(kid, "EdDSA", private, jwk | {"kid": kid})


def write_jwks(path: Path, keys: list[SigningKey]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"keys": [k.public_jwk for k in keys]}))
    temporary.replace(path)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now, "scope": "predict"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(key: SigningKey | None = None, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    """A JWT signed by `key` (RS/ES/EdDSA with its kid) or, without one, HS256 under HS_SECRET."""
    if key is None:
        return jwt.encode(claims(**overrides), HS_SECRET, algorithm="HS256", headers=headers)
    return jwt.encode(
        claims(**overrides), key.private, algorithm=key.algorithm, headers={"kid": key.kid, **(headers or {})}
    )


def make_key(settings: Settings, scopes: str, **options: Any) -> NewKey:
    return create_key(settings, name=f"test-{scopes}", scopes=scopes, **options)


def all_scopes(settings: Settings) -> dict[str, str]:
    """Headers of a fresh key with every scope and a limit that never refuses (tests of other layers)."""
    made = create_key(settings, name="test-all", scopes="predict,admin,audit", rate_limit="1000000000/minute")
    return {"X-API-Key": made.key}
