"""The churnops exception tree.

Every error a user can cause carries a one-line message that names the
field, column or rule at fault; the CLI prints it and exits non-zero, the
HTTP layer maps it to a status once.

    ChurnopsError
    ├── ConfigError          bad settings, params.yaml or dataset spec
    ├── DataError            input data unusable before validation (missing file, empty, missing column)
    │   └── ValidationFailed data failed the expectation suite (carries the report path)
    ├── TrainingError        no candidate could be trained within the budget
    ├── RegistryError        MLflow registry unreachable or a model version/alias is missing
    ├── NotFound             a requested entity (customer, model version) does not exist
    ├── InvalidRequest       an API payload breaks a rule (carries the field path)
    ├── PayloadTooLarge      a body or batch over its limit
    ├── NotReady             the service has no loaded, verified model yet
    ├── AuditUnavailable     a prediction's ledger record cannot even be queued (503)
    ├── Conflict             contradicts what is recorded (409)
    ├── Unavailable          a dependency a request cannot do without is down (fail closed)
    └── AccessError          access control refused a request (carries the metric reason)
        ├── Unauthenticated  no, malformed, unknown, revoked or expired credentials (401)
        ├── Forbidden        authenticated, but the scopes do not cover the route (403)
        └── RateLimited      the key's rate limit is spent (429; carries the RateLimit fields)
"""

from __future__ import annotations

from pathlib import Path


class ChurnopsError(Exception):
    """Base class: `str(err)` is a complete one-line message for the user."""


class ConfigError(ChurnopsError):
    """Settings, params or a dataset spec are invalid."""


class DataError(ChurnopsError):
    """The input data cannot be used (missing, empty, wrong columns or types)."""


class ValidationFailed(DataError):
    """The data failed its expectation suite; `report` points at the written report."""

    def __init__(self, message: str, report: Path | None = None) -> None:
        super().__init__(message)
        self.report = report


class TrainingError(ChurnopsError):
    """No usable candidate model came out of training."""


class RegistryError(ChurnopsError):
    """The model registry failed or lacks the requested version or alias."""


class NotFound(ChurnopsError):
    """A requested entity does not exist."""


class InvalidRequest(ChurnopsError):
    """A request payload is malformed or breaks a rule; `field` is its path, e.g. `features.tenure`."""

    def __init__(self, message: str, field: str | None = None, malformed: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.malformed = malformed  # not even valid JSON: 400 rather than 422


class PayloadTooLarge(ChurnopsError):
    """A request body or batch exceeds its limit."""


class NotReady(ChurnopsError):
    """No verified model is loaded (yet)."""


class AuditUnavailable(ChurnopsError):
    """A record could not be queued for the ledger (database and spool both failing): the
    prediction is refused rather than answered unaudited."""


class Conflict(ChurnopsError):
    """The request contradicts what is already recorded (e.g. a different label for a prediction)."""


class Unavailable(ChurnopsError):
    """A dependency the request cannot be answered without is unreachable (503, fail closed)."""


class AccessError(ChurnopsError):
    """Access control refused the request; `reason` labels `auth_failures_total`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unauthenticated(AccessError):
    """Credentials missing, malformed, unknown, revoked, expired or not verifying (401)."""


class Forbidden(AccessError):
    """The caller's scopes do not cover what it asked for (403)."""


class RateLimited(AccessError):
    """The caller's rate limit is spent (429); `headers` carry Retry-After and the RateLimit fields."""

    def __init__(self, message: str, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message, "rate_limited")
        self.headers = headers
