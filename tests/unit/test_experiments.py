"""Experiment definitions: DESIGN.md's YAML parses, 8+ arms work, every broken rule names its field."""

from __future__ import annotations

import json

import pytest

from churnops.core.experiments import (
    MAX_ARMS,
    ExperimentDefinitionError,
    parse_experiment,
    parse_experiment_text,
)
from churnops.errors import InvalidRequest

pytestmark = pytest.mark.unit

DESIGN_YAML = """
name: q1-models
mode: fixed                  # or bandit
primary_metric: log_loss     # brier | profit | auc
alpha: 0.05
arms:                        # model: defaults to the served model name
  - {name: control, version: "3", weight: 40, control: true}
  - {name: lgbm-4, version: "4", weight: 15}
shadows:
  - {name: xgb-5, version: "5", sample: 0.1}
"""


def arms(*weights: float) -> list[dict[str, object]]:
    return [
        {"name": f"arm{i}", "version": str(i + 1), "weight": w, **({"control": True} if i == 0 else {})}
        for i, w in enumerate(weights)
    ]


def test_design_yaml_parses() -> None:
    d = parse_experiment_text(DESIGN_YAML)
    assert d.name == "q1-models"
    assert d.control.name == "control"
    assert d.weights() == {"control": 40.0, "lgbm-4": 15.0}
    assert d.shadows[0].sample == pytest.approx(0.1)
    assert d.effective_salt == "q1-models"  # salt defaults to the name
    assert d.lower_is_better
    assert d.arms[0].model is None  # the served model name


def test_json_body_parses_the_same() -> None:
    from_yaml = parse_experiment_text(DESIGN_YAML)
    assert parse_experiment(json.loads(from_yaml.model_dump_json())) == from_yaml
    assert parse_experiment_text(from_yaml.model_dump_json()) == from_yaml


def test_eight_and_more_arms() -> None:
    d = parse_experiment({"name": "many", "arms": arms(30, *[10] * 7), "mode": "bandit"})
    assert len(d.arms) == 8
    assert len(parse_experiment({"name": "max", "arms": arms(*[1] * MAX_ARMS)}).arms) == MAX_ARMS


def test_integer_versions_and_relative_weights() -> None:
    d = parse_experiment({"name": "x", "arms": [
        {"name": "a", "version": 3, "weight": 0.4, "control": True},
        {"name": "b", "version": "12", "weight": 0.6, "model": "churn-other"},
    ]})  # fmt: skip
    assert d.arms[0].version == "3"
    assert d.arms[1].model == "churn-other"


def test_with_weights_revalidates() -> None:
    d = parse_experiment({"name": "x", "arms": arms(40, 30, 30)})
    moved = d.with_weights({"arm0": 35, "arm1": 35, "arm2": 30})
    assert moved.weights() == {"arm0": 35.0, "arm1": 35.0, "arm2": 30.0}
    with pytest.raises(ExperimentDefinitionError, match="weights: must name every arm"):
        d.with_weights({"arm0": 1})
    with pytest.raises(ExperimentDefinitionError, match=r"arms\[1\].weight"):
        d.with_weights({"arm0": 1, "arm1": -1, "arm2": 1})


SHADOW_ARM1 = [{"name": "arm1", "version": "5", "sample": 0.1}]
SHADOW_WIDE = [{"name": "s", "version": "5", "sample": 1.5}]
BAD = [
    ({"arms": arms(40, -1)}, "arms[1].weight", "greater than or equal to 0, got -1"),
    ({"arms": arms(0, 0)}, "arms", "weights must sum to a positive total"),
    ({"arms": arms(0, 10)}, "arms[0].weight", "control arm needs a weight above 0"),
    ({"arms": [*arms(1, 1), {"name": "arm1", "version": "9", "weight": 1}]}, "arms[2].name", "used twice"),
    ({"arms": [{**a, "control": False} for a in arms(1, 1)]}, "arms", "no arm is marked control"),
    ({"arms": [{**a, "control": True} for a in arms(1, 1)]}, "arms", "2 arms are marked control"),
    ({"arms": arms(1)}, "arms", "needs a control and 1 to"),
    ({"arms": arms(*[1] * (MAX_ARMS + 1))}, "arms", "needs a control and 1 to"),
    ({"arms": [{**arms(1)[0], "version": "champion"}, *arms(1, 1)[1:]]}, "arms[0].version", "not an alias"),
    ({"arms": [{**arms(1)[0], "version": True}, *arms(1, 1)[1:]]}, "arms[0].version", "version number"),
    ({"arms": [{**arms(1)[0], "colour": "red"}, *arms(1, 1)[1:]]}, "arms[0].colour", "Extra inputs"),
    ({"arms": arms(1, 1), "shadows": SHADOW_ARM1}, "shadows[0].name", "twice"),
    ({"arms": arms(1, 1), "shadows": SHADOW_WIDE}, "shadows[0].sample", "1"),
    ({"arms": arms(1, 1), "mode": "greedy"}, "mode", "'fixed' or 'bandit'"),
    ({"arms": arms(1, 1), "primary_metric": "accuracy"}, "primary_metric", "'log_loss'"),
    ({"arms": arms(1, 1), "alpha": 0}, "alpha", "greater than 0"),
    ({"arms": arms(1, 1), "min_labels_per_arm": 5}, "min_labels_per_arm", "30"),
    ({"arms": arms(*[1] * 8), "mode": "bandit", "bandit_floor": 0.2}, "bandit_floor", "exceeds all traffic"),
    ({"arms": arms(1, 1), "max_labels_per_arm": 100}, "max_labels_per_arm", "min_labels_per_arm"),
    ({"arms": arms(1, 1), "name": "no spaces"}, "name", "letters, digits"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field", "words"), BAD)
def test_bad_definitions_name_the_field(change: dict[str, object], field: str, words: str) -> None:
    raw = {"name": "exp", **change}
    with pytest.raises(ExperimentDefinitionError) as caught:
        parse_experiment(raw, source="exp.yaml")
    message = str(caught.value)
    assert message.startswith(f"exp.yaml: {field}: "), message
    assert words in message
    assert caught.value.field == field
    assert "\n" not in message
    assert isinstance(caught.value, InvalidRequest)  # 422 over HTTP


def test_malformed_text() -> None:
    with pytest.raises(ExperimentDefinitionError, match=r"bad\.yaml: not valid YAML at line 2 ") as caught:
        parse_experiment_text("name: x\n  arms: 1\n", source="bad.yaml")
    assert caught.value.malformed
    with pytest.raises(ExperimentDefinitionError, match="expected a mapping, got list"):
        parse_experiment_text("- 1\n")
