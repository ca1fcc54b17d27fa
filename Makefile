# The README's commands. Each installs what it needs on first use (.venv, via scripts/venv.sh).
SHELL := /bin/bash
PY = $(shell ./scripts/venv.sh)
export PYTHONPATH := $(CURDIR)/layers/common:$(CURDIR)
export AWS_DEFAULT_REGION ?= ap-southeast-3
export SAM_CLI_TELEMETRY := 0

.PHONY: run test lint format validate unit integration e2e bench build clean

run:  ## run the whole system locally (moto + WhatsApp sandbox), Ctrl-C to stop
	@$(PY) -m localrun $(ARGS)

test:  ## everything CI runs: lint, template validation, unit, integration, end-to-end
	@PY=$(PY); set -e; \
	echo "== lint"; $$PY -m ruff check .; $$PY -m ruff format --check .; \
	bash scripts/browser.sh; \
	echo "== tests (template validation, unit, integration, e2e)"; \
	$$PY -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

lint:
	@$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	@$(PY) -m ruff format . && $(PY) -m ruff check --fix .

validate:  ## sam validate --lint and cfn-lint (also run by the tests)
	@.venv/bin/sam validate --lint && .venv/bin/cfn-lint template.yaml

unit:
	@$(PY) -m pytest tests/unit -q

integration:
	@$(PY) -m pytest tests/integration -q

e2e:  ## the local runtime over HTTP, and the admin page in headless Chromium (scripts/browser.sh installs it)
	@bash scripts/browser.sh && $(PY) -m pytest tests/e2e -q

build:  ## sam build (needs a Python 3.12 on PATH, see README)
	@PYENV_VERSION=$${PYENV_VERSION:-3.12.1:3.11.7} .venv/bin/sam build

clean:
	rm -rf .venv .aws-sam .pytest_cache .ruff_cache
