# The two commands a newcomer runs: `make dev` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := $(VENV)/.js-installed

.PHONY: dev example test lint check bench bench-stripesim clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

## Run the simulator, the server on SQLite, the demo catalog and data; prints the URLs.
## `make dev ARGS='--port 8001 --catalog plans.yaml'` passes options on.
dev: $(STAMP)
	$(BIN)/tollgate dev $(ARGS)

## Acme Workflows, a small SaaS on Tollgate, beside `tollgate dev` (http://127.0.0.1:8100).
## `make example ARGS='--port 8101 --tollgate-port 8001 --stripe-port 12112'` moves its ports.
example: $(STAMP)
	$(BIN)/python examples/workflows/run.py $(ARGS)

## Lint, format check, types, import contracts, then every test (SQLite and PostgreSQL).
## (The plan migration kill-and-resume test moves 300 subscribers here; 1,000 by default when
## run alone: TOLLGATE_TEST_MIGRATION_SUBSCRIBERS sets it.)
test: $(STAMP) $(JS_STAMP) lint
	TOLLGATE_TEST_MIGRATION_SUBSCRIBERS=$${TOLLGATE_TEST_MIGRATION_SUBSCRIBERS:-300} \
	$(BIN)/pytest -n 2 --dist loadgroup

$(JS_STAMP): $(STAMP) clients/js/package-lock.json
	npm ci --prefix clients/js --silent
	touch $(JS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## Every benchmark in bench/, printing its figures.
bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .tollgate-dev .pytest_cache .mypy_cache .ruff_cache
