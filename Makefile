# Two commands do all set-up on a fresh machine: `make repro` (whole pipeline on the demo data) and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the stamp is keyed by the content of the install files (nbdev_export rewrites pyproject.toml's mtime)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test sync-check browser

setup: $(STAMP)

# torch goes first (CPU wheel here, your CUDA build elsewhere) with pip, and uv; everything else is pinned by
# constraints.txt, which also pins torch, so no later install can pull a different (CUDA) torch. uv installs the rest
# (tools/uv_install.py hands it pip's index settings, which uv does not read); if uv fails, pip does it.
# uv compiles the bytecode of the whole environment (torch too), as pip does: where PYTHONDONTWRITEBYTECODE is set, every
# process would otherwise compile each module it imports (about 6 s more per process that imports the pipeline).
$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt "$$(grep '^torch==' constraints.txt)" "$$(grep '^uv==' constraints.txt)"
	# medspacy==1.3.1 (pinned in constraints.txt) only for its data files (ConText and section rules, read by the
	# report parser): --no-deps, because it pins spacy<3.8 on Python 3.11 while we pin spacy 3.8.x; it is never imported
	{ $(BIN)/python tools/uv_install.py -q --compile-bytecode -c constraints.txt -e ".[pipeline,notebook,spacy,dev]" && \
	  $(BIN)/python tools/uv_install.py -q --no-deps "$$(grep '^medspacy==' constraints.txt)"; } || { \
	  echo "setup: uv failed; installing with pip"; \
	  $(BIN)/python -m pip install -q --upgrade pip && \
	  $(BIN)/python -m pip install -q -c constraints.txt -e ".[pipeline,notebook,spacy,dev]" && \
	  $(BIN)/python -m pip install -q --no-deps "$$(grep '^medspacy==' constraints.txt)"; }
	rm -f $(VENV)/.installed-*
	touch $@

# The demo corpus is generated (deterministically, idempotently) into data/demo, recorded in data.dvc, then
# the DVC pipeline runs. With your own data in data/ and params.yaml pointing at it, the same target applies.
repro: $(STAMP)
	$(BIN)/medklip demo-data --config params.yaml
	$(BIN)/dvc add -q data
	$(BIN)/dvc repro

# Fails when nbdev_export or nbdev_clean would change anything: notebooks not clean or package out of sync.
sync-check: $(STAMP)
	@before=$$(git status --porcelain --untracked-files=all -- nbs medklip; git diff -- nbs medklip | sha1sum); \
	 $(BIN)/nbdev_export && $(BIN)/nbdev_clean && \
	 after=$$(git status --porcelain --untracked-files=all -- nbs medklip; git diff -- nbs medklip | sha1sum); \
	 if [ "$$before" != "$$after" ]; then \
	   echo "sync-check: notebooks were not clean or medklip/ was out of sync with nbs/; nbdev_export/nbdev_clean fixed the tree:"; \
	   git status --short -- nbs medklip; echo "review and commit the result"; exit 1; fi; \
	 echo "sync-check: notebooks clean, package in sync"

# Debian's chromium for the real-browser test (installed with apt when missing; the test skips with a reason otherwise)
browser:
	@bash tools/ci_browser_setup.sh

# nbdev_test (one notebook at a time, one OpenMP thread) runs beside the tests marked serial (the real browser: a
# JupyterLab server, a kernel and Chromium, about one core), so each has a core; then pytest on every core (pytest-xdist,
# one test file per worker so module fixtures are built once, the heaviest files first: tests/conftest.py orders them and
# --no-loadscope-reorder keeps that order; conftest gives each worker one thread); the parallel run's summary is the closing line
test: $(STAMP) sync-check browser
	@log=$$(mktemp); OMP_NUM_THREADS=1 $(BIN)/nbdev_test --flags "" --n_workers 1 > $$log 2>&1 & nb=$$!; \
	 $(BIN)/python -m pytest -m serial; rc=$$?; [ $$rc -eq 5 ] && { echo "pytest: no serial tests"; rc=0; }; \
	 wait $$nb; nrc=$$?; echo "nbdev_test (exit $$nrc):"; cat $$log; rm -f $$log; [ $$rc -eq 0 ] && [ $$nrc -eq 0 ]
	$(BIN)/python -m pytest -m "not serial" -n auto --dist loadfile --no-loadscope-reorder || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest: no tests collected" || exit $$rc; }
