# rankflow -- `make help` lists the targets.
SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rankflow-installed
HOST ?=
CRON ?=
ARGS ?=
URL ?= 127.0.0.1:8001
MODEL ?= rankflow
PYKUSTOMIZE := pykustomize==0.1.4
# pip-audit is a tool, not a dependency: its own venv keeps it out of the lock.
PIP_AUDIT := pip-audit==2.10.1
AUDIT_VENV := build/audit-venv
ADVISORY_DB ?=
INPUT ?= $(firstword $(wildcard runs/latest/artifacts/*/prepare-data/test_data))
# The suite waits on Triton and subprocesses about half the time: two workers use both cores.
TEST_WORKERS ?= 2
KEEP ?=

.DEFAULT_GOAL := help

.PHONY: help setup run runs test test-fast compile compile-check submit publish schedule serve query rollback drift manifests bench bench-quick bench-real bench-cold audit lint format lock clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

# Re-runs only when the lock or the project metadata changes.
$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet "pip==25.3" "setuptools==65.5.0" "wheel==0.45.1"
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	# pykustomize (the Go kustomize library over cffi; renders k8s/ in the tests) declares
	# Python>=3.14 but runs on 3.11: installed apart so the lock needs no override.
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python "$(PYKUSTOMIZE)"
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import google.protobuf as p, sys; v = p.__version__; sys.exit(0 if v.startswith('6.') else f'protobuf {v} installed; kfp needs 6.x')"
	touch $@

setup: $(STAMP) ## Create .venv from requirements.lock (skipped when the lock is unchanged)

run: $(STAMP) ## Run the pipeline locally (kfp.local) on the synthetic log into runs/<run id>/ (runs/latest)
	$(VENV)/bin/rankflow run $(ARGS)

runs: $(STAMP) ## List the local runs (id, data, architecture, AUC, blessed, deployed); KEEP=N prunes to the newest N
	$(VENV)/bin/rankflow runs $(if $(KEEP),--keep $(KEEP)) $(ARGS)

test: $(STAMP) ## Run the whole test suite (TEST_WORKERS=2 processes, a module per worker at a time)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(ARGS)

test-fast: $(STAMP) ## Run the fast tier (no Merlin, TensorFlow or Triton imported; well under a minute)
	$(PY) -m pytest --fast-tier $(ARGS)

compile: $(STAMP) ## Compile the pipeline to pipelines/compiled/rankflow_ranking.yaml
	$(VENV)/bin/rankflow compile

compile-check: $(STAMP) ## Fail when the committed pipelines/compiled/ YAML is not what `make compile` writes
	$(VENV)/bin/rankflow compile --output build/compiled/rankflow_ranking.yaml
	@diff -q pipelines/compiled/rankflow_ranking.yaml build/compiled/rankflow_ranking.yaml >/dev/null || { echo "pipelines/compiled/rankflow_ranking.yaml is stale: run make compile and commit it"; exit 1; }

submit: $(STAMP) ## Create one run on Kubeflow: make submit HOST=https://kubeflow.example/pipeline [ARGS='--set epochs=5']
	@test -n "$(HOST)" || { echo "usage: make submit HOST=<KFP endpoint> [ARGS='--set epochs=5']"; exit 2; }
	$(VENV)/bin/rankflow submit --host "$(HOST)" $(ARGS)

publish: $(STAMP) ## Upload this commit as a version of rankflow-ranking: make publish HOST=... [ARGS='--image REF']
	@test -n "$(HOST)" || { echo "usage: make publish HOST=<KFP endpoint> [ARGS='--image <ref> --namespace <ns>']"; exit 2; }
	$(VENV)/bin/rankflow publish --host "$(HOST)" $(ARGS)

schedule: $(STAMP) ## Retrain on a schedule: make schedule HOST=... CRON='0 0 3 * * *' [ARGS='--set epochs=5']
	@test -n "$(HOST)" -a -n "$(CRON)" || { echo "usage: make schedule HOST=<KFP endpoint> CRON='<6-field cron, seconds first>' [ARGS=...]"; exit 2; }
	$(VENV)/bin/rankflow schedule --host "$(HOST)" --cron "$(CRON)" $(ARGS)

serve: $(STAMP) ## Serve the local model store on Triton (gRPC 127.0.0.1:8001) until Ctrl-C
	$(VENV)/bin/rankflow serve $(ARGS)

query: $(STAMP) ## Score rows on a running Triton: make query [URL=host:8001] [INPUT=rows.parquet|.csv|.json]
	@test -n "$(INPUT)" || { echo "usage: make query INPUT=<rows file> [URL=127.0.0.1:8001] (or make run first)"; exit 2; }
	$(VENV)/bin/rankflow query --url "$(URL)" --input "$(INPUT)" $(ARGS)

rollback: $(STAMP) ## Serve the previously deployed version again: make rollback [MODEL=rankflow]
	$(VENV)/bin/rankflow rollback --model "$(MODEL)" $(ARGS)

drift: $(STAMP) ## Served inputs vs the serving version's training profiles (PSI; exit 3 on drift): make drift [ARGS='--since scrape.txt']
	$(VENV)/bin/rankflow drift $(ARGS)

manifests: $(STAMP) ## Render the Triton serving overlays (kustomize) into build/k8s/{cpu,gpu}.yaml
	mkdir -p build/k8s
	for o in cpu gpu; do $(PY) -c 'import asyncio, sys, pykustomize; sys.stdout.write(asyncio.run(pykustomize.build(sys.argv[1])).yaml)' k8s/serving/overlays/$$o > build/k8s/$$o.yaml || exit 1; done
	@echo "kubectl apply -n <pipeline namespace> -f build/k8s/cpu.yaml (or gpu.yaml)"

bench: $(STAMP) ## Full benchmark suite (long; not for CI): bench/results.json, BENCHMARKS.md, bench/plots/
	$(PY) -m bench $(ARGS)

bench-quick: $(STAMP) ## Smoke benchmarks (a few minutes) into build/bench/
	$(PY) -m bench --quick --out build/bench/results.json --markdown build/bench/BENCHMARKS.md --plots build/bench/plots $(ARGS)

bench-real: $(STAMP) ## Default pipeline vs a tuned LightGBM on three public logs (~20 min): bench/real_logs.{json,md}, BENCHMARKS.md
	$(PY) -m bench.real $(ARGS)

bench-cold: $(STAMP) ## Cold-start AUC with the language model, bag-of-words, lists only, no content (~45 min at 400k rows)
	$(PY) -m bench.cold_start $(ARGS)

lint: $(STAMP) ## ruff lint + format check, mypy, the layer contract (import-linter), top-level names
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m rankflow.packaging

format: $(STAMP) ## ruff format + autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

audit: $(STAMP) ## Known vulnerabilities of the lock -> SECURITY.md (ADVISORY_DB=<pypa/advisory-database checkout> offline, else pip-audit)
	if [ -n "$(ADVISORY_DB)" ]; then \
		$(PY) -m security.audit --advisory-db "$(ADVISORY_DB)"; \
	else \
		test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON_BOOTSTRAP) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install --quiet "$(PIP_AUDIT)"; }; \
		$(PY) -m security.audit --pip-audit $(AUDIT_VENV)/bin/pip-audit; \
	fi

lock: ## Rebuild requirements.lock from the current .venv (after a deliberate upgrade)
	$(PY) -m pip freeze --exclude-editable | grep -v -e '^-e ' -e '^pykustomize==' > requirements.lock

clean: ## Remove caches and build output (keeps .venv and runs/: prune runs with `make runs KEEP=N`)
	rm -rf build .pytest_cache .ruff_cache .mypy_cache
