# The two commands of the README. Both create .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: repro test setup clean

$(BIN)/mmolre: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/mmolre

repro: setup
	dvc config core.analytics false
	dvc repro

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf data/raw data/prepared data/features models
