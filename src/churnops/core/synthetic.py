"""Synthetic telco customers with a known true churn probability, plus drifted variants.

The population is drawn column by column with numpy (no loop over rows) as integer
codes and numbers, then turned into the string columns of `specs/synthetic.yaml`.
The churn label is a Bernoulli draw from `churn_probability(frame)`, a deterministic
function of the observed columns only, so a perfect model could recover it: the
side column `true_churn_probability` gives the oracle AUC a trained model is judged
against. Drift scenarios change the population before the label is drawn; the
label always follows the same, consistent probability. The concept-drift scenario
(CONCEPT_DRIFT_SCENARIOS) is the opposite: the same customers, drawn exactly as on
clean data, churn by a different mechanism (`concept_drift_probability`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

DRIFT_SCENARIOS: tuple[str, ...] = ("price_increase", "encoding_change", "new_segment")
# Same features, another churn mechanism: kept apart because `churn_probability` no longer holds.
CONCEPT_DRIFT_SCENARIOS: tuple[str, ...] = ("concept_drift",)

# The allowed values on clean data, i.e. the reference for validation. Yes/No columns list
# "No" first so that a boolean drawn with numpy indexes its label directly.
_YES_NO = ("No", "Yes")
CATEGORIES: dict[str, tuple[str, ...]] = {
    "gender": ("Female", "Male"),
    "region": ("North", "South", "East", "West", "Central"),
    "contract": ("Month-to-month", "One year", "Two year"),
    "payment_method": ("Electronic check", "Mailed check", "Bank transfer", "Credit card"),
    "internet_service": ("DSL", "Fiber optic", "No"),
    "tech_support": _YES_NO,
    "online_security": _YES_NO,
    "streaming": _YES_NO,
    "paperless_billing": _YES_NO,
    "partner": _YES_NO,
}

# The order of `DatasetSpec.columns` for specs/synthetic.yaml, then the side column.
_NUMERICAL = ("age", "tenure_months", "monthly_charges", "total_charges", "support_calls", "num_services")
_COLUMNS = ("customer_id", *_NUMERICAL, *CATEGORIES, "churn", "true_churn_probability")

_FIBER, _NO_INTERNET = 1, 2  # codes into CATEGORIES["internet_service"]
_OFFSHORE = "Offshore"
_OFFSHORE_SHARE = 0.08
_MISSING_TOTAL_SHARE = 0.003  # billing exports lose a few totals

Array = NDArray[Any]
Population = dict[str, Array]

# --- churn mechanics: log-odds contributions of the observed columns -------------------------
_INTERCEPT = -1.2  # calibrated for a ~26% churn rate on clean data
_MONTH_TO_MONTH = ("Month-to-month", "M2M")  # "M2M": the spelling after the encoding_change drift
_CONTRACT_EFFECT = {"Month-to-month": 1.2, "M2M": 1.2, "One year": 0.35, "Two year": -0.35}
_REGION_EFFECT = {"North": 0.0, "South": 0.15, "East": -0.1, "West": 0.05, "Central": -0.05, _OFFSHORE: 1.0}
_YES_EFFECT = {  # effect of "Yes" in a Yes/No column
    "tech_support": -0.45,
    "online_security": -0.4,
    "partner": -0.3,
    "paperless_billing": 0.15,
}


def generate_customers(rows: int, seed: int, drift: str | None = None) -> pd.DataFrame:
    """Draw `rows` synthetic customers, deterministic per (rows, seed, drift).

    Columns are those of specs/synthetic.yaml in spec order, plus `true_churn_probability`,
    the probability each `churn` label was drawn from. With `drift` (one of
    DRIFT_SCENARIOS) the same customers are drawn, then changed before labelling; with
    "concept_drift" the same customers are labelled by `concept_drift_probability`.
    """
    _check_arguments(rows, seed, drift)
    rng = np.random.default_rng(seed)
    population = _draw_population(rng, rows)
    # Drawn before any drift so that a scenario relabels the same customers with the same luck.
    label_draw = rng.random(rows)
    labels = dict(CATEGORIES)
    if drift in DRIFT_SCENARIOS:
        drift_rng = np.random.default_rng([seed, 1 + DRIFT_SCENARIOS.index(drift)])
        _apply_drift(drift, population, labels, drift_rng)
    frame = _to_frame(population, labels)
    probability = concept_drift_probability(frame) if drift == "concept_drift" else churn_probability(frame)
    frame["churn"] = np.where(label_draw < probability, "Yes", "No")
    frame["true_churn_probability"] = probability
    return frame.loc[:, list(_COLUMNS)]


def churn_probability(frame: pd.DataFrame) -> NDArray[np.float64]:
    """The true churn probability of each row, a deterministic function of its observed columns.

    Accepts the generator's columns (clean or drifted); raises ValueError on a
    categorical value the mechanics do not know.
    """
    contract = _effect(frame, "contract", _CONTRACT_EFFECT)
    month_to_month = frame["contract"].isin(_MONTH_TO_MONTH).to_numpy(dtype=float)
    fiber = _equals(frame, "internet_service", "Fiber optic")
    tenure = frame["tenure_months"].to_numpy(dtype=float)
    logit = (
        _INTERCEPT
        + contract
        - 0.45 * np.log1p(tenure)  # churn risk fades fast over the first year, then slowly
        + 0.025 * (frame["monthly_charges"].to_numpy(dtype=float) - 65.0)
        + 0.45 * fiber
        + 0.35 * month_to_month * fiber  # fiber customers without commitment leave most
        + 0.4 * _equals(frame, "payment_method", "Electronic check")
        + 0.22 * frame["support_calls"].to_numpy(dtype=float)
        + 0.012 * (frame["age"].to_numpy(dtype=float) - 45.0)
        + _effect(frame, "region", _REGION_EFFECT)
    )
    for column, effect in _YES_EFFECT.items():
        logit = logit + effect * _equals(frame, column, "Yes")
    return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)


def concept_drift_probability(frame: pd.DataFrame) -> NDArray[np.float64]:
    """The churn probability after a change of mechanism, with the same overall churn rate.

    A competitor's fiber offer: fiber customers leave whatever their contract; commitment
    and tenure protect half as much, price matters less, and support calls now mark engaged
    customers rather than angry ones. A model trained on clean data still ranks customers
    better than chance (AUC ~0.76 against ~0.83 before) but its probabilities are off.
    """
    contract = _effect(frame, "contract", _CONCEPT_CONTRACT_EFFECT)
    tenure = frame["tenure_months"].to_numpy(dtype=float)
    logit = (
        _CONCEPT_INTERCEPT
        + contract
        - 0.2 * np.log1p(tenure)
        + 0.01 * (frame["monthly_charges"].to_numpy(dtype=float) - 65.0)
        + 1.6 * _equals(frame, "internet_service", "Fiber optic")
        + 0.4 * _equals(frame, "payment_method", "Electronic check")
        - 0.15 * frame["support_calls"].to_numpy(dtype=float)
        + 0.012 * (frame["age"].to_numpy(dtype=float) - 45.0)
        + _effect(frame, "region", _REGION_EFFECT)
    )
    for column, effect in _YES_EFFECT.items():
        logit = logit + effect * _equals(frame, column, "Yes")
    return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)


def oracle_auc(frame: pd.DataFrame) -> float:
    """ROC AUC of the true probability against the drawn labels: the best a model can expect."""
    from sklearn.metrics import roc_auc_score  # lazy: keeps `data generate` start-up light

    return float(roc_auc_score(frame["churn"].eq("Yes"), frame["true_churn_probability"]))


def _check_arguments(rows: int, seed: int, drift: str | None) -> None:
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    known = (*DRIFT_SCENARIOS, *CONCEPT_DRIFT_SCENARIOS)
    if drift is not None and drift not in known:
        raise ValueError(f"unknown drift scenario {drift!r}; known: {', '.join(known)}")


def _equals(frame: pd.DataFrame, column: str, value: str) -> NDArray[np.float64]:
    return np.asarray(frame[column].eq(value).to_numpy(dtype=float), dtype=np.float64)


def _effect(frame: pd.DataFrame, column: str, effects: Mapping[str, float]) -> NDArray[np.float64]:
    values = frame[column].map(effects)
    if values.isna().any():
        unknown = sorted(set(frame[column][values.isna()].astype(str)))
        raise ValueError(f"{column}: no churn effect for value(s) {unknown[:5]}")
    return np.asarray(values.to_numpy(dtype=float), dtype=np.float64)


# After the concept drift (same churn rate as clean data, ~26%).
_CONCEPT_INTERCEPT = -1.4
_CONCEPT_CONTRACT_EFFECT = {"Month-to-month": 0.6, "M2M": 0.6, "One year": 0.2, "Two year": -0.2}


# --- population --------------------------------------------------------------------------------
def _draw_population(rng: np.random.Generator, rows: int) -> Population:
    """Every observed column but the label, categorical ones as codes into CATEGORIES."""
    population = _draw_demographics(rng, rows)
    population.update(_draw_account(rng, rows))
    population.update(_draw_services(rng, population["contract"]))
    population.update(_draw_billing(rng, population))
    return population


def _draw_demographics(rng: np.random.Generator, rows: int) -> Population:
    age = np.clip(np.rint(rng.normal(45.0, 15.0, rows)), 18, 85).astype(np.int64)
    # Partners are more common with age: 30% at 18, 70% from about 85.
    partner_share = np.clip(0.3 + 0.006 * (age - 18), 0.0, 0.7)
    return {
        "age": age,
        "gender": rng.integers(0, 2, rows),
        "region": rng.choice(5, size=rows, p=[0.22, 0.2, 0.2, 0.18, 0.2]),
        "partner": rng.random(rows) < partner_share,
    }


def _draw_account(rng: np.random.Generator, rows: int) -> Population:
    contract = rng.choice(3, size=rows, p=[0.55, 0.21, 0.24])
    # Committed customers pay by bank or card more, month-to-month ones by electronic check.
    payment_table = np.array([[0.45, 0.2, 0.18, 0.17], [0.2, 0.22, 0.29, 0.29], [0.1, 0.22, 0.34, 0.34]])
    payment = _draw_conditional(rng, contract, payment_table)
    paperless_share = np.where(payment == 0, 0.75, 0.55)
    return {
        "contract": contract,
        "payment_method": payment,
        "paperless_billing": rng.random(rows) < paperless_share,
        "tenure_months": _draw_tenure(rng, contract),
    }


def _draw_tenure(rng: np.random.Generator, contract: Array) -> Array:
    """Months with the company: longer contracts, longer tenure; a few brand-new customers."""
    shape = np.array([0.9, 2.0, 3.0])[contract]
    scale = np.array([18.0, 14.0, 14.0])[contract]
    offset = np.array([0.0, 6.0, 18.0])[contract]
    tenure = np.clip(np.rint(offset + rng.gamma(shape, scale)), 1, 72).astype(np.int64)
    tenure[rng.random(contract.size) < 0.01] = 0
    return tenure


def _draw_services(rng: np.random.Generator, contract: Array) -> Population:
    rows = contract.size
    internet_table = np.array([[0.28, 0.55, 0.17], [0.38, 0.38, 0.24], [0.4, 0.27, 0.33]])
    internet = _draw_conditional(rng, contract, internet_table)
    online = internet != _NO_INTERNET
    # Add-ons need internet; committed customers buy more of them.
    tech = online & (rng.random(rows) < np.array([0.25, 0.4, 0.55])[contract])
    security = online & (rng.random(rows) < np.array([0.28, 0.42, 0.55])[contract])
    streaming = online & (rng.random(rows) < 0.5)
    # Everyone subscribes to something: customers without internet have the phone line.
    phone = ~online | (rng.random(rows) < 0.88)
    services = phone.astype(np.int64) + online + tech + security + streaming
    return {
        "internet_service": internet,
        "tech_support": tech,
        "online_security": security,
        "streaming": streaming,
        "phone": phone,
        "num_services": services,
    }


def _draw_billing(rng: np.random.Generator, population: Population) -> Population:
    rows = population["age"].size
    internet = population["internet_service"]
    monthly = (
        20.0 * population["phone"]
        + np.array([25.0, 50.0, 0.0])[internet]
        + 6.0 * population["tech_support"]
        + 6.0 * population["online_security"]
        + 12.0 * population["streaming"]
        + rng.normal(0.0, 2.5, rows)  # promotions and one-off fees
    )
    monthly = np.round(np.maximum(monthly, 15.0), 2)
    # Fiber is the troubled product; support helps customers without calling in.
    calls_rate = (
        0.6 + 0.8 * (internet == _FIBER) + 0.7 * ((internet != _NO_INTERNET) & ~population["tech_support"])
    )
    return {
        "monthly_charges": monthly,
        "total_charges": _draw_total(rng, population["tenure_months"], monthly),
        "support_calls": rng.poisson(calls_rate).astype(np.int64),
    }


def _draw_total(rng: np.random.Generator, tenure: Array, monthly: Array) -> Array:
    """Tenure × monthly with noise for price changes; new customers billed nothing or one month."""
    rows = tenure.size
    total: Array = tenure * monthly * rng.normal(1.0, 0.03, rows)
    new = tenure == 0
    total[new] = np.where(rng.random(int(new.sum())) < 0.5, 0.0, monthly[new])
    total = np.round(np.maximum(total, 0.0), 2)
    total[rng.random(rows) < _MISSING_TOTAL_SHARE] = np.nan
    return total


def _draw_conditional(rng: np.random.Generator, parent: Array, table: NDArray[np.float64]) -> Array:
    """One category per row, from the probability row of `table` its parent category picks."""
    cumulative = np.cumsum(table, axis=1)[parent, :-1]
    codes: Array = (rng.random(parent.size)[:, None] > cumulative).sum(axis=1)
    return codes


# --- drift ----------------------------------------------------------------------------------
def _apply_drift(
    drift: str, population: Population, labels: dict[str, tuple[str, ...]], rng: np.random.Generator
) -> None:
    """Change the population (or the labels of its codes) in place for one drift scenario."""
    if drift == "price_increase":
        _increase_fiber_prices(population, rng)
    elif drift == "encoding_change":
        # A silent upstream recoding: same customers, same risk, a new spelling.
        labels["contract"] = ("M2M", *CATEGORIES["contract"][1:])
    else:
        labels["region"] = (*CATEGORIES["region"], _OFFSHORE)
        offshore = rng.random(population["region"].size) < _OFFSHORE_SHARE
        population["region"] = np.where(offshore, len(CATEGORIES["region"]), population["region"])


def _increase_fiber_prices(population: Population, rng: np.random.Generator) -> None:
    """Fiber customers pay 15-25% more; totals follow, churn risk rises through monthly_charges."""
    fiber = population["internet_service"] == _FIBER
    factor = np.where(fiber, rng.uniform(1.15, 1.25, fiber.size), 1.0)
    population["monthly_charges"] = np.round(population["monthly_charges"] * factor, 2)
    population["total_charges"] = np.round(population["total_charges"] * factor, 2)


# --- frame ----------------------------------------------------------------------------------
def _to_frame(population: Population, labels: Mapping[str, tuple[str, ...]]) -> pd.DataFrame:
    """The observed columns: numbers as drawn, codes turned into their string labels."""
    rows = population["age"].size
    width = max(7, len(str(rows)))
    columns: dict[str, Any] = {
        "customer_id": "C" + pd.Series(np.arange(1, rows + 1)).astype(str).str.zfill(width)
    }
    columns.update({name: population[name] for name in _NUMERICAL})
    for name, values in labels.items():
        columns[name] = pd.array(
            np.asarray(values, dtype=object)[population[name].astype(np.intp)], dtype="str"
        )
    return pd.DataFrame(columns)
