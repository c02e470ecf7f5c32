"""The lifecycle's new-data trigger leaves a file alone while it is still being written."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from churnops.core.lifecycle_params import NewDataTrigger
from churnops.jobs.retrain_data import find_new_data

NOTHING_SEEN = cast(Any, SimpleNamespace(state=SimpleNamespace(get=lambda key: None)))


def test_a_file_changed_within_the_settle_time_waits_for_a_later_cycle(tmp_path: Path) -> None:
    written = tmp_path / "2026-12.csv"
    written.write_text("customer_id,churn\n")  # a copy that has just started
    trigger = NewDataTrigger(glob=str(tmp_path / "*.csv"), settle="10s")
    assert find_new_data(NOTHING_SEEN, trigger, tmp_path) == []
    quiet = time.time() - 11
    os.utime(written, (quiet, quiet))  # unchanged for longer than `settle`: complete
    assert [n.label for n in find_new_data(NOTHING_SEEN, trigger, tmp_path)] == ["2026-12.csv"]


def test_settle_zero_takes_a_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("customer_id,churn\n")
    trigger = NewDataTrigger(glob=str(tmp_path / "*.csv"), settle="0s")
    assert [n.label for n in find_new_data(NOTHING_SEEN, trigger, tmp_path)] == ["a.csv"]
