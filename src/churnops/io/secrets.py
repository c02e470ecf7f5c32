"""The service's secrets: from the environment, or generated once into `CHURNOPS_HOME/secrets.json`.

Embedded defaults need no setup: the first process that needs a secret creates the file
(mode 0600, exclusively, so concurrent workers agree on one set) and every later process
reads it. Production refuses generated secrets (`Settings.check_production`), so there
each one comes from the environment.

    CHURNOPS_PSEUDONYM_KEY   keyed HMAC of customer ids (pseudonyms) and feature vectors
    CHURNOPS_LEDGER_KEY      master key: wraps customer data keys, signs ledger checkpoints,
                             encrypts request-signing secrets (one derived subkey each)
    CHURNOPS_API_KEY_PEPPER  HMAC key under which API key secrets are stored
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from churnops.core.envelope import derive_key
from churnops.errors import ConfigError
from churnops.settings import MIN_SECRET_BYTES, Settings

logger = logging.getLogger(__name__)

NAMES = ("CHURNOPS_PSEUDONYM_KEY", "CHURNOPS_LEDGER_KEY", "CHURNOPS_API_KEY_PEPPER")
SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class Secrets:
    """Key material, with a derived subkey per purpose (never one key for two jobs)."""

    pseudonym_key: bytes
    ledger_key: bytes
    pepper: bytes
    generated: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def feature_key(self) -> bytes:
        return derive_key(self.pseudonym_key, "feature-hash")

    @cached_property
    def wrapping_key(self) -> bytes:
        return derive_key(self.ledger_key, "customer-data-keys")

    @cached_property
    def checkpoint_key(self) -> bytes:
        return derive_key(self.ledger_key, "ledger-checkpoints")

    @cached_property
    def signing_secret_key(self) -> bytes:
        return derive_key(self.ledger_key, "request-signing-secrets")


def load_secrets(settings: Settings) -> Secrets:
    """Secrets from the environment where set, else from (or into) the generated file."""
    configured = {
        "CHURNOPS_PSEUDONYM_KEY": settings.pseudonym_key,
        "CHURNOPS_LEDGER_KEY": settings.ledger_key,
        "CHURNOPS_API_KEY_PEPPER": settings.api_key_pepper,
    }
    values: dict[str, bytes] = {}
    for name, secret in configured.items():
        if secret is not None:
            value = secret.get_secret_value().encode()
            if len(value) < MIN_SECRET_BYTES and settings.app_env == "production":
                raise ConfigError(f"{name}: at least {MIN_SECRET_BYTES} bytes in production")
            values[name] = value
    missing = [name for name in NAMES if name not in values]
    if missing:
        if settings.app_env == "production":
            raise ConfigError(f"APP_ENV=production requires {missing[0]} (generated secrets are refused)")
        generated = _generated(settings.ensure_home() / SECRETS_FILE)
        values |= {name: generated[name] for name in missing}
    return Secrets(
        values["CHURNOPS_PSEUDONYM_KEY"],
        values["CHURNOPS_LEDGER_KEY"],
        values["CHURNOPS_API_KEY_PEPPER"],
        frozenset(missing),
    )


def _generated(path: Path) -> dict[str, bytes]:
    """Read the generated file, creating it (0600, O_EXCL: one winner among racing workers)."""
    if not path.exists():
        payload = {name: secrets.token_urlsafe(48) for name in NAMES}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race: read its file below
        else:
            with os.fdopen(fd, "w") as handle:
                json.dump(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            logger.info("generated embedded secrets in %s (mode 0600)", path)
    for _ in range(50):  # a racing creator may not have written its content yet
        try:
            stored = json.loads(path.read_text())
            return {name: str(stored[name]).encode() for name in NAMES}
        except (ValueError, KeyError):
            time.sleep(0.01)
    raise ConfigError(
        f"{path}: unreadable secrets file; restore it (a new one would make existing pseudonyms"
        " and ledger payloads unreadable)"
    )
