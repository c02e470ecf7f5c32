# One task vocabulary for developers, hooks and CI.
VENV    ?= .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
PYTHON  ?= python3
STAMP   := $(VENV)/.installed
# Airflow lives in a virtualenv of its own: 3.3 needs fastapi < 0.137, the service a newer one.
AIRFLOW_VENV    ?= .venv-airflow
AIRFLOW_VERSION ?= 3.3.2
AIRFLOW_STAMP   := $(AIRFLOW_VENV)/.installed

.PHONY: install airflow demo test lint security typecheck unit integration bench clean alerts

install: $(STAMP)

# uv installs the stack in seconds where pip takes a minute; plain pip is the fallback.
# Bytecode is compiled at install time: with PYTHONDONTWRITEBYTECODE set (as on these machines)
# every process would otherwise recompile MLflow, pandas and sklearn from source (~10 s per CLI call).
$(STAMP): pyproject.toml
	@if $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv >/dev/null 2>&1; then \
		$(PYTHON) -m uv venv -q --allow-existing -p $(PYTHON) $(VENV) && \
		$(PYTHON) -m uv pip install -q --compile-bytecode -p $(PY) -e '.[serve,dev]'; \
	else \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q -e '.[serve,dev]'; \
	fi
	@$(PY) -m compileall -q src >/dev/null
	@touch $(STAMP)

airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): Makefile
	$(PYTHON) -m uv venv -q --allow-existing -p $(PYTHON) $(AIRFLOW_VENV)
	$(PYTHON) -m uv pip install -q --compile-bytecode -p $(AIRFLOW_VENV)/bin/python \
		"apache-airflow==$(AIRFLOW_VERSION)" "fastapi<0.137"
	@touch $(AIRFLOW_STAMP)

demo: install
	$(BIN)/churnops demo

test: install airflow lint security alerts
	$(BIN)/pytest -q

# Alert rules: syntax (`promtool check rules`) and one unit test per rule (`promtool test rules`).
# promtool ships in Debian's `prometheus` package (.ci/run installs it when missing).
alerts:
	@command -v promtool >/dev/null || { echo "promtool missing: apt-get install prometheus"; exit 1; }
	promtool check rules monitoring/alerts.yml
	promtool test rules monitoring/tests/alerts_test.yml

# bandit over src/: medium and high findings fail the build; each accepted one carries a
# `# nosec BXXX` with its reason on the line above (pickles this pipeline wrote itself, SQL
# built from module constants with bound parameters).
security: install
	$(BIN)/bandit -q -r src -ll

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest -q -m "unit and not slow"

integration: install airflow
	$(BIN)/pytest -q -m integration

bench: install
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .churnops .pytest_cache .mypy_cache .ruff_cache
