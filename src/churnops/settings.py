"""Settings: one object, built at the entrypoint from the environment and handed down.

Env names follow DESIGN.md (no prefix): CHURNOPS_HOME, APP_ENV, DATABASE_URL or
POSTGRES_*, REDIS_URL or REDIS_HOST/REDIS_PORT, MLFLOW_TRACKING_URI,
DASK_SCHEDULER_ADDRESS, JWT_SECRET_KEY. Nothing here runs at import time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from churnops.errors import ConfigError

MIN_SECRET_BYTES = 32
IN_PROCESS = "memory://"  # the online store, rate limiter and nonces without Redis
_SECRET_IN_URL = re.compile(r"(?P<scheme>[a-z0-9+.-]+://[^:/@]*:)(?P<secret>[^@]+)(?P<at>@)", re.I)


def mask_url(url: str | None) -> str | None:
    """Hide a password embedded in a URL: `postgresql://u:pw@h/db` -> `postgresql://u:***@h/db`."""
    return _SECRET_IN_URL.sub(r"\g<scheme>***\g<at>", url) if url else url


class Settings(BaseSettings):
    """Effective configuration of every churnops command and the service."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=False, populate_by_name=True
    )

    churnops_home: Path = Path(".churnops")
    app_env: Literal["development", "staging", "production"] = "development"
    log_level: str = "INFO"

    mlflow_tracking_uri: str | None = None
    model_name: str | None = Field(None, alias="CHURNOPS_MODEL_NAME")
    experiment_name: str = Field("churnops", alias="CHURNOPS_EXPERIMENT")

    database_url: SecretStr | None = None
    postgres_host: str | None = None
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr | None = None
    postgres_db: str = "churnops"

    redis_url: SecretStr | None = None
    redis_host: str | None = None
    redis_port: int = 6379

    dask_scheduler_address: str | None = None

    # -- secrets (embedded defaults: generated once into CHURNOPS_HOME/secrets.json, 0600) -------
    jwt_secret_key: SecretStr | None = None
    pseudonym_key: SecretStr | None = Field(None, alias="CHURNOPS_PSEUDONYM_KEY")
    ledger_key: SecretStr | None = Field(None, alias="CHURNOPS_LEDGER_KEY")  # master key
    api_key_pepper: SecretStr | None = Field(None, alias="CHURNOPS_API_KEY_PEPPER")

    # -- prediction ledger ----------------------------------------------------------------
    audit: Literal["on", "off"] = Field("on", alias="CHURNOPS_AUDIT")  # off: benchmarks, never production
    audit_durability: Literal["async", "sync"] = Field("async", alias="CHURNOPS_AUDIT_DURABILITY")
    audit_queue_size: int = Field(100_000, ge=100, alias="CHURNOPS_AUDIT_QUEUE_SIZE")
    audit_flush_ms: int = Field(40, ge=1, le=100, alias="CHURNOPS_AUDIT_FLUSH_MS")
    audit_checkpoint_seconds: float = Field(5.0, gt=0, le=10, alias="CHURNOPS_AUDIT_CHECKPOINT_SECONDS")

    # -- monitoring -------------------------------------------------------------------------
    # off: no drift counts or cost accounting on the hot path (benchmarks' baseline, never production)
    monitoring: Literal["on", "off"] = Field("on", alias="CHURNOPS_MONITORING")
    monitor_flush_seconds: float = Field(5.0, gt=0, le=60, alias="CHURNOPS_MONITOR_FLUSH_SECONDS")
    monitor_refresh_seconds: float = Field(15.0, gt=0, alias="CHURNOPS_MONITOR_REFRESH_SECONDS")
    # one request in N has its thread CPU time measured (two ~1.5 us system calls), charged N times
    cost_sample: int = Field(8, ge=1, le=1024, alias="CHURNOPS_COST_SAMPLE")

    # -- access control ---------------------------------------------------------------------
    auth: Literal["on", "off"] = Field("on", alias="CHURNOPS_AUTH")
    rate_limit: str = Field("100/minute", alias="CHURNOPS_RATE_LIMIT")
    replicas: int = Field(1, ge=1, alias="CHURNOPS_REPLICAS")  # local rate-limit share when Redis is down
    # Deadline of one rate-limiter (or nonce) call to Redis; past it the limiter answers locally.
    rate_limit_deadline_ms: float = Field(5.0, gt=0, le=1000, alias="CHURNOPS_RATE_LIMIT_DEADLINE_MS")
    jwt_jwks: Path | None = Field(None, alias="CHURNOPS_JWT_JWKS")
    jwt_issuer: str | None = Field(None, alias="CHURNOPS_JWT_ISSUER")
    jwt_audience: str | None = Field(None, alias="CHURNOPS_JWT_AUDIENCE")
    docs: Literal["on", "off"] | None = Field(None, alias="CHURNOPS_DOCS")  # default: on outside production
    # /metrics moves to a port of its own (the API port answers it 404)
    metrics_port: int | None = Field(None, ge=1, le=65535, alias="CHURNOPS_METRICS_PORT")
    bandit_seconds: float = Field(300.0, gt=0, alias="CHURNOPS_BANDIT_SECONDS")  # bandit re-weighting

    # -- serving ----------------------------------------------------------------------
    serve_host: str = Field("127.0.0.1", alias="CHURNOPS_HOST")
    serve_port: int = Field(8000, alias="CHURNOPS_PORT")
    serve_workers: int = Field(1, ge=1, alias="CHURNOPS_WORKERS")
    # Extra aliases to load beside champion, comma-separated: CHURNOPS_VARIANTS=challenger,shadow
    variants: Annotated[tuple[str, ...], NoDecode] = Field((), alias="CHURNOPS_VARIANTS")
    reload_poll_seconds: float = Field(2.0, gt=0, alias="CHURNOPS_RELOAD_POLL_SECONDS")
    max_body_bytes: int = Field(1 << 20, ge=1024, alias="CHURNOPS_MAX_BODY_BYTES")
    max_batch_body_bytes: int = Field(32 << 20, ge=1024, alias="CHURNOPS_MAX_BATCH_BODY_BYTES")
    max_batch_instances: int = Field(10_000, ge=1, alias="CHURNOPS_MAX_BATCH_INSTANCES")
    access_log_sample: float = Field(0.01, ge=0, le=1, alias="CHURNOPS_ACCESS_LOG_SAMPLE")
    metrics_dir: Path | None = Field(None, alias="CHURNOPS_METRICS_DIR")

    @field_validator("variants", mode="before")
    @classmethod
    def _split_variants(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    # -- resolved stores -------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.churnops_home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking (and registry) URI: the server if set, else SQLite under CHURNOPS_HOME."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def sql_store_url(self) -> str:
        """The SQL store (offline features, ledger, keys, change feed): PostgreSQL or SQLite."""
        return self.offline_store_url

    @property
    def docs_enabled(self) -> bool:
        return self.docs == "on" if self.docs is not None else self.app_env != "production"

    @property
    def offline_store_url(self) -> str:
        """SQLAlchemy URL of the offline store: PostgreSQL when configured, else SQLite."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        if self.postgres_host:
            # Percent-encode so a password holding '@', ':' or '/' keeps the URL (and its masking) intact.
            secret = self.postgres_password.get_secret_value() if self.postgres_password else ""
            password, user = quote(secret, safe=""), quote(self.postgres_user, safe="")
            auth = f"{user}:{password}" if password else user
            return f"postgresql+psycopg://{auth}@{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"
        return f"sqlite:///{self.home / 'features.db'}"

    @property
    def online_store_url(self) -> str:
        """Redis URL when configured, else `memory://` (in-process)."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        if self.redis_host:
            return f"redis://{self.redis_host}:{self.redis_port}/0"
        return IN_PROCESS

    @property
    def shared_redis_url(self) -> str | None:
        """The Redis URL shared by every process, or None when each holds its own in-process copy."""
        url = self.online_store_url
        return None if url == IN_PROCESS else url

    def resolved_model_name(self, spec_name: str) -> str:
        """Registered model name: CHURNOPS_MODEL_NAME, else one model per dataset spec."""
        return self.model_name or f"churn-{spec_name}"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home

    def check_production(self) -> None:
        """Refuse unsafe production settings, naming the first one at fault."""
        if self.app_env != "production":
            return
        problem = next((p for p in self._production_problems() if p), None)
        if problem:
            raise ConfigError(f"APP_ENV=production {problem}")

    def _production_problems(self) -> list[str | None]:
        short = [
            f"requires {name} of at least {MIN_SECRET_BYTES} bytes (not generated)"
            for name, value in (
                ("CHURNOPS_PSEUDONYM_KEY", self.pseudonym_key),
                ("CHURNOPS_LEDGER_KEY", self.ledger_key),
                ("CHURNOPS_API_KEY_PEPPER", self.api_key_pepper),
            )
            if value is None or len(value.get_secret_value().encode()) < MIN_SECRET_BYTES
        ]
        jwt = self.jwt_secret_key
        return [
            "refuses CHURNOPS_AUTH=off" if self.auth == "off" else None,
            "refuses CHURNOPS_AUDIT=off" if self.audit == "off" else None,
            "refuses CHURNOPS_MONITORING=off" if self.monitoring == "off" else None,
            "requires JWT_SECRET_KEY (or CHURNOPS_JWT_JWKS)"
            if jwt is None and self.jwt_jwks is None
            else None,
            f"requires JWT_SECRET_KEY of at least {MIN_SECRET_BYTES} bytes"
            if jwt is not None and len(jwt.get_secret_value().encode()) < MIN_SECRET_BYTES
            else None,
            "requires CHURNOPS_JWT_ISSUER (tokens are checked against it)" if not self.jwt_issuer else None,
            "requires CHURNOPS_JWT_AUDIENCE (tokens are checked against it)"
            if not self.jwt_audience
            else None,
            "exposes /docs and /openapi.json only with CHURNOPS_DOCS=on"
            if self.docs_enabled and self.docs != "on"
            else None,
            *self._rate_limit_problem(),
            *short,
            "requires DATABASE_URL or POSTGRES_HOST (not embedded SQLite)"
            if self.offline_store_url.startswith("sqlite")
            else None,
            "requires REDIS_URL or REDIS_HOST (not the in-process store)"
            if self.shared_redis_url is None
            else None,
            "requires MLFLOW_TRACKING_URI (not the embedded registry)"
            if self.mlflow_tracking_uri is None
            else None,
        ]

    def _rate_limit_problem(self) -> list[str | None]:
        from churnops.core.auth import parse_rate

        try:
            parse_rate(self.rate_limit)
        except ValueError as err:
            return [f"refuses CHURNOPS_RATE_LIMIT: {err}"]
        return []

    def public_view(self) -> dict[str, Any]:
        """Every setting (lower-cased names) plus the resolved stores, with secrets masked."""
        view: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value()) if name.endswith("_url") else "***"
            view[name] = str(value) if isinstance(value, Path) else value
        view["churnops_home"] = str(self.home)
        view["resolved"] = {
            "tracking_uri": mask_url(self.tracking_uri),
            "artifact_root": str(self.artifact_root),
            "offline_store": mask_url(self.offline_store_url),
            "online_store": mask_url(self.online_store_url),
            "batch_engine": f"dask ({self.dask_scheduler_address})"
            if self.dask_scheduler_address
            else "pandas",
        }
        return view
