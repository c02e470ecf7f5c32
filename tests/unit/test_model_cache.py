"""The per-version cache of compiled models: keyed by everything that identifies a version."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from churnops.core.bundle import ModelBundle
from churnops.core.candidates import LinearClassifier
from churnops.core.compiled import CompiledModel
from churnops.core.features import FeatureTransformer
from churnops.core.params import Params
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec
from churnops.io.model_cache import CompiledModelCache
from churnops.io.registry_lookup import VersionRecord

pytestmark = pytest.mark.unit

URI = "sqlite:////tmp/x/mlflow.db"
RECORD = VersionRecord("churn-synthetic", "3", "run1", 1_700_000_000_000, "models:/m-1", None)


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    spec = load_spec("synthetic")
    transformer = FeatureTransformer(spec, Params().features).fit(generate_customers(600, seed=3))
    n = transformer.n_outputs
    coef = np.random.default_rng(1).normal(size=n)
    classifier = LinearClassifier(mean=np.zeros(n), scale=np.ones(n), coef=coef, intercept=-1.0)
    return CompiledModel.from_bundle(ModelBundle(spec, transformer, classifier, 0.4, "logreg"))


def test_round_trip_scores_the_same(tmp_path: Path, compiled: CompiledModel) -> None:
    cache = CompiledModelCache(tmp_path)
    assert cache.get(URI, RECORD) is None
    assert cache.put(URI, RECORD, compiled) is not None
    loaded = cache.get(URI, RECORD)
    assert loaded is not None
    assert loaded.threshold == 0.4
    matrix = np.random.default_rng(0).normal(size=(50, compiled.transformer.n_outputs))
    np.testing.assert_array_equal(loaded.fast.score_batch(matrix)[0], compiled.fast.score_batch(matrix)[0])


@pytest.mark.parametrize(
    "change", [{"version": "4"}, {"run_id": "run2"}, {"created_ms": 1}, {"source": "models:/m-2"}]
)
def test_another_version_identity_misses(tmp_path: Path, compiled: CompiledModel, change: dict) -> None:
    cache = CompiledModelCache(tmp_path)
    cache.put(URI, RECORD, compiled)
    assert cache.get(URI, dataclasses.replace(RECORD, **change)) is None
    assert cache.get("sqlite:////elsewhere/mlflow.db", RECORD) is None


def test_unreadable_entry_is_dropped(tmp_path: Path, compiled: CompiledModel) -> None:
    cache = CompiledModelCache(tmp_path)
    path = cache.put(URI, RECORD, compiled)
    assert path is not None
    path.write_bytes(path.read_bytes()[:100])  # truncated by a crash or a full disk
    assert cache.get(URI, RECORD) is None
    assert not path.exists()


def test_unwritable_cache_only_costs_speed(tmp_path: Path, compiled: CompiledModel) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    assert CompiledModelCache(blocker / "cache").put(URI, RECORD, compiled) is None


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, compiled: CompiledModel) -> None:
    class Unpicklable(CompiledModel):
        def __reduce__(self) -> Any:
            raise pickle.PicklingError("cannot pickle this")

    bad = Unpicklable(compiled.spec, compiled.transformer, compiled.fast, 0.4, "logreg")
    assert CompiledModelCache(tmp_path).put(URI, RECORD, bad) is None
    assert list(tmp_path.iterdir()) == []
