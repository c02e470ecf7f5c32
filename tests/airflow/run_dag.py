"""Run dags/churnops_lifecycle.py once with `dag.test()`, inside Airflow's own virtualenv.

Prints one JSON line: {"state": <dag run state>, "tasks": {task_id: state}}. Called by
tests/integration/test_airflow_dag.py; AIRFLOW_HOME must point at a throwaway directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "churnops_lifecycle.py"


def main() -> None:
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILE.parent)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    import importlib.util

    spec = importlib.util.spec_from_file_location("churnops_lifecycle", DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.dag.test()
    tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print(json.dumps({"state": str(run.state), "tasks": tasks}))


if __name__ == "__main__":
    main()
