# The commands a user and CI run. `make help` lists them.
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help setup test test-fast lint format bench clean template-check demo serve security load build deploy \
	build-AlipayAuthLayer

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install everything: .venv (Python 3.13), node packages
	./scripts/setup.sh

demo: ## run the product's main job on the local stack: link, consent, callback, storage, rotation, cancellation
	$(PY) -m sandbox.demo demo

serve: ## keep the local stack running and print a link to open in a browser (CONFIG=alipay.json for a real gateway)
	$(PY) -m sandbox.demo serve $(if $(CONFIG),--config $(CONFIG))

test: ## run the whole test suite: unit, interop (official Node SDK), integration, e2e (Chromium), chaos, security, load (200)
	LOAD_AUTHORIZATIONS=$${LOAD_AUTHORIZATIONS:-200} LOAD_RESULT=$${LOAD_RESULT:-.pytest_cache/load.json} $(PY) -m pytest

test-fast: ## unit tests, the lifecycle services and the store contract over in-memory fakes (no AWS stand-ins)
	$(PY) -m pytest tests/unit tests/fast tests/contract -m "not integration"

lint: ## ruff, formatting and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy functions/callback/app.py
	$(VENV)/bin/mypy functions/refresher/app.py
	$(VENV)/bin/mypy functions/tokens/app.py

format: ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: ## run the benchmarks (protocol, sdk, coldstart, refresh); results go to benchmarks/results/*.json
	$(PY) -m benchmarks

load: ## 2,000 authorizations through the local stack, 50 at a time; p50/p99 in benchmarks/results/load.json
	$(PY) -m pytest tests/load -q

security: ## bandit and pip-audit (scripts/security.sh, own virtualenv), then the security tests
	./scripts/security.sh
	$(PY) -m pytest tests/security -q

clean: ## remove build and test artefacts (keeps .venv and node_modules)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache

# The repository's root, wherever make runs: sam runs build-AlipayAuthLayer in a scratch copy of the layer.
ROOT := $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST)))))
# sam builds the python3.13 functions with the python3.13 it finds on PATH; where python3 is not
# 3.13 (or a pyenv shim that refuses to run it), the one scripts/python313.sh finds goes first.
PY313 = $(shell . "$(ROOT)/scripts/python313.sh" && find_python313)
SAM_PATH = PATH="$(dir $(PY313)):$(ROOT)/.venv-sam/bin:$$PATH"
# The template's BuildArchitecture (AlipayAuthLayer's Metadata).
LAYER_ARCH := arm64

# Offline: dummy credentials and an endpoint on a closed local port, so nothing here can reach AWS.
TEMPLATE_ENV = SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline \
	AWS_SECRET_ACCESS_KEY=offline AWS_ENDPOINT_URL=http://127.0.0.1:9 $(SAM_PATH)

template-check: ## lint, build and scan template.yaml (sam, cfn-lint, checkov; installs them on first use)
	./scripts/setup-sam.sh
	$(TEMPLATE_ENV) sam validate --lint --template-file template.yaml
	$(TEMPLATE_ENV) cfn-lint template.yaml
	$(TEMPLATE_ENV) sam build --template-file template.yaml
	@# This machine is x86_64: prove that the layer holds aarch64 wheels (ELF e_machine 0xB7) and that
	@# every module has its unchecked-hash cpython-313 .pyc.
	.venv-sam/bin/python scripts/check_layer.py .aws-sam/build/AlipayAuthLayer --arch aarch64
	.venv-checkov/bin/checkov --skip-download --compact -f template.yaml --framework cloudformation

build: ## sam build for arm64: the functions, and the layer with its bytecode (scripts/build-layer.sh)
	@test -n "$(PY313)" || { echo "no Python 3.13 found: set PYTHON=/path/to/python3.13" >&2; exit 1; }
	./scripts/setup-sam.sh
	SAM_CLI_TELEMETRY=0 $(SAM_PATH) sam build --template-file template.yaml

deploy: build ## build, then sam deploy with samconfig.toml (CONFIG_ENV=prod for prod; GUIDED=1 asks everything)
	SAM_CLI_TELEMETRY=0 $(SAM_PATH) sam deploy $(if $(CONFIG_ENV),--config-env $(CONFIG_ENV)) $(if $(GUIDED),--guided)

# Run by `sam build` (the layer's BuildMethod: makefile) in its copy of layers/alipay_auth, with
# ARTIFACTS_DIR the layer's build directory.
build-AlipayAuthLayer:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: sam build sets it (run make build)" >&2; exit 1; }
	"$(ROOT)/scripts/build-layer.sh" . "$(ARTIFACTS_DIR)" $(LAYER_ARCH)
