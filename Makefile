# The churn-risk pipeline. `make train` and `make test` do all the set-up themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
# configs/retail.yaml trains on the simulated retail purchase log in data/retail
BUSINESS ?= $(if $(filter retail.yaml,$(notdir $(CONFIG))),retail,subscription)
DEMO_DIR ?= $(if $(filter retail,$(BUSINESS)),data/retail,data/demo)
DEMO_SOURCES := pipeline/demo.py $(if $(filter retail,$(BUSINESS)),pipeline/demo_retail.py)
DEMO_CUSTOMERS ?= 20000
DEMO_SEED ?= 42
STAMP := $(VENV)/.installed
DEMO_STAMP := $(DEMO_DIR)/.built-$(DEMO_CUSTOMERS)-$(DEMO_SEED)

.PHONY: help setup demo-data train score export kpis report run test lint format bench bench-scale mlflow-ui lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install the pinned project (requirements.lock)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "Python 3.11 is required (found $$($(PYTHON) --version)); set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3" "setuptools==80.9.0"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo-data: $(DEMO_STAMP) ## Generate the simulated log into data/demo (data/retail for CONFIG=configs/retail.yaml)

$(DEMO_STAMP): $(STAMP) $(DEMO_SOURCES)
	$(BIN)/churn demo-data --business $(BUSINESS) --out $(DEMO_DIR) --customers $(DEMO_CUSTOMERS) --seed $(DEMO_SEED)
	@rm -f $(DEMO_DIR)/.built-* && touch $(DEMO_STAMP)

train: demo-data ## Set up, build demo data, train, track in MLflow, export the champion to models/
	$(BIN)/churn train --config $(CONFIG)

score: setup ## Score the whole customer base with the champion
	$(BIN)/churn score --config $(CONFIG)

export: setup ## At-risk lists per CS owner from the latest scores
	$(BIN)/churn export --config $(CONFIG)

kpis: setup ## Retention KPIs (CRR, churn rate, NDR, CLV, cohorts)
	$(BIN)/churn kpis --config $(CONFIG)

report: setup ## Self-contained HTML report of the latest runs
	$(BIN)/churn report --config $(CONFIG)

run: setup ## The daily job: score, export, monitor, report into outputs/<project>/runs/<as_of>/ (AS_OF=YYYY-MM-DD)
	$(BIN)/churn run --config $(CONFIG) $(if $(AS_OF),--as-of $(AS_OF)) $(if $(FAIL_ON_ALERT),--fail-on-alert)

test: setup ## Set up, then run the whole test suite
	$(BIN)/python -m pytest -q

lint: setup ## ruff lint and format check
	$(BIN)/ruff check pipeline tests
	$(BIN)/ruff format --check pipeline tests

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix pipeline tests
	$(BIN)/ruff format pipeline tests

bench: setup ## Speed and memory at 200k customers / 1M scores -> bench/results.json, bench/scoring.json
	$(BIN)/python -m pipeline.bench --out bench/results.json
	$(BIN)/python -m pipeline.bench_scoring --out bench/scoring.json

# The scale run (not part of `make test`): SCALE_DIR needs ~6 GB free; SCALE_STORE_DIR puts the
# event store (compute.store_dir, ~2 GB) on another disk
SCALE_CUSTOMERS ?= 1000000
SCALE_DIR ?= data/scale
SCALE_STORE_DIR ?=

bench-scale: setup ## 1M customers: one as_of + the daily run in 4 GB, time per phase -> bench/scale.json
	$(BIN)/python -m pipeline.bench_scale --out bench/scale.json --customers $(SCALE_CUSTOMERS) \
		--data-dir $(SCALE_DIR) --cores 2 $(if $(SCALE_STORE_DIR),--store-dir $(SCALE_STORE_DIR))

mlflow-ui: setup ## MLflow UI on http://127.0.0.1:5000 (local only)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlruns --host 127.0.0.1 --port 5000

lock: ## Re-resolve and rewrite requirements.lock (needs network)
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install --quiet -e ".[dev,dask]" \
		&& .lockenv/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock; rm -rf .lockenv

clean: ## Remove the venv, generated data and outputs (keeps mlflow.db and models/)
	rm -rf $(VENV) data outputs .pytest_cache .ruff_cache
