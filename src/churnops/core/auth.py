"""Access-control rules, framework-free: API key format, secret hashing, scopes, route -> scope table.

API keys are `cho_<key id>_<secret><checksum>`: a 12-character key id (`[a-z0-9]`), 40 random
base62 characters of secret and a 6-character base62 CRC-32 of everything before it, so a
mistyped or truncated key is refused before any store lookup (the checksum is not a secret:
it only catches typos). The store keeps HMAC-SHA256(pepper, secret), never the secret.

Scopes: `predict` (predictions, feedback, reading models, monitoring, experiments),
`admin` (lifecycle, experiment writes, keys), `audit` (privacy and ledger export). A route
declares the scopes it needs; `ScopeTable` answers "which scopes does METHOD PATH need" in a
dictionary lookup for plain paths and a short regex scan for templated ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREDICT = "predict"
ADMIN = "admin"
AUDIT = "audit"
SCOPES = frozenset({PREDICT, ADMIN, AUDIT})

KEY_PREFIX = "cho_"
KEY_ID_CHARS = 12
SECRET_CHARS = 40
CHECKSUM_CHARS = 6
BASE62 = string.digits + string.ascii_letters
_KEY_ID_ALPHABET = string.digits + string.ascii_lowercase
_KEY = re.compile(rf"^cho_([a-z0-9]{{{KEY_ID_CHARS}}})_([0-9A-Za-z]{{{SECRET_CHARS + CHECKSUM_CHARS}}})$")
_KEY_ID = re.compile(rf"^[a-z0-9]{{{KEY_ID_CHARS}}}$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class MalformedKey(ValueError):
    """Not an API key at all: wrong shape or checksum (refused without a store lookup)."""


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `seconds`; GCRA emits one every `interval` with a burst of `count`."""

    count: int
    seconds: int

    @property
    def interval(self) -> float:
        return self.seconds / self.count

    def __str__(self) -> str:
        unit = {v: k for k, v in _UNIT_SECONDS.items()}.get(self.seconds)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.seconds}s"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: what the ledger records (`ledger_id`) and what the rate limit counts by."""

    kind: str  # "key", "jwt" or "anonymous" (auth off)
    subject: str  # key id or JWT subject
    scopes: frozenset[str]
    ledger_id: str  # e.g. "key:abc123def456" or "jwt:alice"; at most 128 characters
    rate: Rate | None = None  # None: not rate limited (auth off)

    @property
    def key_id(self) -> str | None:
        return self.subject if self.kind == "key" else None


ANONYMOUS = Principal("anonymous", "anonymous", SCOPES, "anonymous")


# -- keys ----------------------------------------------------------------------------------


def _base62(data: bytes, width: int) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(BASE62[digit])
    return "".join(reversed(chars))


def checksum(text: str) -> str:
    """6 base62 characters of CRC-32: catches typos and truncation, proves nothing."""
    return _base62(zlib.crc32(text.encode()).to_bytes(4, "big"), CHECKSUM_CHARS)


def new_key_id() -> str:
    return "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_CHARS))


def new_secret() -> str:
    """40 base62 characters: about 238 bits of randomness."""
    return "".join(secrets.choice(BASE62) for _ in range(SECRET_CHARS))


def format_key(key_id: str, secret: str) -> str:
    head = f"{KEY_PREFIX}{key_id}_{secret}"
    return head + checksum(head)


def parse_key(text: str) -> tuple[str, str]:
    """(key id, secret) of a well-formed key; MalformedKey for anything else (shape or checksum)."""
    match = _KEY.fullmatch(text)
    if match is None:
        raise MalformedKey("not an API key: expected cho_<key id>_<secret>")
    key_id, tail = match.groups()
    secret, check = tail[:SECRET_CHARS], tail[SECRET_CHARS:]
    if not hmac.compare_digest(checksum(f"{KEY_PREFIX}{key_id}_{secret}"), check):
        raise MalformedKey("API key checksum does not match: the key is mistyped or truncated")
    return key_id, secret


