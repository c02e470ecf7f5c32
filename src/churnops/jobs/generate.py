"""Generate synthetic customers to a CSV or Parquet file."""

from __future__ import annotations

import logging
from pathlib import Path

from churnops.core.synthetic import CONCEPT_DRIFT_SCENARIOS, DRIFT_SCENARIOS, generate_customers, oracle_auc
from churnops.errors import ConfigError
from churnops.io.datasets import write_table

logger = logging.getLogger(__name__)


def generate(rows: int, seed: int, out: Path, drift: str | None = None) -> dict[str, float | int | str]:
    """Write `rows` synthetic customers (with the `true_churn_probability` side column) to `out`."""
    known = (*DRIFT_SCENARIOS, *CONCEPT_DRIFT_SCENARIOS)
    if drift is not None and drift not in known:
        raise ConfigError(f"unknown drift scenario {drift!r}; known: {', '.join(known)}")
    frame = generate_customers(rows, seed, drift)
    write_table(frame, out)
    summary: dict[str, float | int | str] = {
        "rows": rows,
        "out": str(out),
        "churn_rate": float((frame["churn"] == "Yes").mean()),
        "oracle_auc": oracle_auc(frame),
        "drift": drift or "none",
    }
    logger.info("generated %d customers (churn rate %.3f) to %s", rows, summary["churn_rate"], out)
    return summary
