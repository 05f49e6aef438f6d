# roomfit: `make run` starts the whole service in embedded mode; `make test` runs every test.
# Both create .venv and install into it first (torch's CPU build first, so nothing pulls CUDA).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k blobstore -x"`.
PYTEST_ARGS ?=

.PHONY: install run test lint bench clean client

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/roomfit up

# tests/services.py starts PostgreSQL, Redis and SeaweedFS on free loopback ports in a temporary
# folder, runs pytest with their URLs in the environment, and stops them by PID even on failure.
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m tests.services run -- $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The typed Python client, clients/python/roomfit_client, from the app's OpenAPI document (also
# written to clients/openapi.json, for other generators). Run it after changing the API: a test
# fails while the committed client differs from a fresh one. The generator's post hooks call ruff.
CLIENT := clients/python/roomfit_client
client: install
	$(PY) clients/dump_openapi.py clients/openapi.json
	rm -rf $(CLIENT)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m openapi_python_client generate --fail-on-warning \
		--path clients/openapi.json --config clients/python-config.yaml --meta none --output-path $(CLIENT)

bench: install
	@echo "see bench/README.md for each benchmark's command"

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
