"""Benchmark: generate 1,000,000 synthetic customers and write them to CSV.

Shared machines are noisy, so besides the absolute seconds it prints the ratio against a
reference measured in the same run: a 1M x 16 float matrix drawn with numpy and written
with pandas. Usage: `python bench/bench_generate.py [rows]`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from churnops.core.synthetic import generate_customers

T = TypeVar("T")

BUDGET_GENERATE_S = 5.0
BUDGET_TOTAL_S = 30.0


def timed(action: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def reference(rows: int, path: Path) -> tuple[float, float]:
    """Seconds to draw and to write a rows x 16 float matrix: the machine's speed today."""
    matrix, draw_s = timed(lambda: np.random.default_rng(0).random((rows, 16)))
    frame = pd.DataFrame(matrix, columns=[f"x{i}" for i in range(16)])
    _, write_s = timed(lambda: frame.to_csv(path, index=False))
    return draw_s, write_s


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ref_draw_s, ref_write_s = reference(rows, Path(tmp) / "reference.csv")
        frame, generate_s = timed(lambda: generate_customers(rows, seed=42))
        target = Path(tmp) / "customers.csv"
        _, write_s = timed(lambda: frame.to_csv(target, index=False))
        size_mb = target.stat().st_size / 1e6
    total_s = generate_s + write_s
    ref_total_s = ref_draw_s + ref_write_s
    print(f"rows                 {rows:,}  ({size_mb:.0f} MB of CSV)")
    line("generate", generate_s, rows, f"(budget {BUDGET_GENERATE_S} s)")
    line("write CSV", write_s, rows)
    line("generate + write", total_s, rows, f"(budget {BUDGET_TOTAL_S} s)")
    line("reference", ref_total_s, rows, f"(draw {ref_draw_s:.2f} s, write {ref_write_s:.2f} s)")
    print(f"ratio generate / reference draw+write   {generate_s / ref_total_s:6.2f}")
    print(f"ratio write / reference write           {write_s / ref_write_s:6.2f}")
    print(f"ratio generate+write / reference total  {total_s / ref_total_s:6.2f}")


def line(step: str, seconds: float, rows: int, note: str = "") -> None:
    print(f"{step:<20} {seconds:6.2f} s  {rows / seconds:12,.0f} rows/s  {note}".rstrip())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
