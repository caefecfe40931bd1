# The two commands of the README. Both set up .venv first (idempotent: only when missing or when
# pyproject.toml changed): uv makes the venv and installs bml with its test and slurm extras, from the
# wheel folders below where a machine has them (otherwise from the package index).
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.bml-installed
FIND_LINKS := $(foreach d,/opt/pypi-more/files /opt/pypi/files,$(if $(wildcard $(d)),--find-links $(d)))
# The bootstrap python is the one found before .venv/bin goes first on PATH.
BOOT_PY := PATH="$(PATH)" python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# A killed run leaves Snakemake's lock behind; with no snakemake of this folder still running, lift it first
UNLOCK := scripts/unlock-dead-run.sh

.PHONY: setup run run-all test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(BOOT_PY) -m uv --version >/dev/null 2>&1 || $(BOOT_PY) -m pip install --quiet uv
	@[ -x $(VENV)/bin/python ] || $(BOOT_PY) -m uv venv -p python3.11 $(VENV)
	$(BOOT_PY) -m uv pip install -p $(VENV)/bin/python --compile-bytecode $(FIND_LINKS) -e '.[test,slurm]'
	@touch $(STAMP)

# The main job: the whole pipeline on the embedded dataset (profiles/default applies by itself; it sets no
# cores, which would cap a cluster's jobs too: profiles/default/config.yaml).
run: setup
	@$(UNLOCK)
	snakemake --cores all

# Every method with every fusion head it works with (params/params.yaml: matrices.all).
run-all: setup
	@$(UNLOCK)
	snakemake --cores all --config matrix=all

# Two pytest workers (pytest-xdist), each test file on one worker (--dist loadfile: a file's session fixtures,
# the SLURM test cluster, are built and used by one process): the suite's subprocess-heavy tests overlap on
# the two cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: setup
	pytest -n $(TEST_WORKERS) --dist loadfile

# Every test but those marked slow (over about 5 s each: real Snakemake, DVC or training end to end).
test-fast: setup
	pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: setup
	python benchmarks/extract_throughput.py
	python benchmarks/run_phases.py
	python benchmarks/plan_overhead.py
	python benchmarks/plan_load.py
	python benchmarks/probe_time.py
	python benchmarks/method_cost.py --rounds 8 --threads 1
	python benchmarks/gpu_estimate.py

# What CI checks besides the tests (.ci/run): ruff's lints and format, and Snakemake's lints.
lint: setup
	ruff check .
	ruff format --check .
	.ci/lint-workflow

clean:
	rm -rf data .snakemake .bml
