"""Registry look-ups without importing MLflow, whose import costs ~2.7 s per CLI call when batch scoring needs
one alias look-up. Only stores whose layout was verified are read (MLflow's SQLite schema at known revisions,
a tracking server's REST API); anything else raises LookupUnavailable and the caller uses MlflowClient.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

# Alembic revisions whose registry tables (registered_models, model_versions, registered_model_aliases and
# the two tag tables) match the queries below: MLflow 3.17's head and the two before it, which only touch
# jobs and traces (registry tables last changed in 1b5f0d9ad7c1 and 7d34483879f0, both older).
KNOWN_REVISIONS = frozenset({"dc11669786a5", "75868b020152", "b7e2c1a4d9f3"})
DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
DELETED_STAGE = "Deleted_Internal"  # delete_model_version keeps the row, redacted, in this stage
LIVE_STAGES = ("None", "Staging", "Production", "Archived")  # what get_latest_versions considers
LATEST = "latest"  # reserved alias (any case): the highest live version
# Prompts live in the registry tables too: MlflowClient leaves models tagged 'true' out of searches and
# answers "not found" for any version carrying the tag.
PROMPT_TAG = "mlflow.prompt.is_prompt"
ALIAS_RE = re.compile(r"^[\w\-]{1,255}$")  # MLflow's alias rule: anything else it rejects, not "not found"
# Client settings that change what or how MlflowClient reads; rather than half-support them, refuse.
UNSUPPORTED_HTTP_SETTINGS = (
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_INSECURE_TLS",
)
CA_BUNDLE_SETTINGS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # honoured by requests, not by urllib


class LookupUnavailable(Exception):
    """This store cannot be read without MLflow here (unknown URI scheme, unknown schema revision, server
    error...): use MlflowClient."""


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: str
    run_id: str | None
    created_ms: int
    source: str
    storage_location: str | None


class RegistryLookup(Protocol):
    def model_names(self) -> list[str]: ...

    def version(self, name: str, ref: str) -> VersionRecord | None: ...


def lookup_for(tracking_uri: str, timeout: float = 10.0) -> RegistryLookup:
    """A reader for the registry at `tracking_uri`; raises LookupUnavailable for URIs it does not handle."""
    scheme = urllib.parse.urlsplit(tracking_uri).scheme
    _refuse_workspaces()
    if scheme == "sqlite":
        _refuse_plugins(scheme, http=False)
        return SqliteLookup(_sqlite_path(tracking_uri), timeout)
    if scheme in ("http", "https"):
        _refuse_plugins(scheme, http=True)
        return RestLookup(_server_base(tracking_uri), _http_headers(scheme), timeout)
    raise LookupUnavailable(f"no MLflow-free reader for {scheme or tracking_uri!r} registries")


# -- shared checks ---------------------------------------------------------------------


def _refuse_workspaces() -> None:
    """MLflow 3 workspaces scope every registry query; only the default, workspace-less setup is read."""
    enabled = os.environ.get("MLFLOW_ENABLE_WORKSPACES")
    if enabled is not None and enabled.lower() not in ("false", "0"):
        raise LookupUnavailable("MLFLOW_ENABLE_WORKSPACES is set")
    if os.environ.get("MLFLOW_WORKSPACE", "").strip():
        raise LookupUnavailable("MLFLOW_WORKSPACE is set")


def _refuse_plugins(scheme: str, http: bool) -> None:
    """Installed MLflow plugins can replace the store for a scheme or add headers to every request."""
    installed = entry_points()
    if installed.select(group="mlflow.model_registry_store", name=scheme):
        raise LookupUnavailable(f"an MLflow plugin provides the {scheme!r} registry store")
    if http and installed.select(group="mlflow.request_header_provider"):
        raise LookupUnavailable("an MLflow plugin adds request headers")


def _check_request(name: str, ref: str) -> None:
    """Arguments MlflowClient rejects outright: let it report them rather than answer "not found"."""
    if not name.strip() or "/" in name or ":" in name:
        raise LookupUnavailable(f"invalid model name {name!r}")
    if not _is_version(ref) and not ALIAS_RE.match(ref):
        raise LookupUnavailable(f"invalid alias {ref!r}")


def _is_version(ref: str) -> bool:
    return ref.isascii() and ref.isdigit()


# -- SQLite ----------------------------------------------------------------------------


def _sqlite_path(uri: str) -> Path:
    """`sqlite:///rel.db` (relative to the working directory, as SQLAlchemy reads it) or `sqlite:////abs.db`."""
    path = uri.removeprefix("sqlite:///")
    plain = uri.startswith("sqlite:///") and path and not path.startswith((":memory:", "file:"))
    if not plain or any(char in path for char in "?#%"):  # driver options, URI filenames, escapes
        raise LookupUnavailable(f"unsupported SQLite URI {uri!r}")
    return Path(path).absolute()


_VERSION_COLUMNS = "mv.name, mv.version, mv.run_id, mv.creation_time, mv.source, mv.storage_location"
_NOT_PROMPT = (
    "NOT EXISTS (SELECT 1 FROM model_version_tags t WHERE t.workspace = mv.workspace AND t.name = mv.name"
    " AND t.version = mv.version AND t.key = ?)"
)


class SqliteLookup:
    """MLflow's registry tables read with sqlite3, read-only, mirroring SqlAlchemyStore's queries."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def model_names(self) -> list[str]:
        sql = (
            "SELECT name FROM registered_models rm WHERE workspace = ? AND NOT EXISTS ("
            " SELECT 1 FROM registered_model_tags t WHERE t.workspace = rm.workspace AND t.name = rm.name"
            " AND t.key = ? AND t.value = 'true')"
        )
        with self._read() as conn:
            return sorted(row[0] for row in conn.execute(sql, (DEFAULT_WORKSPACE, PROMPT_TAG)))

    def version(self, name: str, ref: str) -> VersionRecord | None:
        _check_request(name, ref)
        with self._read() as conn:
            if _is_version(ref):
                return self._by_number(conn, name, int(ref))
            if ref.lower() == LATEST:
                return self._latest(conn, name)
            return self._by_alias(conn, name, ref)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on a store whose schema revision is known; any SQLite error refuses."""
        if not self.path.is_file():
            raise LookupUnavailable(f"{self.path} does not exist")
        try:
            uri = f"{self.path.as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
            try:
                conn.execute("BEGIN")
                _verify_schema(conn)
                yield conn
            finally:
                conn.close()
        except (sqlite3.Error, OverflowError) as exc:  # locked, no tables, unexpected columns, huge ints
            raise LookupUnavailable(f"cannot read {self.path}: {exc}") from exc

    @staticmethod
    def _by_number(conn: sqlite3.Connection, name: str, number: int) -> VersionRecord | None:
        # bandit B608: only module constants are formatted in; every value is a bound `?` parameter
        sql = (
            f"SELECT {_VERSION_COLUMNS} FROM model_versions mv"  # nosec B608
            " WHERE mv.workspace = ? AND mv.name = ? AND mv.version = ? AND mv.current_stage != ?"
            f" AND {_NOT_PROMPT}"
        )
        args = (DEFAULT_WORKSPACE, name, number, DELETED_STAGE, PROMPT_TAG)
        return _sqlite_record(conn.execute(sql, args).fetchone())

    @staticmethod
    def _by_alias(conn: sqlite3.Connection, name: str, alias: str) -> VersionRecord | None:
        # Aliases are deleted with their version, and the join rejects a deleted one like MLflow does.
        # bandit B608: only module constants are formatted in; every value is a bound `?` parameter
        sql = (
            f"SELECT {_VERSION_COLUMNS} FROM registered_model_aliases a JOIN model_versions mv"  # nosec B608
            " ON mv.workspace = a.workspace AND mv.name = a.name AND mv.version = a.version"
            " WHERE a.workspace = ? AND a.name = ? AND a.alias = ? AND mv.current_stage != ?"
            f" AND {_NOT_PROMPT}"
        )
        args = (DEFAULT_WORKSPACE, name, alias, DELETED_STAGE, PROMPT_TAG)
        return _sqlite_record(conn.execute(sql, args).fetchone())

    @staticmethod
    def _latest(conn: sqlite3.Connection, name: str) -> VersionRecord | None:
        # The prompt check applies to the version found, so a tagged latest version hides, not falls back.
        marks = ", ".join("?" for _ in LIVE_STAGES)
        # bandit B608: only module constants are formatted in; every value is a bound `?` parameter
        sql = (
            f"SELECT {_VERSION_COLUMNS}, {_NOT_PROMPT} FROM model_versions mv WHERE mv.workspace = ?"  # nosec B608
            f" AND mv.name = ? AND mv.current_stage IN ({marks}) ORDER BY mv.version DESC LIMIT 1"
        )
        row = conn.execute(sql, (PROMPT_TAG, DEFAULT_WORKSPACE, name, *LIVE_STAGES)).fetchone()
        return _sqlite_record(row[:-1]) if row is not None and row[-1] else None


def _verify_schema(conn: sqlite3.Connection) -> None:
    revisions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    if len(revisions) != 1 or revisions[0] not in KNOWN_REVISIONS:
        raise LookupUnavailable(
            f"MLflow schema revision {revisions} is not one this reader was checked against"
        )
    # Without workspaces MLflow refuses to open a registry holding rows of other workspaces.
    foreign = conn.execute(
        "SELECT 1 FROM registered_models WHERE workspace != ?"
        " UNION ALL SELECT 1 FROM webhooks WHERE workspace != ? LIMIT 1",
        (DEFAULT_WORKSPACE, DEFAULT_WORKSPACE),
    ).fetchone()
    if foreign is not None:
        raise LookupUnavailable("the registry holds entries of non-default workspaces")


def _sqlite_record(row: tuple[Any, ...] | None) -> VersionRecord | None:
    if row is None:
        return None
    name, version, run_id, created, source, storage = row
    if not isinstance(version, int) or not isinstance(created, int) or not isinstance(source, str):
        raise LookupUnavailable(f"unexpected model_versions row for {name!r}")
    return VersionRecord(name, str(version), run_id, created, source, storage)


# -- REST ------------------------------------------------------------------------------


def _server_base(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise LookupUnavailable(f"unsupported tracking server URI {uri!r}")
    return uri.removesuffix("/")  # MLflow strips one trailing slash before appending the endpoint


def _http_headers(scheme: str) -> dict[str, str]:
    """The headers MlflowClient sends: basic auth if a username and password are set, else a bearer token."""
    unsupported = [key for key in UNSUPPORTED_HTTP_SETTINGS if key in os.environ]
    if scheme == "https":
        unsupported += [key for key in CA_BUNDLE_SETTINGS if os.environ.get(key)]
    if unsupported:
        raise LookupUnavailable(f"MLflow client settings not handled here: {', '.join(unsupported)}")
    headers = {"Accept": "application/json", "User-Agent": "churnops-registry-lookup"}
    file_user, file_password = _credentials_file()
    username = os.environ.get("MLFLOW_TRACKING_USERNAME") or file_user
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or file_password
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if username and password:
        basic = base64.standard_b64encode(f"{username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _credentials_file() -> tuple[str | None, str | None]:
    """Username and password from ~/.mlflow/credentials, which MlflowClient reads too."""
    path = Path(os.path.expanduser("~/.mlflow/credentials"))
    if not path.exists():
        return None, None
    config = configparser.ConfigParser()
    try:
        config.read(path)
    except configparser.Error as exc:
        raise LookupUnavailable(f"cannot parse {path}: {exc}") from exc
    if "mlflow" not in config:
        return None, None
    section = config["mlflow"]
    return section.get("mlflow_tracking_username"), section.get("mlflow_tracking_password")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would resend the Authorization header to wherever a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RestLookup:
    """An MLflow tracking server's public REST API (2.0), read with urllib; no retries: errors refuse."""

    def __init__(
        self, base: str, headers: Mapping[str, str], timeout: float = 10.0, page_size: int = 1000
    ) -> None:
        if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
            raise LookupUnavailable(f"not an http(s) URL: {base!r}")
        self.base = base
        self.headers = dict(headers)
        self.timeout = timeout
        self.page_size = page_size
        self._opener = urllib.request.build_opener(_NoRedirect)

    def model_names(self) -> list[str]:
        names: list[str] = []
        token = ""
        seen: set[str] = set()
        while True:
            params = {"filter": f"tag.`{PROMPT_TAG}` != 'true'", "max_results": str(self.page_size)}
            page = self._get("registered-models/search", params | ({"page_token": token} if token else {}))
            names += [str(_field(model, "name", "")) for model in _field(page, "registered_models", [])]
            token = str(_field(page, "next_page_token", ""))
            if not token:
                return sorted(names)
            if token in seen:
                raise LookupUnavailable("the server repeats a page token")
            seen.add(token)

    def version(self, name: str, ref: str) -> VersionRecord | None:
        _check_request(name, ref)
        if _is_version(ref):
            found = self._get("model-versions/get", {"name": name, "version": str(int(ref))})
        else:
            found = self._get("registered-models/alias", {"name": name, "alias": ref})
        return None if found is None else _rest_record(_field(found, "model_version", None))

    def _get(self, endpoint: str, params: Mapping[str, str]) -> Any:
        """The decoded JSON answer, None when the server says the model, version or alias does not exist."""
        url = f"{self.base}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self.headers, method="GET")  # noqa: S310 http(s) only
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if _is_not_found(exc.code, _error_body(exc)):
                return None
            raise LookupUnavailable(f"GET {endpoint} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, HTTPException, ValueError) as exc:  # incl. timeouts, bad JSON
            raise LookupUnavailable(f"GET {endpoint} failed: {exc}") from exc


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(exc.read())
    except (OSError, HTTPException, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _is_not_found(status: int, body: Mapping[str, Any]) -> bool:
    """MLflow's answers for missing things, observed on `mlflow server` 3.17: a missing model or version is
    404 RESOURCE_DOES_NOT_EXIST; a missing alias is 400 INVALID_PARAMETER_VALUE "... alias X not found.".
    A bare 404 (a proxy, a wrong path prefix) is not an MLflow answer."""
    code, message = body.get("error_code"), str(body.get("message", ""))
    if status == 404:
        return code == "RESOURCE_DOES_NOT_EXIST"
    alias_missing = re.fullmatch(r"Registered model alias \S+ not found\.", message) is not None
    return status == 400 and code == "INVALID_PARAMETER_VALUE" and alias_missing


def _field(payload: Any, key: str, default: Any) -> Any:
    if not isinstance(payload, dict):
        raise LookupUnavailable(f"unexpected answer from the server: {str(payload)[:200]}")
    return payload.get(key, default)


def _rest_record(version: Any) -> VersionRecord | None:
    """Proto defaults as ModelVersion.from_proto applies them (run_id None when absent); prompts: None."""
    if not isinstance(version, dict) or "name" not in version or "version" not in version:
        raise LookupUnavailable(f"unexpected model_version from the server: {str(version)[:200]}")
    tags = version.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, dict) for tag in tags):
        raise LookupUnavailable(f"unexpected model version tags from the server: {str(tags)[:200]}")
    if any(tag.get("key") == PROMPT_TAG for tag in tags):
        return None
    try:
        created = int(version.get("creation_timestamp", 0))
    except (TypeError, ValueError) as exc:
        raise LookupUnavailable(
            f"unexpected creation_timestamp {version.get('creation_timestamp')!r}"
        ) from exc
    return VersionRecord(
        name=str(version["name"]),
        version=str(version["version"]),
        run_id=version.get("run_id"),
        created_ms=created,
        source=str(version.get("source", "")),
        storage_location=version.get("storage_location"),
    )
