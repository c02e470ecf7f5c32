"""schemathesis 4 against a running `churnops serve`: every default check, bounded examples, zero failures.

`st run` with its default checks (server errors, status code / content type / response
schema / header conformance, negative data rejection, unsupported methods with `Allow`,
ignored auth, ...) against the server's own /openapi.json, authenticated with an all-scopes
key; no check is excluded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from churnops.jobs.keys import NewKey
from churnops.settings import Settings
from tests.access_helpers import make_key
from tests.conftest import PipelineRun
from tests.servers import ChurnopsServer, start_churnops, stop_churnops

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(
    pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ChurnopsServer, NewKey]]:
    # A copy of the shared home: schemathesis erases, opts out and labels whatever it generates.
    root = tmp_path_factory.mktemp("st")
    home = root / "home"
    shutil.copytree(pipeline_run.settings.home, home, ignore=shutil.ignore_patterns("spool", "metrics"))
    key = make_key(Settings(churnops_home=home), "predict,admin,audit", rate_limit="1000000000/minute")
    server = start_churnops(home, root / "serve.log")
    yield server, key
    stop_churnops(server)


def test_schema_has_no_dangling_refs_and_lists_the_features(served: tuple[ChurnopsServer, NewKey]) -> None:
    server, _ = served
    schema = httpx.get(f"{server.url}/openapi.json").json()
    components = schema["components"]["schemas"]
    refs = _refs(schema)
    assert refs, "the prediction bodies reference components"
    assert {ref.rsplit("/", 1)[-1] for ref in refs} <= set(components)
    features = components["Features"]
    assert features["additionalProperties"] is False
    assert "tenure_months" in features["properties"] or features["properties"]
    security = schema["paths"]["/v1/predict"]["post"]["security"]
    assert {name for item in security for name in item} == {"APIKeyHeader", "HTTPBearer"}
    assert "security" not in schema["paths"]["/health/live"]["get"]
    # Operation ids a generated client can name its methods after: tag-function, unique.
    ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), ids
    assert schema["paths"]["/v1/predict"]["post"]["operationId"] == "predictions-predict"
    assert schema["paths"]["/v1/privacy/customers/{customer_id}"]["delete"]["operationId"] == "privacy-erase"
    assert all(re.fullmatch(r"[a-z]+-[a-z_]+", i) for i in ids), ids  # no path or method noise


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_schemathesis_finds_nothing(served: tuple[ChurnopsServer, NewKey], tmp_path: Path) -> None:
    server, key = served
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    cmd = [
        st,
        "--config-file",
        str(Path(__file__).resolve().parents[1] / "schemathesis.toml"),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"X-API-Key: {key.key}",
        "--max-examples",
        "25",
        "--seed",
        "20261201",
        "--workers",  # one: CPython 3.11's compile() is not thread-safe (schemathesis compiles checks)
        "1",
        "--request-timeout",
        "20",
        "--no-color",
    ]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or " 0 failures" in result.stdout or "passed" in result.stdout
