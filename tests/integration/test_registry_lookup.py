"""The MLflow-free registry lookup agrees with MlflowClient on a SQLite registry and on an `mlflow server`,
and refuses (LookupUnavailable) whatever it has not verified."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from churnops.io.registry_lookup import (
    LookupUnavailable,
    RegistryLookup,
    RestLookup,
    VersionRecord,
    lookup_for,
)
from tests.servers import free_port, stop_group

pytestmark = pytest.mark.integration

MODEL = "churn-synthetic"
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # MlflowClient's "no such version/alias"


@dataclass
class Backend:
    kind: str
    uri: str
    client: MlflowClient


def _populate(client: MlflowClient) -> None:
    """Three versions of MODEL with `champion` on 2, a version without a run, another model and a prompt."""
    run_id = client.create_run("0").info.run_id
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source=f"runs:/{run_id}/model", run_id=run_id)
    client.create_model_version(MODEL, source="s3://churnops-models/no-run-id")
    client.set_registered_model_alias(MODEL, "champion", "2")
    client.create_registered_model("other-model")
    client.register_prompt(
        name="a-prompt", template="Churn risk of {{customer}}?"
    )  # a tagged registered model


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)  # never mlflow.set_tracking_uri: it leaks


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "mlflow.db"
    _populate(_client(f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a free port, in its own session; its process group is stopped by PID."""
    workdir = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner and huey workers on 2 cores
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}"]
    cmd += ["--artifacts-destination", str(workdir / "artifacts")]
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, deadline=time.monotonic() + 120)
        yield url
    finally:
        stop_group(proc, grace=15)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"mlflow server not healthy within 120 s: {log.read_text()[-3000:]}")


