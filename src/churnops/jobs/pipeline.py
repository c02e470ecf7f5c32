"""The whole pipeline in one process: ingest -> validate -> featurize -> train -> evaluate -> register."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.core.params import Params
from churnops.core.spec import DatasetSpec
from churnops.io.offline_store import SqlOfflineStore, open_offline_store
from churnops.jobs.registry_access import registry_for
from churnops.jobs.workdir import Workdir
from churnops.settings import Settings

logger = logging.getLogger(__name__)

STAGES = ("ingest", "validate", "featurize", "train", "evaluate", "register")
StageHook = Callable[[str, str], None]  # (stage, event) with event in {"start", "done", "detail:..."}


def default_workdir(settings: Settings) -> Workdir:
    """Where the DVC stages hand files to each other (one fixed directory)."""
    return Workdir(settings.home / "pipeline")


def run_workdir(settings: Settings, kind: str = "pipeline") -> Workdir:
    """A working directory of its own for one run (`$CHURNOPS_HOME/runs/<kind>-<time>-<random>`):
    two runs never overwrite each other, and a registered version's evaluation rows stay with it."""
    import secrets
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    root = settings.ensure_home() / "runs" / f"{kind}-{stamp}-{secrets.token_hex(3)}"
    root.mkdir(parents=True)
    return Workdir(root)


@contextmanager
def offline_store(settings: Settings) -> Iterator[SqlOfflineStore]:
    if settings.offline_store_url.startswith("sqlite"):
        settings.ensure_home()
    store = open_offline_store(settings.offline_store_url)
    try:
        yield store
    finally:
        store.close()


def privacy_filter(settings: Settings) -> Callable[[pd.Series], Any] | None:
    """Keep-mask over customer ids that leaves out opted-out and erased customers (None: nobody is)."""
    from churnops.core.ledger import pseudonym
    from churnops.io.secrets import load_secrets
    from churnops.jobs.privacy import excluded_subjects

    with offline_store(settings):  # creates the embedded home and database when missing
        excluded = excluded_subjects(settings)
    if not excluded:
        return None
    key = load_secrets(settings).pseudonym_key

    def keep(ids: pd.Series) -> Any:
        return np.fromiter((pseudonym(key, str(i)) not in excluded for i in ids), dtype=bool, count=len(ids))

    return keep


def run_stage(
    stage: str,
    workdir: Workdir,
    params: Params,
    settings: Settings,
    data: Path | None = None,
    spec: DatasetSpec | None = None,
    hook: StageHook | None = None,
    *,
    trigger: str = "pipeline",
    principal: str | None = None,
) -> Any:
    """Run one stage (the unit DVC calls); inputs come from the workdir. `trigger` and `principal`
    are recorded with the registration's lifecycle event."""
    from churnops.jobs import evaluate, featurize, ingest, register, train, validate

    if stage == "ingest":
        if data is None or spec is None:
            raise ValueError("ingest needs --data and --spec")
        return ingest.ingest(data, spec, workdir, privacy_filter(settings))
    if stage == "validate":
        return validate.validate(workdir, params.validation, settings.ensure_home())
    if stage == "featurize":
        with offline_store(settings) as store:
            return featurize.featurize(workdir, params, store)
    if stage == "train":
        detail = (lambda text: hook(stage, f"detail:{text}")) if hook else None
        warm = train.warm_start_for(settings, workdir, params.training)
        return train.train(workdir, params.training, detail, warm)
    if stage == "evaluate":
        return evaluate.evaluate(workdir, params)
    if stage == "register":
        return register.register(
            workdir, params, settings, registry_for(settings), trigger=trigger, principal=principal
        )
    raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")


def run_pipeline(
    data: Path,
    spec: DatasetSpec,
    params: Params,
    settings: Settings,
    workdir: Workdir,
    hook: StageHook | None = None,
    *,
    trigger: str = "pipeline",
    principal: str | None = None,
) -> dict[str, Any]:
    """Run every stage in order; the first failure stops everything downstream."""
    results: dict[str, Any] = {}
    for stage in STAGES:
        started = time.perf_counter()
        if hook:
            hook(stage, "start")
        results[stage] = run_stage(
            stage, workdir, params, settings, data, spec, hook, trigger=trigger, principal=principal
        )
        logger.info("stage %s done in %.1f s", stage, time.perf_counter() - started)
        if hook:
            hook(stage, "done")
    return results
