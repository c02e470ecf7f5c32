"""The lifecycle loop as an Airflow DAG: one task per step, each calling the churnops CLI.

    bake -> plan -> ingest -> validate -> featurize -> train -> evaluate -> register -> record

- `bake` judges the bake after the last promotion (a breach rolls back on its own), then the
  trial under way when params.yaml `lifecycle.trial` asks for one (a breach rejects the
  candidate; a trial that held promotes it);
- `plan` checks the triggers of params.yaml `lifecycle:` and writes the retraining data into
  the run's own working directory; it exits 99 when nothing fired or a bake or trial is under
  way (Airflow skips the rest);
- the pipeline stages run on that working directory; `register` runs the promotion path
  (gates -> challenger -> champion, pending approval, in trial or rejected);
- `record` starts the trial of a candidate in trial and keeps the outcome as a `lifecycle.cycle`
  event, also when a stage failed (data that fails validation is recorded as rejected, with its
  report).

Airflow runs in its own virtualenv (`make airflow`: it needs an older FastAPI than the service);
the tasks call the churnops CLI of the service's environment: set CHURNOPS_BIN to its path
(default: `churnops` on PATH). CHURNOPS_HOME, DATABASE_URL, REDIS_URL and MLFLOW_TRACKING_URI reach
the tasks through the environment as for any churnops command; CHURNOPS_PROJECT_DIR is where the
tasks run (its params.yaml and the relative `lifecycle.new_data.glob` are read there). One run at a time
(`max_active_runs=1`); do not run `churnops lifecycle watch` against the same stores meanwhile.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

CHURNOPS = os.environ.get("CHURNOPS_BIN", "churnops")
SCHEDULE = os.environ.get("CHURNOPS_LIFECYCLE_SCHEDULE", "*/15 * * * *")
PROJECT_DIR = os.environ.get("CHURNOPS_PROJECT_DIR")  # None: Airflow's temporary directory
WORKDIR = '"${CHURNOPS_HOME:-.churnops}/runs/airflow-{{ ts_nodash }}"'
STEPS = {
    "bake": "lifecycle bake",
    "plan": f"lifecycle plan --workdir {WORKDIR}",
    "ingest": f"pipeline ingest --workdir {WORKDIR} --data {WORKDIR}/input.parquet --spec {WORKDIR}/spec.yaml",
    "validate": f"pipeline validate --workdir {WORKDIR}",
    "featurize": f"pipeline featurize --workdir {WORKDIR}",
    "train": f"pipeline train --workdir {WORKDIR}",
    "evaluate": f"pipeline evaluate --workdir {WORKDIR}",
    "register": f"pipeline register --workdir {WORKDIR}",
    "record": f"lifecycle record --workdir {WORKDIR}",
}

with DAG(
    dag_id="churnops_lifecycle",
    description="churnops: triggers -> retrain -> gates -> promote or reject; bake and rollback",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0, "execution_timeout": timedelta(hours=2)},
    tags=["churnops", "lifecycle"],
) as dag:
    tasks = {
        name: BashOperator(
            task_id=name,
            bash_command=f"{CHURNOPS} {command}",
            skip_on_exit_code=99,
            # The record runs whatever happened upstream (a failed stage is an outcome too), but not
            # when `plan` skipped the run: then there is nothing to record.
            trigger_rule="all_done" if name == "record" else "all_success",
            append_env=True,
            cwd=PROJECT_DIR,
        )
        for name, command in STEPS.items()
    }
    names = list(STEPS)
    for upstream, downstream in zip(names, names[1:], strict=False):
        tasks[upstream] >> tasks[downstream]
