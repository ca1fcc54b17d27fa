# The README's commands. Each installs what it needs on first use (.venv, via scripts/venv.sh).
SHELL := /bin/bash
PY = $(shell ./scripts/venv.sh)
export PYTHONPATH := $(CURDIR)/layers/common:$(CURDIR)
export AWS_DEFAULT_REGION ?= ap-southeast-3
export SAM_CLI_TELEMETRY := 0

.PHONY: run test lint format validate unit integration e2e artefact bench build deploy smoke sam-invoke soak lock clean

run:  ## run the whole system locally (moto, dynalite for DynamoDB, WhatsApp sandbox), Ctrl-C to stop
	@bash scripts/node_deps.sh; $(PY) -m localrun $(ARGS)

test:  ## everything CI runs: lint, template validation, unit, integration, built artefact, end-to-end (~17 min)
	@PY=$(PY); set -e; \
	echo "== lint"; $$PY -m ruff check .; $$PY -m ruff format --check .; \
	bash scripts/browser.sh; \
	NODE_DEPS_STRICT=$${CI:+1} bash scripts/node_deps.sh; \
	echo "== tests (template validation, unit, integration, built artefact, e2e)"; \
	$$PY -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

lint:
	@$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	@$(PY) -m ruff format . && $(PY) -m ruff check --fix .

validate:  ## sam validate --lint and cfn-lint (also run by the tests)
	@BIN=$$(dirname $(PY)); $$BIN/sam validate --lint && $$BIN/cfn-lint template.yaml

unit:
	@$(PY) -m pytest tests/unit -q

integration:
	@$(PY) -m pytest tests/integration -q

e2e:  ## the local runtime over HTTP, and the admin page in headless Chromium (scripts/browser.sh installs it)
	@bash scripts/browser.sh && bash scripts/node_deps.sh && $(PY) -m pytest tests/e2e -q

artefact:  ## sam build, then every events/ file through the built handlers in a bare interpreter (no Docker)
	@bash scripts/node_deps.sh && $(PY) -m pytest tests/artefact -q -s

build:  ## sam build into .aws-sam/build, Python files compiled (needs a Python 3.12, see README)
	@$(PY) -m localrun.artefact

deploy: build  ## sam deploy: --guided the first time (no samconfig.toml yet), see docs/deploy.md
	@BIN=$$(dirname $(PY)); if [ -f samconfig.toml ]; then $$BIN/sam deploy $(ARGS); \
	else $$BIN/sam deploy --guided $(ARGS); fi

smoke:  ## smoke-test a deployed stack: make smoke ARGS="--stack-name jastipin-dev" (docs/deploy.md)
	@$(PY) scripts/smoke.py $(ARGS)

sam-invoke: build  ## every events/ file through `sam local invoke` (Docker) against `make run` (docs/sam-local.md)
	@$(PY) scripts/sam_invoke.py $(ARGS)

soak:  ## a 10,000-recipient fan-out while 100 webhooks/s arrive, end state checked; prints the table (~6 min)
	@bash scripts/node_deps.sh && $(PY) bench/soak.py $(ARGS)

lock:  ## re-make layers/common/requirements.txt (the runtime lock) from requirements.in
	@bash scripts/lock.sh

clean:
	rm -rf .venv .aws-sam .pytest_cache .ruff_cache node_modules
