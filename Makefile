# Conveyor's developer commands. `make help` lists them.
#
# Everything runs from the project's own virtualenv (.venv), installed with the
# pinned versions in constraints.txt so a laptop and CI resolve the same packages.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The stamp records a finished install; it is redone only when the inputs change.
STAMP := $(VENV)/.installed

PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k graph -x"`.
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
# Seconds of schemathesis per database in `make fuzz` (`make test` gives it 40).
FUZZ_SECONDS ?= 300
# The browser tests (tests/browser) drive Debian's Chromium; `make test` installs it when missing.
CHROMIUM ?= /usr/bin/chromium
# Extra arguments for the benchmark, e.g. `make bench BENCH_ARGS="--db sqlite --runs 500"`.
BENCH_ARGS ?=

DEV_DB ?= sqlite:///conveyor.db

# A client generator with its own pins (it wants other versions of typer than
# Conveyor does), for the test that generates a client from /openapi.json.
CODEGEN_VENV := .venv-codegen
CODEGEN_STAMP := $(CODEGEN_VENV)/.installed

.PHONY: wrk help venv install run lint format test test-unit fuzz pg chromium bench bench-api bench-web bench-events bench-waits bench-dryrun bench-http bench-batch bench-streams bench-prune constraints docs-assets openapi-examples codegen clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(CODEGEN_STAMP): constraints-codegen.txt
	$(PYTHON) -m venv $(CODEGEN_VENV)
	$(CODEGEN_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints-codegen.txt openapi-python-client
	touch $(CODEGEN_STAMP)

codegen: $(CODEGEN_STAMP)  ## create .venv-codegen (openapi-python-client, for the generated-client test)

venv: $(STAMP)  ## create .venv and install Conveyor with its dev tools (idempotent)

install: $(STAMP)  ## same as venv

run: $(STAMP)  ## migrate and start the dev server (API + worker) on the SQLite file conveyor.db
	CONVEYOR_DATABASE_URL=$(DEV_DB) $(BIN)/conveyor migrate
	CONVEYOR_DATABASE_URL=$(DEV_DB) $(BIN)/conveyor dev

lint: $(STAMP)  ## ruff check, ruff format --check, mypy (strict) on the package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy conveyor

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

pg:  ## make sure PostgreSQL answers (PG_HOST:PG_PORT, default 127.0.0.1:5432), starting it if down
	@if ! pg_isready -q -h $(PG_HOST) -p $(PG_PORT); then \
		echo "PostgreSQL is down on $(PG_HOST):$(PG_PORT); starting the local cluster"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start || true; \
		for _ in $$(seq 1 30); do \
			pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && break; \
			sleep 1; \
		done; \
	fi
	@pg_isready -h $(PG_HOST) -p $(PG_PORT) || { \
		echo "error: PostgreSQL is not accepting connections on $(PG_HOST):$(PG_PORT);" \
			"the tests need it (see CONTRIBUTING.md)" >&2; \
		exit 1; \
	}

chromium:  ## make sure Debian's Chromium is at $(CHROMIUM) (the browser tests drive it), installing it with apt if not
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "Chromium is missing at $(CHROMIUM); installing the chromium package with apt-get"; \
		{ apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; } \
			>/dev/null 2>&1 || true; \
	fi
	@test -x $(CHROMIUM) || { \
		echo "error: the browser tests need Chromium at $(CHROMIUM) and installing it failed;" \
			"run (as root): apt-get update && apt-get install -y chromium" >&2; \
		exit 1; \
	}

wrk:  ## make sure Debian's wrk is installed (the bench load generator's tests drive it), installing it with apt if not
	@if ! command -v wrk >/dev/null 2>&1; then \
		echo "wrk is missing; installing the wrk package with apt-get"; \
		{ apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; } \
			>/dev/null 2>&1 || true; \
	fi
	@command -v wrk >/dev/null 2>&1 || { \
		echo "error: the load generator's tests need wrk and installing it failed;" \
			"run (as root): apt-get update && apt-get install -y wrk" >&2; \
		exit 1; \
	}

test: $(STAMP) $(CODEGEN_STAMP) pg chromium wrk  ## lint, then the whole test suite on SQLite and PostgreSQL
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_ARGS) tests

test-unit: $(STAMP)  ## only the pure unit tests (no database, a few seconds)
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS) tests/unit

