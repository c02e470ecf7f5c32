"""The one promotion path on real MLflow and SQLite: gates on rows neither model trained on, the
evidence kept with each version, refusals, a forced override, rollback, approval and the history,
from the CLI and the HTTP API."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.core.membership import Membership
from churnops.core.split import HOLDOUT
from churnops.io.registry import MlflowRegistry
from churnops.io.secrets import load_secrets
from churnops.jobs.featurize import load_split
from churnops.jobs.version_files import load_gates, membership
from churnops.jobs.workdir import Workdir
from churnops.serving.app import serving_app
from churnops.settings import Settings
from tests.access_helpers import make_key
from tests.conftest import make_settings
from tests.lifecycle_helpers import cli, customers, history, quick_params, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "churn-synthetic"


@dataclass(frozen=True)
class Home:
    settings: Settings
    root: Path

    @property
    def registry(self) -> MlflowRegistry:
        return MlflowRegistry(self.settings.tracking_uri, self.settings.artifact_root)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """v1 on 3,000 customers (champion), v2 on 3,000 others with shuffled labels (refused)."""
    root = tmp_path_factory.mktemp("promotion")
    settings = make_settings(root / "home")
    train(settings, customers(3000, seed=1), root, "v1")
    train(settings, customers(3000, seed=2, prefix="N", shuffle=True), root, "v2")
    return Home(settings, root)


def test_gates_compare_with_the_champion_on_rows_neither_trained_on(tmp_path: Path) -> None:
    """The candidate's holdout less every customer in the champion's recorded training set."""
    settings = make_settings(tmp_path / "home")
    train(settings, customers(3000, seed=1), tmp_path, "v1")
    second = train(settings, customers(3000, seed=2), tmp_path, "v2")  # the same ids C0001..C3000
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    key = load_secrets(settings).pseudonym_key

    w1, w2 = Workdir(tmp_path / "v1"), Workdir(tmp_path / "v2")
    trained_v1 = set(w1.read_training_frame()["customer_id"][load_split(w1).to_numpy() != HOLDOUT])
    holdout_v2 = list(w2.read_training_frame()["customer_id"][load_split(w2).to_numpy() == HOLDOUT])
    expected_excluded = sum(c in trained_v1 for c in holdout_v2)
    assert 0 < expected_excluded < len(holdout_v2)

    members = membership(registry, MODEL, "1")
    assert isinstance(members, Membership)
    assert len(members) == len(trained_v1)
    assert members.contains(key, sorted(trained_v1)).all()
    evidence = load_gates(registry, MODEL, "2")
    assert evidence is not None
    assert evidence["champion"] == "1"
    assert evidence["evaluation"]["excluded_champion_training_rows"] == expected_excluded
    assert evidence["evaluation"]["rows"] == len(holdout_v2) - expected_excluded
    discrimination = next(v for v in evidence["verdicts"] if v["name"] == "discrimination")
    assert discrimination["detail"]["n"] == len(holdout_v2) - expected_excluded
    assert {"difference", "interval", "p_value"} <= set(discrimination["detail"])
    tags = registry.version_tags(MODEL, "2")
    assert tags["churnops.gates"] == second["gates"]
    assert tags["churnops.status"] == second["status"]


def test_gates_check_prints_one_row_per_gate_and_fails_on_a_failed_gate(two_versions: Home) -> None:
    home = two_versions.settings.home
    out = cli(home, "gates", "check", "2", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    names = [v["name"] for v in report["verdicts"]]
    assert names == [
        "discrimination", "calibration", "fairness.demographic_parity", "fairness.equal_opportunity",
        "latency", "profit", "golden", "validation",
    ]  # fmt: skip
    assert all({"value", "limit", "passed", "reason"} <= set(v) for v in report["verdicts"])
    assert report["champion"] == "1"
    assert report["status"] == "failed"
    assert out.stderr.strip().startswith("error: v2 would be refused: gate discrimination failed: AUC ")
    assert len(out.stderr.strip().splitlines()) == 1
    ok = cli(home, "gates", "check", "1")
    assert ok.returncode == 0, ok.stderr
    assert "pass" in ok.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gates", "check", "99"), "error: churn-synthetic has no version '99'"),
        (("models", "approve", "1"), "error: v1 is already the champion"),
        (("models", "approve", "2"), "error: v2 is not pending approval (status: rejected)"),
        (
            ("models", "rollback", "--to", "2"),
            "error: v2 was never champion: use `churnops models promote 2`",
        ),
        (("lifecycle", "watch", "--every", "5minutes"), "error: --every: '5minutes' is not a duration"),
    ],
)
def test_bad_input_is_one_line_and_moves_nothing(
    two_versions: Home, args: tuple[str, ...], message: str
) -> None:
    before = two_versions.registry.alias_version(MODEL, "champion")
    out = cli(two_versions.settings.home, *args)
    if message.startswith("error: v1 is already"):  # approving the champion is a no-op, not an error
        assert out.returncode == 0
        assert "already the champion" in out.stdout
    else:
        assert out.returncode != 0
        assert out.stderr.strip().startswith(message), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert two_versions.registry.alias_version(MODEL, "champion") == before


def test_a_bad_gates_policy_is_refused_naming_the_gate(two_versions: Home, tmp_path: Path) -> None:
    for policy, message in [
        ("gates: {speed: {max: 1}}", "gates.speed: unknown gate"),
        (
            "gates: {profit: {tolerance: -1}}",
            "gates.profit.tolerance: Input should be greater than or equal to 0",
        ),
    ]:
        path = tmp_path / "params.yaml"
        path.write_text(policy)
        out = cli(two_versions.settings.home, "gates", "check", "1", "--params", str(path))
        assert out.returncode == 1
        assert message in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_refusal_override_rollback_and_history(tmp_path: Path) -> None:
    """A refused promotion moves nothing; --force does and is recorded with the failed gates; rollback
    goes back, a second one has nowhere to go; history shows each step, newest first, with who and why."""
    settings = make_settings(tmp_path / "home")
    train(settings, customers(3000, seed=1), tmp_path, "v1")
    train(settings, customers(3000, seed=2, prefix="N", shuffle=True), tmp_path, "v2")
    home, registry = settings.home, MlflowRegistry(settings.tracking_uri, settings.artifact_root)

    refused = cli(home, "models", "promote", "2")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: v2 refused: gate discrimination failed")
    assert registry.alias_version(MODEL, "champion") == "1"
    forced = cli(home, "models", "promote", "2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert registry.alias_version(MODEL, "champion") == "2"
    back = cli(home, "models", "rollback", "--reason", "forced by mistake")
    assert back.returncode == 0, back.stderr
    assert registry.alias_version(MODEL, "champion") == "1"
    again = cli(home, "models", "rollback")
    assert again.returncode == 1
    assert again.stderr.strip() == "error: churn-synthetic v1 has no earlier champion to roll back to"
    assert registry.alias_version(MODEL, "champion") == "1"

    events = history(home)
    steps = [(e["action"], e["from"], e["to"], e["outcome"]) for e in events]
    assert steps == [
        ("models.rollback", "2", "1", "champion"),
        ("models.promote", "1", "2", "champion"),
        ("models.reject", "1", "2", "rejected"),  # the refused `models promote 2`
        ("models.reject", "1", "2", "rejected"),  # its registration
        ("models.register", None, "1", "champion"),
    ]
    rolled, promoted = events[0], events[1]
    assert all(e["principal"] and e["principal"].startswith("cli") for e in events)
    assert rolled["trigger"] == "manual"
    assert "forced by mistake" in rolled["reason"]
    assert promoted["override"]["forced"] is True
    assert "discrimination" in promoted["override"]["failed_gates"]
    assert promoted["gates"]["status"] == "failed"
    assert events[-1]["trigger"] == "pipeline"
    assert registry.version_tags(MODEL, "2")["churnops.override"] == "forced"
    listed = {v["version"]: v["status"] for v in json.loads(cli(home, "models", "list", "--json").stdout)}
    assert listed == {"1": "champion", "2": "retired"}


def test_approval_over_http_then_rollback(tmp_path: Path) -> None:
    """`gates.approval: required`: a version that passed waits (models list, /v1/models); approving it
    over HTTP makes it champion and serving follows; rollback goes back; both record the move."""
    settings = make_settings(tmp_path / "home")
    first = train(settings, customers(3000, seed=1, noise=0.2), tmp_path, "v1")  # a weak first model
    assert first["status"] == "champion", first["reason"]
    params = quick_params(gates={"approval": "required"})
    second = train(settings, customers(6000, seed=2, prefix="N"), tmp_path, "v2", params)
    assert second["status"] == "pending_approval", second["reason"]
    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root)
    assert registry.alias_version(MODEL, "champion") == "1"
    assert registry.alias_version(MODEL, "challenger") == "2"
    listed = {
        v["version"]: v["status"] for v in json.loads(cli(settings.home, "models", "list", "--json").stdout)
    }
    assert listed["2"] == "pending_approval"

    ids = pd.read_csv(tmp_path / "v1.csv")["customer_id"].head(3).tolist()
    served = Settings(churnops_home=settings.home, CHURNOPS_RELOAD_POLL_SECONDS=30)
    admin = make_key(served, "predict,admin", rate_limit="1000000/minute")
    reader = make_key(served, "predict", rate_limit="1000000/minute")
    with TestClient(serving_app(served), headers={"X-API-Key": admin.key}) as client:
        assert client.get("/v1/models").json()["pending_approval"] == ["2"]
        # Alias moves need the admin scope; the history is readable with predict.
        for path in ("/v1/models/2/approve", "/v1/models/rollback"):
            assert client.post(path, headers={"X-API-Key": reader.key}).status_code == 403
        assert client.get("/v1/models/history", headers={"X-API-Key": reader.key}).status_code == 200
        approved = client.post("/v1/models/2/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["outcome"] == "champion"
        assert approved.json()["from"] == "1"
        # This worker swapped at once (the poll interval is 30 s here).
        assert client.get("/v1/models").json()["champion"] == "2"
        assert client.post("/v1/predict", json={"customer_id": ids[0]}).json()["model"]["version"] == "2"
        assert client.get("/v1/models").json()["pending_approval"] == []
        again = client.post("/v1/models/2/approve")
        assert again.status_code == 200
        assert again.json()["outcome"] == "unchanged"
        not_pending = client.post("/v1/models/1/approve")
        assert not_pending.status_code == 409
        assert not_pending.json()["error"]["message"] == "v1 is not pending approval (status: retired)"
        back = client.post("/v1/models/rollback", json={"reason": "approved too early"})
        assert back.status_code == 200, back.text
        assert back.json()["version"] == "1"
        deadline = time.monotonic() + 5
        while client.get("/v1/models").json()["champion"] != "1" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/v1/models").json()["champion"] == "1"
        nowhere = client.post("/v1/models/rollback")
        assert nowhere.status_code == 409
        unknown = client.post("/v1/models/rollback", json={"to": "77"})
        assert unknown.status_code == 404
        events = client.get("/v1/models/history").json()["events"]
        moves = client.get("/dashboard/alias-moves").json()  # the dashboard's panel: real moves only
    shown = [(m["action"], m["from"], m["to"]) for m in moves[:2]]
    assert shown == [("rollback", "2", "1"), ("approve", "1", "2")]
    assert moves[0]["by"] == f"key:{admin.record.key_id}"
    assert "approved too early" in moves[0]["why"]
    assert all(m["from"] != m["to"] for m in moves)
    assert [(e["action"], e["from"], e["to"]) for e in events[:3]] == [
        ("models.rollback", "2", "1"),
        ("models.approve", "1", "2"),
        ("models.pending", "1", "2"),
    ]
    assert "approved too early" in events[0]["reason"]
    assert events[0]["principal"] == f"key:{admin.record.key_id}"  # who rolled back, and who approved
    assert events[1]["principal"] == f"key:{admin.record.key_id}"
    assert events[1]["gates"]["status"] == "pending_approval"

    # Promotion over HTTP (the service's own params: no approval): admin only; a failed gate is 409
    # naming it; `force` promotes anyway, recorded as an override with the failed gates.
    with TestClient(serving_app(served), headers={"X-API-Key": admin.key}) as client:
        refused = client.post("/v1/models/2/promote", json={"force": True}, headers={"X-API-Key": reader.key})
        assert refused.status_code == 403
        up = client.post("/v1/models/2/promote")
        assert up.status_code == 200, up.text
        assert (up.json()["outcome"], up.json()["from"]) == ("champion", "1")
        worse = client.post("/v1/models/1/promote")  # the weak v1 against v2 on rows neither trained on
        assert worse.status_code == 409
        assert worse.json()["error"]["message"].startswith("v1 refused: gate discrimination failed")
        assert client.get("/v1/models").json()["champion"] == "2"  # nothing moved
        forced = client.post("/v1/models/1/promote", json={"force": True, "reason": "incident 42: v1 back"})
        assert forced.status_code == 200, forced.text
        assert (forced.json()["outcome"], forced.json()["from"]) == ("champion", "2")
        assert client.get("/v1/models").json()["champion"] == "1"
        assert client.post("/v1/models/99/promote", json={"force": True}).status_code == 404
        assert client.post("/v1/models/2/promote", json={"force": "yes please"}).status_code == 422
        newest = client.get("/v1/models/history").json()["events"][0]
    assert (newest["action"], newest["from"], newest["to"]) == ("models.promote", "2", "1")
    assert newest["principal"] == f"key:{admin.record.key_id}"
    assert newest["override"]["forced"] is True
    assert "discrimination" in newest["override"]["failed_gates"]
    assert newest["reason"] == "incident 42: v1 back"
