# The two commands of the README. Both set up .venv first (idempotent: only when missing or when
# pyproject.toml changed), following ../shared/INSTALL.md: uv, and the on-disk wheels where present.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.bml-installed
FIND_LINKS := $(foreach d,/opt/pypi-more/files /opt/pypi/files,$(if $(wildcard $(d)),--find-links $(d)))
# The bootstrap python is the one found before .venv/bin goes first on PATH.
BOOT_PY := PATH="$(PATH)" python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(BOOT_PY) -m uv --version >/dev/null 2>&1 || $(BOOT_PY) -m pip install --quiet uv
	@[ -x $(VENV)/bin/python ] || $(BOOT_PY) -m uv venv -p python3.11 $(VENV)
	$(BOOT_PY) -m uv pip install -p $(VENV)/bin/python --compile-bytecode $(FIND_LINKS) -e '.[test]'
	@touch $(STAMP)

# The main job: the whole pipeline on the embedded dataset.
run: setup
	snakemake

test: setup
	pytest

bench: setup
	python benchmarks/extract_throughput.py
	python benchmarks/train_step.py --steps 60 --threads 2
	python benchmarks/method_cost.py --rounds 8 --threads 2

lint: setup
	ruff check .

clean:
	rm -rf data .snakemake