fuzz: $(STAMP) pg  ## schemathesis over the whole API, FUZZ_SECONDS (300) per database, a random seed
	CONVEYOR_FUZZ_SECONDS=$(FUZZ_SECONDS) CONVEYOR_FUZZ_SEED=$${CONVEYOR_FUZZ_SEED:-random} \
		$(BIN)/pytest -p no:cacheprovider -n 0 -m fuzz $(PYTEST_ARGS) tests/fuzz

bench: $(STAMP)  ## the engine benchmark (bench/engine.py)
	$(PY) bench/engine.py $(BENCH_ARGS)

bench-api: $(STAMP) pg  ## the Runs API benchmark (bench/api.py): 1M runs, lists, detail, steps
	$(PY) bench/api.py $(BENCH_ARGS)

bench-web: $(STAMP) pg  ## dashboard pages rendered over HTTP at 1M runs (bench/web.py; reuses bench-api's data)
	$(PY) bench/web.py $(BENCH_ARGS)

bench-events: $(STAMP) pg  ## event ingestion (bench/events.py)
	$(PY) bench/events.py $(BENCH_ARGS)

bench-waits: $(STAMP) pg  ## W2 and timeout lateness (bench/waits.py)
	$(PY) bench/waits.py $(BENCH_ARGS)

bench-dryrun: $(STAMP) pg  ## dry runs: contact-days/s (bench/dryrun.py)
	$(PY) bench/dryrun.py $(BENCH_ARGS)

bench-http: $(STAMP) pg  ## W1 triggered over HTTP: CPU per run of each process (bench/http.py)
	$(PY) bench/http.py $(BENCH_ARGS)

bench-batch: $(STAMP) pg  ## runs created per second through batch triggers and events, no worker (bench/batch.py)
	$(PY) bench/batch.py $(BENCH_ARGS)

bench-streams: $(STAMP) pg  ## a stream flood by one tenant vs another's run lists (bench/streams.py)
	$(PY) bench/streams.py $(BENCH_ARGS)

bench-prune: $(STAMP) pg  ## prune throughput, rows/s, on many runs (bench/prune.py; --runs 1000000 for the issue's figure)
	$(PY) bench/prune.py $(BENCH_ARGS)

openapi-examples: $(STAMP)  ## re-record the example of every operation (conveyor/api/openapi_examples.json)
	$(PY) scripts/openapi_examples.py

constraints: $(STAMP)  ## re-pin constraints.txt from what .venv has installed
	{ echo "# Pinned versions of every installed package; regenerate with \`make constraints\`."; \
	  $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(STAMP)

# The API reference viewers shipped in conveyor/api/static (no CDN at run time).
SWAGGER_UI_VERSION := 5.35.0
REDOC_VERSION := 2.5.4
DOCS_ASSETS := conveyor/api/static

docs-assets:  ## re-fetch Swagger UI and Redoc (pinned above) from npm into conveyor/api/static
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cd "$$tmp"; \
	npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) redoc@$(REDOC_VERSION) >/dev/null; \
	mkdir swagger redoc; \
	tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz -C swagger --strip-components=1; \
	tar xzf redoc-$(REDOC_VERSION).tgz -C redoc --strip-components=1; \
	cd - >/dev/null; \
	cp "$$tmp"/swagger/{swagger-ui-bundle.js,swagger-ui-bundle.js.LICENSE.txt,swagger-ui.css,favicon-32x32.png} $(DOCS_ASSETS)/; \
	cp "$$tmp"/swagger/LICENSE $(DOCS_ASSETS)/swagger-ui.LICENSE; \
	cp "$$tmp"/swagger/NOTICE $(DOCS_ASSETS)/swagger-ui.NOTICE; \
	cp "$$tmp"/redoc/bundles/{redoc.standalone.js,redoc.standalone.js.LICENSE.txt} $(DOCS_ASSETS)/; \
	cp "$$tmp"/redoc/LICENSE $(DOCS_ASSETS)/redoc.LICENSE; \
	sed -i '/^\/\/# sourceMappingURL=/d' $(DOCS_ASSETS)/*.js; \
	sed -i 's#/\*\# sourceMappingURL=.*\*/##' $(DOCS_ASSETS)/swagger-ui.css

clean:  ## remove caches and build leftovers (keeps .venv and conveyor.db)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
