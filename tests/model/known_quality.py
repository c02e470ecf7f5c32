"""Simulated models of known quality, scored against labels drawn from the true probabilities.

A customer has a true churn logit; a model's prediction is that logit plus its own error (larger
error = worse model: a model trained on fewer rows, or with a feature removed), and a
label-shuffled model's predictions are a random permutation (no information about the customer).
Labels come from the true probabilities, as the generator draws them.
"""

from __future__ import annotations

import numpy as np

# Error (sd on the logit) of each simulated model; AUCs measured on 2M rows in brackets.
QUALITY: dict[str, float | None] = {
    "trained-50k": 0.6,  # 0.763
    "trained-5k": 1.0,  # 0.729: the champion, control in the experiments
    "no-tenure": 1.15,  # 0.716
    "trained-1k": 1.4,  # 0.695
    "label-shuffled": None,  # 0.5
}


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def customers(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """True logits and labels drawn from them (about 29% churners)."""
    logit = rng.normal(-1.2, 1.3, n)
    return logit, (rng.random(n) < sigmoid(logit)).astype(np.int64)


def predict(rng: np.random.Generator, logit: np.ndarray, error: float | None) -> np.ndarray:
    """A model's probabilities for these customers (None: label-shuffled)."""
    p = sigmoid(logit + rng.normal(0.0, 1.0 if error is None else error, logit.size))
    return rng.permutation(p) if error is None else p


def labelled(rng: np.random.Generator, n: int, error: float | None) -> tuple[np.ndarray, np.ndarray]:
    """n fresh customers' labels and one model's predictions for them."""
    logit, y = customers(rng, n)
    return y, predict(rng, logit, error)