def is_key_id(text: str) -> bool:
    return _KEY_ID.fullmatch(text) is not None


def hash_secret(pepper: bytes, secret: str) -> str:
    """What the store keeps: HMAC-SHA256 under the server pepper, hex."""
    return hmac.digest(pepper, secret.encode(), "sha256").hex()


def secret_matches(pepper: bytes, secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret against the stored HMAC."""
    return hmac.compare_digest(hash_secret(pepper, secret), stored_hash)


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a credential (cache keys, logs)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


# -- scopes and rates ------------------------------------------------------------------------


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    """`predict,admin` (or an iterable) -> scopes; ValueError naming an unknown one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = sorted(scopes - SCOPES)
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: use {', '.join(sorted(SCOPES))}")
    if not scopes:
        raise ValueError(f"at least one scope is required: {', '.join(sorted(SCOPES))}")
    return scopes


def claim_scopes(claim: object) -> frozenset[str]:
    """Scopes of a JWT `scope` claim (space-separated string, or a list); unknown ones are ignored."""
    if isinstance(claim, str):
        return frozenset(claim.split()) & SCOPES
    if isinstance(claim, list):
        return frozenset(s for s in claim if isinstance(s, str)) & SCOPES
    return frozenset()


def missing_scopes(held: frozenset[str], required: frozenset[str]) -> frozenset[str]:
    return required - held


def parse_rate(text: str) -> Rate:
    """`100/minute` (second, minute, hour or day) -> Rate; ValueError otherwise."""
    match = _RATE.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"rate limit {text!r}: expected N/second, N/minute, N/hour or N/day with N >= 1")
    return Rate(int(match.group(1)), _UNIT_SECONDS[match.group(2)])


# -- route -> scope table ----------------------------------------------------------------------

OPEN: frozenset[str] = frozenset({"<open>"})  # marker: no credentials needed


@dataclass(frozen=True, slots=True)
class RouteRule:
    """What one METHOD + route template needs: `scopes` (all of them), or open."""

    template: str
    scopes: frozenset[str]

    @property
    def open(self) -> bool:
        return self.scopes is OPEN


@dataclass
class ScopeTable:
    """Route templates (`/v1/models/{version}/approve`) and methods -> the scopes they require.

    Deny by default: a route the table does not know needs an authenticated caller and then
    reaches the framework (404/405); a known route with no declared scope is refused.
    """

    exact: dict[str, dict[str, RouteRule]] = field(default_factory=dict)
    patterns: list[tuple[re.Pattern[str], dict[str, RouteRule]]] = field(default_factory=list)

    def add(self, template: str, methods: Iterable[str], scopes: frozenset[str]) -> None:
        rules = self._rules_for(template)
        for method in methods:
            rules[method] = RouteRule(template, scopes)
            if method == "GET":
                rules.setdefault("HEAD", RouteRule(template, scopes))

    def _rules_for(self, template: str) -> dict[str, RouteRule]:
        if "{" not in template:
            return self.exact.setdefault(template, {})
        regex = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        for pattern, rules in self.patterns:
            if pattern.pattern == regex.pattern:
                return rules
        rules = {}
        self.patterns.append((regex, rules))
        return rules

    def lookup(self, path: str) -> Mapping[str, RouteRule] | None:
        """Every method's rule for a concrete path (None: no such route)."""
        rules = self.exact.get(path)
        if rules is not None:
            return rules
        for pattern, candidates in self.patterns:
            if pattern.match(path):
                return candidates
        return None

    def rules(self) -> list[tuple[str, str, RouteRule]]:
        """(method, template, rule) for every entry, for listings and tests."""
        out = [(m, t, r) for t, rules in self.exact.items() for m, r in rules.items()]
        out += [(m, r.template, r) for _, rules in self.patterns for m, r in rules.items()]
        return sorted(out, key=lambda item: (item[1], item[0]))
