"""JWT bearer tokens (PyJWT): algorithms pinned by configuration, never read from the token.

- `JWT_SECRET_KEY`: HS256 for tokens without a `kid`.
- `CHURNOPS_JWT_JWKS`: a JWKS file of public keys (RSA -> RS256, EC P-256 -> ES256, Ed25519 ->
  EdDSA, or the key's own `alg` when it names one of those); a token's `kid` picks the key and
  the key picks the one algorithm accepted. Symmetric (`oct`) keys are refused in the file.
  The file is re-read when it changes (rotation: old and new keys side by side, then the
  old one removed; its tokens are refused from the next reload on, cache included).
- `exp`, `iss`, `aud`, `sub` required; `iss` and `aud` compared exactly; leeway 30 s.
- `jku`, `x5u`, `jwk`, `x5c` headers are never used (no outbound fetch, no embedded keys);
  any `crit` header is refused (we implement no critical extension).
- A verified token is cached (by its full text) until `exp` + leeway.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import jwt
from jwt.api_jwk import PyJWK

from churnops.core.auth import Principal, Rate, claim_scopes
from churnops.errors import ConfigError, Unauthenticated

logger = logging.getLogger(__name__)

LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
ASYMMETRIC = {"RS256", "ES256", "EdDSA"}
_KID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FORBIDDEN_HEADERS = ("crit", "b64")


def _algorithm(jwk: dict[str, Any]) -> str:
    kty, crv, alg = jwk.get("kty"), jwk.get("crv"), jwk.get("alg")
    natural = {"RSA": "RS256", "EC": "ES256" if crv == "P-256" else None, "OKP": "EdDSA"}.get(str(kty))
    if natural is None or (kty == "OKP" and crv != "Ed25519"):
        raise ConfigError(
            f"JWKS key {jwk.get('kid')!r}: kty {kty!r} crv {crv!r} is not RSA, EC P-256 or Ed25519"
        )
    if alg is not None and alg != natural:
        raise ConfigError(f"JWKS key {jwk.get('kid')!r}: alg {alg!r} does not fit kty {kty!r} ({natural})")
    return natural


def load_jwks(path: Path) -> dict[str, PyJWK]:
    """kid -> key with its one pinned algorithm; ConfigError naming what is wrong."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"CHURNOPS_JWT_JWKS {path}: unreadable JWKS ({err})") from err
    keys: dict[str, PyJWK] = {}
    for jwk in document.get("keys", []):
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise ConfigError(f"CHURNOPS_JWT_JWKS {path}: every key needs a kid of [A-Za-z0-9._:-]")
        if jwk.get("kty") == "oct":
            raise ConfigError(f"CHURNOPS_JWT_JWKS {path}: symmetric key {kid!r} refused (use JWT_SECRET_KEY)")
        if "d" in jwk:
            raise ConfigError(
                f"CHURNOPS_JWT_JWKS {path}: key {kid!r} is a private key; publish public keys only"
            )
        keys[kid] = PyJWK(jwk, _algorithm(jwk))
    return keys


class TokenVerifier:
    """Verifies bearer tokens into principals; cheap for a token seen before (a dict lookup)."""

    def __init__(
        self,
        issuer: str | None,
        audience: str | None,
        hs_secret: bytes | None,
        jwks_path: Path | None,
        rate: Rate,
        cache_max: int = 10_000,
    ) -> None:
        self.issuer, self.audience = issuer, audience
        self.hs_secret = hs_secret
        self.jwks_path = jwks_path
        self.rate = rate
        self.cache_max = cache_max
        self.keys: dict[str, PyJWK] = {}
        self.jwks_mtime: float | None = None
        self.cache: dict[str, tuple[Principal, float]] = {}
        self.reload()

    @property
    def enabled(self) -> bool:
        configured = self.hs_secret is not None or self.jwks_path is not None
        return configured and self.issuer is not None and self.audience is not None

    def reload(self) -> bool:
        """Re-read the JWKS file if it changed; True when the key set changed (the cache is dropped)."""
        if self.jwks_path is None:
            return False
        try:
            mtime = self.jwks_path.stat().st_mtime_ns
        except OSError as err:
            if self.jwks_mtime is None:
                raise ConfigError(f"CHURNOPS_JWT_JWKS {self.jwks_path}: {err.strerror}") from err
            logger.warning("JWKS %s unreadable (%s): keeping the keys loaded", self.jwks_path, err)
            return False
        if mtime == self.jwks_mtime:
            return False
        keys = load_jwks(self.jwks_path)
        changed = set(keys) != set(self.keys) or self.jwks_mtime is not None
        self.keys, self.jwks_mtime = keys, mtime
        self.cache = {}  # a removed key's tokens must not outlive it in the cache
        logger.info("JWKS %s: %d keys (%s)", self.jwks_path, len(keys), ", ".join(sorted(keys)))
        return changed

    def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self.cache.get(token)
        if cached is not None and now < cached[1]:
            return cached[0]
        if not self.enabled:
            raise Unauthenticated(
                "bearer tokens are not configured here (JWT_SECRET_KEY or CHURNOPS_JWT_JWKS, with"
                " CHURNOPS_JWT_ISSUER and CHURNOPS_JWT_AUDIENCE): use an API key",
                "jwt_not_configured",
            )
        key, algorithm = self._key_for(token)
        claims = self._decode(token, key, algorithm)
        principal = self._principal(claims)
        if len(self.cache) >= self.cache_max:
            self.cache = {t: entry for t, entry in self.cache.items() if now < entry[1]}
            if len(self.cache) >= self.cache_max:
                self.cache.clear()
        self.cache[token] = (principal, float(claims["exp"]) + LEEWAY_SECONDS)
        return principal

    def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise Unauthenticated(f"malformed bearer token: {err}", "invalid_token") from err
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise Unauthenticated(f"token header {name!r} is not supported: refused", "invalid_token")
        kid = header.get("kid")
        if kid is None:
            if self.hs_secret is None:
                raise Unauthenticated("token has no kid and no HS256 secret is configured", "unknown_kid")
            return self.hs_secret, "HS256"
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise Unauthenticated("token kid is malformed", "unknown_kid")
        jwk = self.keys.get(kid)
        if jwk is None:
            raise Unauthenticated(f"token kid {kid!r} is not a known signing key", "unknown_kid")
        return jwk, str(jwk.algorithm_name)

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as err:
            raise Unauthenticated("bearer token has expired", "expired_token") from err
        except jwt.PyJWTError as err:
            raise Unauthenticated(f"bearer token refused: {err}", "invalid_token") from err
        if not isinstance(claims.get("sub"), str) or not 0 < len(claims["sub"]) <= 120:
            raise Unauthenticated("bearer token sub must be a string of 1 to 120 characters", "invalid_token")
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = claims["sub"]
        return Principal("jwt", subject, claim_scopes(claims.get("scope")), f"jwt:{subject}", self.rate)


def hs_secret(value: str | None) -> bytes | None:
    return value.encode() if value else None
