# Every target creates (or reuses) its own virtualenv in .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# --no-compile: byte-compiling every installed module (all of transformers' models) took ~2 of the
# install's 3 minutes; instead the modules a run imports are compiled on first import, which needs
# bytecode writing on (some environments export PYTHONDONTWRITEBYTECODE=1).
PIP := $(BIN)/pip install -q --no-compile
RUN := env -u PYTHONDONTWRITEBYTECODE HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install install-core test test-multihost demo clean

# The library and what the demo needs (no torch: it is a test / benchmark dependency).
$(BIN)/.installed-core: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) -e .
	touch $@

# Tests: torch as the CPU wheel first, so that nothing installed later pulls a CUDA build.
$(BIN)/.installed: $(BIN)/.installed-core
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

install-core: $(BIN)/.installed-core
install: $(BIN)/.installed

test: install
	$(RUN) $(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The full two-process set (CI runs its SFT cases with `test`): GR-IPO and GRPO across 2 processes x 4 CPU
# devices, and the coordinator (process 0) killed mid-run; see docs/multihost.md.
test-multihost: install
	$(RUN) GRPOJAX_MULTIHOST_FULL=1 $(BIN)/python -m pytest -q tests/multihost

# The main job on the embedded default: the end-to-end demo on the built-in synthetic world
# (policy SFT, reward model, multi-objective GRPO, IPO vs GR-IPO); see docs/demo.md.
demo: install-core
	$(RUN) $(BIN)/python -m grpojax.demo --out runs/demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
