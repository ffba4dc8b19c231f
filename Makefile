# Every target creates (or reuses) its own virtualenv in .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test demo bandit clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the CPU wheel; anything installed later that wants torch then finds it.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The main job on the embedded default: the end-to-end demo on the built-in synthetic world
# (policy SFT, reward model, multi-objective GRPO, IPO vs GR-IPO); see docs/demo.md.
demo: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m grpojax.demo --out runs/demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
