# tollgate: every task has a target here; `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/services:$(CURDIR)/proto/gen/python:$(CURDIR)
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv system-deps proto run test test-fast lint fmt docs tools \
        monitoring bench bench-metrics bench-tracing observe image image-base image-test kind-up kind-e2e helm-lint clean node-deps \
        generate check-generated crds lock

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# The venv installs the lock, every package pinned with its hashes; requirements*.txt are
# the hand-edited inputs of `make lock` (and `make check-generated` fails when they disagree).
$(STAMP): requirements.lock requirements-dev.lock requirements-pip.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements-pip.lock
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	@touch $@

venv: $(STAMP) ## create .venv with runtime and dev dependencies from requirements-dev.lock

# uv resolves for CI's and the image's platform whatever the host; an existing lock's pins are
# kept unless requirements*.txt move them, or UPGRADE=1 asks for the newest releases.
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --generate-hashes --no-strip-extras \
	--python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)

lock: $(STAMP) ## re-resolve requirements*.lock from requirements*.txt with hashes (UPGRADE=1: newest)
	$(UV_COMPILE) requirements-pip.txt -o requirements-pip.lock
	$(UV_COMPILE) requirements-dev.txt -o requirements-dev.lock
	$(UV_COMPILE) requirements.txt -c requirements-dev.lock -o requirements.lock
	$(UV_COMPILE) tools/phoenix.txt -o tools/phoenix.lock
	@echo "locked: make venv installs requirements-dev.lock, the image requirements.lock"

# The Node clients and the independent mock upstream the tests drive, pinned by tests/node's lock.
NODE_STAMP := tests/node/node_modules/.installed
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node >= 20.15) is needed for the client tests" >&2; exit 1; }
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: $(NODE_STAMP) ## npm ci the Node clients and aimock into tests/node/node_modules

system-deps: ## install the Debian packages the tests use (redis, prometheus, alertmanager)
	@bash tools/system-deps.sh

# Every generated file and chart copy comes from tools/generate.py; see docs/development.md.
GENERATE = $(PY) -m tools.generate

generate: $(STAMP) ## regenerate every generated file: proto, dashboards, chart copies, CRDs, docs
	$(GENERATE)

check-generated: $(STAMP) ## fail if a generated file or a lock is stale (writes nothing)
	$(GENERATE) --check

proto: $(STAMP) ## regenerate proto/gen/python from proto/
	$(GENERATE) proto

crds: $(STAMP) ## regenerate the chart's crds/ from services/tollgate_operator/crds.py
	$(GENERATE) crds

run: $(STAMP) ## the stack on the default ports until Ctrl-C (UPSTREAM=providers: the real providers whose keys are set)
	$(PY) -m tools.run --upstream $(or $(UPSTREAM),simulator)

test: $(STAMP) system-deps tools node-deps ## everything CI runs: lint, then all tests
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP) ## tests without lint and without the slow end-to-end ones
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# pre-commit's hooks (.pre-commit-config.yaml) on every tracked file: ruff, ruff format,
# mypy and check-generated. Local hooks only, so nothing is fetched; its state stays in .cache/.
lint: export PRE_COMMIT_HOME := $(CURDIR)/.cache/pre-commit
lint: $(STAMP) ## pre-commit on all files: ruff, ruff format, mypy, check-generated
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

fmt: $(STAMP) ## format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: $(STAMP) ## regenerate docs/metrics.md from the catalog
	$(GENERATE) docs

monitoring: $(STAMP) ## regenerate dashboards/json and the chart's copies of dashboards and rules
	$(GENERATE) dashboards alerts

observe: $(STAMP) system-deps ## Prometheus + Alertmanager on loopback next to `make run`; prints their URLs
	$(PY) -m deploy.observe

tools: $(STAMP) ## helm and kubectl into .tools/bin, checkov and Arize Phoenix (trace tests) into .tools/
	@bash tools/install-tools.sh
	@PYTHON=$(PYTHON) bash tools/install-checkov.sh
	@PYTHON=$(PYTHON) bash tools/install-phoenix.sh

bench: $(STAMP) system-deps ## side-by-side benchmark (BENCH_PEERS=litellm adds LiteLLM); writes docs/benchmarks.md
	$(PY) -m bench.run

bench-metrics: $(STAMP) system-deps ## CPU per request of the instrumentation, metrics on vs off, in one run
	$(PY) -m bench.metrics_cost

bench-tracing: $(STAMP) system-deps ## CPU per request of tracing, off vs 1 % vs 100 % sampling, in one run
	$(PY) -m bench.tracing_cost

IMAGE ?= tollgate:dev
CHART := deploy/helm/tollgate

# tools/image.sh: docker when `docker info` works, else podman (make system-deps installs it);
# on the official python:3.11-slim-bookworm, or on image-base when no registry is reachable.
image: ## build the one tollgate image (IMAGE=tollgate:dev) with docker or podman; SBOM in .image/sbom.json
	@IMAGE=$(IMAGE) bash tools/image.sh build

image-base: ## localhost/debian-python:3.11-bookworm from Debian's packages (debootstrap), for no registry
	@bash tools/image.sh base

# The test builds the image itself (layer cache: fast when nothing changed); `make test` runs it too.
image-test: $(STAMP) tools ## the image for real: the chart's containers in one pod, SDK requests, probes, SIGTERM
	IMAGE=$(IMAGE) $(PY) -m pytest -q -p no:cacheprovider tests/image $(PYTEST_ARGS)

helm-lint: tools ## helm lint --strict the chart with its defaults and every ci/*-values.yaml
	helm lint --strict $(CHART)
	@for f in $(CHART)/ci/*-values.yaml $(CHART)/values/kind.yaml; do \
	  echo "helm lint --strict -f $$f"; helm lint --strict $(CHART) -f $$f >/dev/null || exit 1; done

kind-up: $(STAMP) tools ## kind cluster + kube-prometheus-stack + the image loaded (needs docker, kind)
	IMAGE=$(IMAGE) bash deploy/kind/up.sh

kind-e2e: $(STAMP) tools ## install on kind with values/kind.yaml, smoke-test, tear down
	bash deploy/kind/e2e.sh

clean: ## remove build outputs and local state
	rm -rf .tools .run .bench .observe .image .pytest_cache .mypy_cache .ruff_cache tests/node/node_modules .cache
