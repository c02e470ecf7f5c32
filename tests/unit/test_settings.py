"""Settings: defaults, DESIGN env names, masked public view, production checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from churnops.errors import ConfigError
from churnops.settings import Settings, mask_url

pytestmark = pytest.mark.unit

ENV_NAMES = (
    "CHURNOPS_HOME",
    "APP_ENV",
    "LOG_LEVEL",
    "MLFLOW_TRACKING_URI",
    "CHURNOPS_MODEL_NAME",
    "CHURNOPS_EXPERIMENT",
    "DATABASE_URL",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "DASK_SCHEDULER_ADDRESS",
    "JWT_SECRET_KEY",
    "CHURNOPS_PSEUDONYM_KEY",
    "CHURNOPS_LEDGER_KEY",
    "CHURNOPS_API_KEY_PEPPER",
    "CHURNOPS_AUTH",
    "CHURNOPS_JWT_JWKS",
    "CHURNOPS_DOCS",
    "CHURNOPS_JWT_ISSUER",
    "CHURNOPS_JWT_AUDIENCE",
    "CHURNOPS_RATE_LIMIT",
)

PRODUCTION = {
    "APP_ENV": "production",
    "JWT_SECRET_KEY": "jwt-s3cret-value-of-at-least-32-bytes",
    "CHURNOPS_PSEUDONYM_KEY": "pseudonym-key-of-at-least-32-bytes!",
    "CHURNOPS_LEDGER_KEY": "ledger-master-key-of-at-least-32-bytes",
    "CHURNOPS_API_KEY_PEPPER": "api-key-pepper-of-at-least-32-bytes!",
    "DATABASE_URL": "postgresql+psycopg://app:db-s3cret@db:5432/churnops",
    "REDIS_URL": "redis://:redis-s3cret@cache:6379/0",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "CHURNOPS_JWT_ISSUER": "https://auth.example.com",
    "CHURNOPS_JWT_AUDIENCE": "churnops",
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No churnops variable set, working directory in tmp_path (where the default home resolves)."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def set_all(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_defaults_are_embedded_under_dot_churnops(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings()
    home = (tmp_path / ".churnops").resolve()
    assert settings.home == home
    assert settings.home.is_absolute()
    assert settings.app_env == "development"
    assert settings.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.artifact_root == home / "mlartifacts"
    assert settings.offline_store_url == f"sqlite:///{home / 'features.db'}"
    assert settings.online_store_url == "memory://"
    assert settings.shared_redis_url is None  # no doorbell, no shared buckets
    assert not home.exists()  # building settings creates nothing


def test_ensure_home_creates_the_directory(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("CHURNOPS_HOME", str(tmp_path / "a" / "b"))
    assert Settings().ensure_home() == (tmp_path / "a" / "b").resolve()
    assert (tmp_path / "a" / "b").is_dir()


def test_churnops_home_moves_every_embedded_store(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("CHURNOPS_HOME", str(tmp_path / "elsewhere"))
    settings = Settings()
    home = (tmp_path / "elsewhere").resolve()
    assert settings.home == home
    assert settings.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.offline_store_url == f"sqlite:///{home / 'features.db'}"


def test_home_fixture_is_honoured(home: Path) -> None:
    assert Settings().home == home.resolve()


def test_mlflow_tracking_uri(env: pytest.MonkeyPatch) -> None:
    env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert Settings().tracking_uri == "http://mlflow:5000"


def test_database_url_wins_over_postgres_parts(env: pytest.MonkeyPatch) -> None:
    set_all(env, {"DATABASE_URL": "postgresql://u:p@h/db", "POSTGRES_HOST": "other"})
    assert Settings().offline_store_url == "postgresql://u:p@h/db"


def test_postgres_parts_build_the_url(env: pytest.MonkeyPatch) -> None:
    set_all(
        env,
        {
            "POSTGRES_HOST": "db",
            "POSTGRES_PORT": "6543",
            "POSTGRES_USER": "app",
            "POSTGRES_PASSWORD": "pw",
            "POSTGRES_DB": "churn",
        },
    )
    assert Settings().offline_store_url == "postgresql+psycopg://app:pw@db:6543/churn"


def test_postgres_password_with_url_characters_is_encoded(env: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    set_all(env, {"POSTGRES_HOST": "db", "POSTGRES_PASSWORD": "p@ss:w/rd"})
    settings = Settings()
    url = sa.make_url(settings.offline_store_url)
    assert (url.password, url.host, url.port, url.database) == ("p@ss:w/rd", "db", 5432, "churnops")
    assert "ss:w" not in json.dumps(settings.public_view())


def test_redis_url_and_redis_host(env: pytest.MonkeyPatch) -> None:
    set_all(env, {"REDIS_HOST": "cache", "REDIS_PORT": "6380"})
    assert Settings().online_store_url == "redis://cache:6380/0"
    env.setenv("REDIS_URL", "redis://r:1/2")
    assert Settings().online_store_url == Settings().shared_redis_url == "redis://r:1/2"


def test_model_name_and_secret_env_names(env: pytest.MonkeyPatch) -> None:
    set_all(
        env, {"CHURNOPS_MODEL_NAME": "my-model", "JWT_SECRET_KEY": "k", "DASK_SCHEDULER_ADDRESS": "d:8786"}
    )
    settings = Settings()
    assert settings.model_name == "my-model"
    assert settings.jwt_secret_key is not None
    assert settings.jwt_secret_key.get_secret_value() == "k"
    assert settings.public_view()["resolved"]["batch_engine"] == "dask (d:8786)"


def test_resolved_model_name(env: pytest.MonkeyPatch) -> None:
    assert Settings().resolved_model_name("telco") == "churn-telco"
    env.setenv("CHURNOPS_MODEL_NAME", "fixed")
    assert Settings().resolved_model_name("telco") == "fixed"


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    with pytest.raises(Exception, match="frozen"):
        settings.app_env = "production"  # type: ignore[misc]


def test_public_view_keys_are_lower_cased_setting_names(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    view = Settings().public_view()
    assert view["mlflow_tracking_uri"] == "http://mlflow:5000"
    assert view["churnops_home"] == str((tmp_path / ".churnops").resolve())
    for key in ("app_env", "database_url", "postgres_host", "redis_url", "redis_host", "jwt_secret_key"):
        assert key in view
    assert all(key == key.lower() for key in view)
    assert set(view["resolved"]) >= {"tracking_uri", "offline_store", "online_store"}
    json.dumps(view)  # serialisable as is


def test_public_view_masks_every_secret(env: pytest.MonkeyPatch) -> None:
    set_all(env, PRODUCTION | {"POSTGRES_PASSWORD": "pg-s3cret", "POSTGRES_HOST": "db"})
    view = Settings().public_view()
    dumped = json.dumps(view)
    for secret in ("jwt-s3cret-value", "db-s3cret", "redis-s3cret", "pg-s3cret"):
        assert secret not in dumped
    assert view["database_url"] == "postgresql+psycopg://app:***@db:5432/churnops"
    assert view["redis_url"] == "redis://:***@cache:6379/0"
    assert view["jwt_secret_key"] == "***"
    assert view["postgres_password"] == "***"
    assert view["resolved"]["offline_store"] == "postgresql+psycopg://app:***@db:5432/churnops"


def test_public_view_masks_postgres_password_in_resolved_url(env: pytest.MonkeyPatch) -> None:
    set_all(env, {"POSTGRES_HOST": "db", "POSTGRES_PASSWORD": "pg-s3cret"})
    view = Settings().public_view()
    assert "pg-s3cret" not in json.dumps(view)
    assert view["resolved"]["offline_store"] == "postgresql+psycopg://postgres:***@db:5432/churnops"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        (None, None),
    ],
)
def test_mask_url(url: str | None, masked: str | None) -> None:
    assert mask_url(url) == masked


def test_check_production_passes_when_everything_is_set(env: pytest.MonkeyPatch) -> None:
    set_all(env, PRODUCTION)
    Settings().check_production()


def test_check_production_accepts_postgres_host_and_redis_host(env: pytest.MonkeyPatch) -> None:
    set_all(env, PRODUCTION)
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.delenv(name)
    set_all(env, {"POSTGRES_HOST": "db", "REDIS_HOST": "cache"})
    Settings().check_production()


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("JWT_SECRET_KEY", "JWT_SECRET_KEY"),
        ("DATABASE_URL", "DATABASE_URL or POSTGRES_HOST"),
        ("REDIS_URL", "REDIS_URL or REDIS_HOST"),
        ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        ("CHURNOPS_PSEUDONYM_KEY", "CHURNOPS_PSEUDONYM_KEY"),
        ("CHURNOPS_LEDGER_KEY", "CHURNOPS_LEDGER_KEY"),
        ("CHURNOPS_API_KEY_PEPPER", "CHURNOPS_API_KEY_PEPPER"),
        ("CHURNOPS_JWT_ISSUER", "CHURNOPS_JWT_ISSUER"),
        ("CHURNOPS_JWT_AUDIENCE", "CHURNOPS_JWT_AUDIENCE"),
    ],
)
def test_check_production_names_the_missing_setting(
    env: pytest.MonkeyPatch, missing: str, named: str
) -> None:
    set_all(env, PRODUCTION)
    env.delenv(missing)
    settings = Settings()
    with pytest.raises(ConfigError, match=named) as caught:
        settings.check_production()
    assert "APP_ENV=production" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("JWT_SECRET_KEY", "short", "JWT_SECRET_KEY of at least 32 bytes"),
        ("CHURNOPS_LEDGER_KEY", "x" * 31, "CHURNOPS_LEDGER_KEY of at least 32 bytes"),
        ("CHURNOPS_AUTH", "off", "CHURNOPS_AUTH=off"),
        ("CHURNOPS_RATE_LIMIT", "lots", "CHURNOPS_RATE_LIMIT"),
    ],
)
def test_check_production_refuses_short_secrets_and_auth_off(
    env: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    set_all(env, PRODUCTION | {name: value})
    with pytest.raises(ConfigError, match=named):
        Settings().check_production()


def test_production_accepts_a_jwks_instead_of_a_jwt_secret(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_all(env, PRODUCTION | {"CHURNOPS_JWT_JWKS": str(tmp_path / "jwks.json")})
    env.delenv("JWT_SECRET_KEY")
    Settings().check_production()


def test_docs_are_on_outside_production_and_opt_in_there(env: pytest.MonkeyPatch) -> None:
    assert Settings().docs_enabled
    set_all(env, PRODUCTION)
    assert not Settings().docs_enabled
    env.setenv("CHURNOPS_DOCS", "on")
    assert Settings().docs_enabled


def test_check_production_ignores_other_environments(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_ENV", "staging")
    Settings().check_production()
    env.setenv("APP_ENV", "development")
    Settings().check_production()


def test_unknown_app_env_is_rejected(env: pytest.MonkeyPatch) -> None:
    env.setenv("APP_ENV", "prod")
    with pytest.raises(ValueError, match="app_env"):
        Settings()
