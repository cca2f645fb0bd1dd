# The two commands of the README. Both create .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: repro test setup clean paper gpu-wheels

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

# The paper's setting (README, "Reproducing the paper"): CMU-MOSI + CMU-MOSEI, RoBERTa + Data2Vec,
# d=768, N=15, r=128. Needs the internet (or data.mirror / --from-archive) and, in practice, a GPU.
PAPER := -S data.dataset=cmu -S featurize.text_encoder=roberta-base \
	-S featurize.audio_encoder=facebook/data2vec-audio-base -S model.d_model=768 -S model.n_experts=15 \
	-S model.rank=128 -S model.n_heads=8 -S train.lr=0.0001 -S train.epochs=40 -S train.patience=8 \
	-S promote.metric=mosei.msa.mae -S 'runs.main.seeds=[1111,1,11]'

paper: setup
	dvc config core.analytics false
	HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 dvc exp run -n paper $(PAPER)

# Wheels that benchmarks/gpu.sh installs on a lent GPU machine, whose image lacks pydantic (params
# validation); one pydantic_core per CPython it may run. Into .whl/ (git-ignored), carried by the run.
GPU_WHEELS := pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
	typing_extensions==4.16.0

gpu-wheels:
	for v in 3.11 3.12 3.13; do \
		python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version $$v \
			--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
			--dest .whl $(GPU_WHEELS) || exit 1; \
	done