@pytest.fixture(params=["sqlite", "server"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh populated registry: a SQLite file, or the module's server (populated once)."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        uri = request.getfixturevalue("mlflow_server")
    client = _client(uri)
    _populate(client)
    return Backend(request.param, uri, client)


def _client_version(client: MlflowClient, name: str, ref: str) -> Any:
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            return None
        raise


def _agrees(lookup: RegistryLookup, backend: Backend, name: str, ref: str) -> VersionRecord | None:
    """lookup.version(name, ref) equals what MlflowClient returns (both None when it reports not found)."""
    got = lookup.version(name, ref)
    expected = _client_version(backend.client, name, ref)
    if expected is None:
        assert got is None, (name, ref, got)
        return None
    assert got is not None, (name, ref)
    fields = (got.name, got.version, got.run_id, got.created_ms, got.source)
    assert fields == (
        expected.name,
        str(expected.version),
        expected.run_id,
        expected.creation_timestamp,
        expected.source,
    )
    # SQLite keeps where the files are (the source itself for runs:/ URIs); the REST answer has no such field.
    assert got.storage_location == (got.source if backend.kind == "sqlite" else None)
    return got


def test_lookup_agrees_with_mlflow_client(backend: Backend) -> None:
    lookup = lookup_for(backend.uri, timeout=10)
    client_names = sorted(m.name for m in backend.client.search_registered_models(max_results=1000))
    assert lookup.model_names() == client_names == [MODEL, "other-model"]
    assert backend.client.get_prompt_version("a-prompt", 1) is not None  # in the registry tables, yet
    for ref in ["1", "champion", "latest"]:  # MlflowClient answers "not found" for prompt versions
        assert _agrees(lookup, backend, "a-prompt", ref) is None

    versions = [_agrees(lookup, backend, MODEL, str(n)) for n in range(1, 5)]
    assert [v.version for v in versions if v] == ["1", "2", "3", "4"]
    assert versions[3] is not None
    assert not versions[3].run_id  # None from SQLite, "" over REST: whatever MlflowClient says
    assert _agrees(lookup, backend, MODEL, "champion") == versions[1]
    assert _agrees(lookup, backend, MODEL, "latest") == versions[3]
    for name, ref in [(MODEL, "nope"), (MODEL, "99"), ("no-such-model", "1"), ("no-such-model", "champion")]:
        assert _agrees(lookup, backend, name, ref) is None

    backend.client.set_registered_model_alias(MODEL, "champion", "3")
    assert _agrees(lookup, backend, MODEL, "champion") == versions[2]

    backend.client.delete_model_version(MODEL, "3")  # also drops the aliases pointing at it
    assert _agrees(lookup, backend, MODEL, "3") is None
    assert _agrees(lookup, backend, MODEL, "champion") is None
    backend.client.delete_model_version(MODEL, "4")
    assert _agrees(lookup, backend, MODEL, "latest") == versions[1]


# -- SQLite refusals -------------------------------------------------------------------------


def _copy(db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    return copy


def test_unknown_schema_revision_is_refused(sqlite_db: Path, tmp_path: Path) -> None:
    copy = _copy(sqlite_db, tmp_path)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    lookup = lookup_for(f"sqlite:///{copy}")
    with pytest.raises(LookupUnavailable, match="revision"):
        lookup.version(MODEL, "champion")
    with pytest.raises(LookupUnavailable, match="revision"):
        lookup.model_names()


def test_missing_empty_or_locked_databases_are_refused(sqlite_db: Path, tmp_path: Path) -> None:
    with pytest.raises(LookupUnavailable, match="does not exist"):
        lookup_for(f"sqlite:///{tmp_path / 'absent.db'}").model_names()
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(LookupUnavailable, match="no such table"):
        lookup_for(f"sqlite:///{tmp_path / 'empty.db'}").model_names()
    copy = _copy(sqlite_db, tmp_path)
    writer = sqlite3.connect(copy, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LookupUnavailable, match="locked"):
            lookup_for(f"sqlite:///{copy}", timeout=0.2).version(MODEL, "champion")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert lookup_for(f"sqlite:///{copy}").version(MODEL, "champion") is not None


def test_relative_sqlite_uri_reads_from_the_working_directory(
    sqlite_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy(sqlite_db, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert lookup_for("sqlite:///copy.db").model_names() == lookup_for(f"sqlite:///{sqlite_db}").model_names()


def test_other_workspaces_are_refused_like_mlflow_does(
    sqlite_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-a")
    with pytest.raises(LookupUnavailable, match="MLFLOW_WORKSPACE"):
        lookup_for(f"sqlite:///{sqlite_db}")
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    with pytest.raises(LookupUnavailable, match="MLFLOW_ENABLE_WORKSPACES"):
        lookup_for(f"sqlite:///{sqlite_db}")
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")

    copy = _copy(sqlite_db, tmp_path)
    with sqlite3.connect(copy) as conn:
        conn.execute("INSERT INTO registered_models (name, workspace) VALUES ('theirs', 'team-a')")
    with pytest.raises(LookupUnavailable, match="non-default workspaces"):
        lookup_for(f"sqlite:///{copy}").model_names()
    with pytest.raises(MlflowException, match="outside the default workspace"):
        _client(f"sqlite:///{copy}").search_registered_models()


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://user@localhost/mlflow",
        "file:///tmp/mlruns",
        "databricks",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:x.db?mode=ro&uri=true",
        "mysql+pymysql://localhost/mlflow",
        "http://user:secret@127.0.0.1:5000",
    ],
)
def test_unhandled_uris_are_refused(uri: str) -> None:
    with pytest.raises(LookupUnavailable):
        lookup_for(uri)


def test_invalid_arguments_are_left_to_mlflow_client(sqlite_db: Path) -> None:
    lookup = lookup_for(f"sqlite:///{sqlite_db}")
    for name, ref in [(MODEL, "bad alias"), (MODEL, ""), ("a/b", "1"), (" ", "champion")]:
        with pytest.raises(LookupUnavailable, match="invalid"):
            lookup.version(name, ref)


# -- REST specifics --------------------------------------------------------------------------


def test_rest_pages_through_model_names(mlflow_server: str) -> None:
    client = _client(mlflow_server)
    for i in range(3):
        client.create_registered_model(f"paged-{i}")
    paged = RestLookup(mlflow_server, {}, timeout=10, page_size=1)
    client_names = sorted(m.name for m in client.search_registered_models(max_results=1000))
    assert {"paged-0", "paged-1", "paged-2"} <= set(client_names)
    assert paged.model_names() == client_names == lookup_for(mlflow_server).model_names()


def test_rest_failures_are_refused(mlflow_server: str) -> None:
    with pytest.raises(LookupUnavailable, match="HTTP 404"):  # not an MLflow answer: no error_code
        lookup_for(f"{mlflow_server}/no-such-prefix").version(MODEL, "1")
    with pytest.raises(LookupUnavailable, match="failed"):  # connection refused
        lookup_for(f"http://127.0.0.1:{free_port()}").version(MODEL, "1")
    with socket.socket() as silent:  # accepts connections (kernel backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(LookupUnavailable, match="timed out"):
            lookup_for(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5).model_names()
        assert time.monotonic() - started < 5


def test_rest_auth_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials of the machine
    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok")
    lookup = lookup_for("http://127.0.0.1:5000")
    assert isinstance(lookup, RestLookup)
    assert lookup.headers["Authorization"] == "Bearer tok"
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = u\nmlflow_tracking_password = p\n"
    )
    lookup = lookup_for("http://127.0.0.1:5000")
    assert isinstance(lookup, RestLookup)
    assert lookup.headers["Authorization"] == "Basic dTpw"  # basic wins over the token, as in MLflow
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    with pytest.raises(LookupUnavailable, match="MLFLOW_TRACKING_INSECURE_TLS"):
        lookup_for("https://127.0.0.1:5000")


# -- the point of it all ---------------------------------------------------------------------


def test_import_and_lookup_leave_heavy_modules_unloaded(sqlite_db: Path) -> None:
    code = (
        "import json, sys\n"
        "from churnops.io.registry_lookup import lookup_for\n"
        "record = lookup_for(sys.argv[1]).version(sys.argv[2], 'champion')\n"
        "heavy = [m for m in ('mlflow', 'sqlalchemy', 'pandas', 'numpy') if m in sys.modules]\n"
        "print(json.dumps({'version': record and record.version, 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, f"sqlite:///{sqlite_db}", MODEL],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert result["heavy"] == []
    assert result["version"] is not None
