"""Benchmark: FastModel (numba tree walk + path attributions) against LightGBM's own predict.

Trains a 200-tree, 31-leaf LightGBM (one thread) through `fit_candidate` on 100,000 synthetic
customers transformed with the synthetic spec, then prints µs per row for one-row scoring
(`booster.predict`, `pred_contrib`, `FastModel.score_one`) and rows/s on a 1,000,000-row
matrix (`booster.predict` with its default threads vs `FastModel.score_batch` on 2 numba
threads). Usage: `python bench/bench_fast_model.py [train_rows]`.
"""

from __future__ import annotations

import sys
import time
import timeit
from collections.abc import Callable

import numba
import numpy as np

from churnops.core.candidates import LightGBMClassifier, TrainingData, fit_candidate
from churnops.core.fast_model import FastModel
from churnops.core.features import FeatureTransformer
from churnops.core.params import CandidateParams, Params
from churnops.core.synthetic import generate_customers
from churnops.io.datasets import load_spec

BATCH_ROWS = 1_000_000
CANDIDATE = CandidateParams(
    name="lightgbm",
    kind="lightgbm",
    params={"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 31, "num_threads": 1},
)


def per_row_us(score: Callable[[np.ndarray], object], rows: np.ndarray, seconds: float = 1.0) -> float:
    """Best-of-3 mean µs per call over distinct rows, about `seconds` per repeat."""

    def loop() -> None:
        for row in rows:
            score(row)

    once = timeit.timeit(loop, number=1)
    number = max(1, int(seconds / max(once, 1e-9)))
    return min(timeit.repeat(loop, number=number, repeat=3)) / (number * len(rows)) * 1e6


def rows_per_second(score: Callable[[], object], rows: int) -> float:
    best = min(timeit.repeat(score, number=1, repeat=2))
    return rows / best


def main(train_rows: int) -> None:
    started = time.perf_counter()
    spec = load_spec("synthetic")
    frame = generate_customers(train_rows, seed=42)
    transformer = FeatureTransformer(spec, Params().features).fit(frame)
    x = transformer.transform(frame)
    y = frame[spec.target.column].map(spec.is_positive).to_numpy(dtype=np.int_)
    empty = np.empty((0, x.shape[1]))
    trained = fit_candidate(CANDIDATE, TrainingData(x, y, empty, np.empty(0, np.int_)), float("inf"))
    classifier = trained.classifier
    assert isinstance(classifier, LightGBMClassifier)
    booster, best = classifier.booster, classifier.best_iteration
    fast = FastModel.build(classifier, transformer.output_sources, spec.feature_columns)
    fast.warm_up()
    print(
        f"model: {best} trees x 31 leaves, {x.shape[1]} outputs, {len(fast.raw_features)} raw features "
        f"(train {trained.seconds:.1f} s)"
    )

    rows = x[:1000]
    singles = x[:50]
    predict_us = per_row_us(lambda r: booster.predict(r.reshape(1, -1), num_iteration=best), rows)
    contrib_us = per_row_us(
        lambda r: booster.predict(r.reshape(1, -1), num_iteration=best, pred_contrib=True), singles, 0.5
    )
    fast_us = per_row_us(fast.score_one, rows)
    reasons_us = per_row_us(lambda r: fast.top_reasons(fast.score_one(r)[1]), rows)
    print("\none row (µs/row)")
    print(f"  booster.predict                {predict_us:9.1f}")
    print(f"  booster.predict pred_contrib   {contrib_us:9.1f}")
    print(
        f"  FastModel.score_one            {fast_us:9.1f}   ({predict_us / fast_us:.1f}x faster than predict)"
    )
    print(f"  score_one + top_reasons(3)     {reasons_us:9.1f}")

    matrix = np.ascontiguousarray(np.tile(x, (BATCH_ROWS // len(x) + 1, 1))[:BATCH_ROWS])
    reference = rows_per_second(lambda: booster.predict(matrix, num_iteration=best), len(matrix))
    numba.set_num_threads(2)
    batch = rows_per_second(lambda: fast.score_batch(matrix), len(matrix))
    _, contributions = fast.score_batch(matrix)
    reasons = rows_per_second(lambda: fast.top_reasons_batch(contributions), len(matrix))
    print(f"\n{len(matrix):,} rows (rows/s)")
    print(f"  booster.predict (default threads)        {reference:12,.0f}")
    print(f"  FastModel.score_batch (2 numba threads)  {batch:12,.0f}   ratio {batch / reference:.2f}")
    print(f"  FastModel.top_reasons_batch (k=3)        {reasons:12,.0f}")

    proba, contributions = fast.score_batch(x)
    raw = booster.predict(x, num_iteration=best, raw_score=True)
    print(
        f"\naccuracy on {len(x):,} rows: max |proba - predict| = "
        f"{np.abs(proba - classifier.predict_proba(x)).max():.1e}, "
        f"max |bias + sum(contrib) - raw| = {np.abs(fast.bias + contributions.sum(axis=1) - raw).max():.1e}"
    )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
