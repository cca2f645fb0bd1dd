# The two commands of the README. Both create .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: repro test setup clean paper standard gpu-wheels

$(BIN)/mmolre: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/mmolre

repro: setup
	dvc config core.analytics false
	dvc repro

# Test files in parallel, one per worker (module fixtures are shared within a file), a thread each (conftest).
test: setup
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

clean:
	rm -rf data/raw data/prepared data/features models

# The paper's setting (docs/reproducing-the-paper.md): CMU-MOSI + CMU-MOSEI from the MMSA release at
# MMSA_ROOT (its MOSI/ and MOSEI/), the MOSEI label sequence from MOSEI_LABELS (your CMU_MOSEI_Labels.csd) or
# else the official host, data.mirror or LABELS_HUB (a Hugging Face dataset repo); RoBERTa + Data2Vec,
# d=768, N=15, r=128. Needs the internet for the encoders and, in practice, a GPU.
MMSA_ROOT ?=
MOSEI_LABELS ?=
LABELS_HUB ?=
PAPER := -S data.dataset=cmu -S data.mmsa_root=$(abspath $(MMSA_ROOT)) \
	$(if $(MOSEI_LABELS),-S 'data.archives=[$(abspath $(MOSEI_LABELS))]') \
	$(if $(LABELS_HUB),-S data.labels_hub=$(LABELS_HUB)) -S featurize.text_encoder=roberta-base \
	-S featurize.audio_encoder=facebook/data2vec-audio-base -S featurize.video_encoder=null -S '~runs.trimodal' \
	-S model.d_model=768 -S model.n_experts=15 \
	-S model.rank=128 -S model.n_heads=8 -S train.lr=0.0001 -S train.epochs=40 -S train.patience=8 \
	-S promote.metric=mosei.msa.mae -S 'runs.main.seeds=[1111,1,11]'

paper: setup
	@test -d "$(MMSA_ROOT)/MOSI" -a -d "$(MMSA_ROOT)/MOSEI" || { echo "make paper: MMSA_ROOT=$(MMSA_ROOT) must hold \
	MMSA's MOSI/ and MOSEI/ folders: make paper MMSA_ROOT=/path [MOSEI_LABELS=/path/CMU_MOSEI_Labels.csd | \
	LABELS_HUB=<repo id>[@revision]] (docs/reproducing-the-paper.md)" >&2; exit 2; }
	dvc config core.analytics false
	HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 dvc exp run -n paper $(PAPER)

# The field's standard comparison (docs/processed-features.md, docs/field-models.md): on MMSA's processed unaligned
# MOSI and MOSEI features at PROCESSED (its MOSI/Processed/unaligned_50.pkl and MOSEI/Processed/unaligned_50.pkl),
# MMoLRE at the paper's size, the field's models as MMSA 2.2.1 trains them (FIELD_RUNS, each at MMSA's preset of the
# corpus; MISA downloads bert-base-uncased, so this target needs the internet) and the five fusion-only variants, every run on text, audio and vision over MMSA's five seeds (1111-1115,
# whose mean MMSA publishes). One DVC experiment per corpus and data view (each utterance's own frames, and the
# padded arrays MMSA's loader hands its models: data.processed_view), queued and run by JOBS `dvc queue` workers
# (up to 4 at once where the machine has room); each report sets MMoLRE and the field's models beside MMSA's
# published rows of the same models, with intervals and paired tests, and the variants in a section of their own
# (docs/comparisons.md). STANDARD_MODEL: MMoLRE's size (the paper's).
PROCESSED ?=
STANDARD_RUN := modalities:[text,audio,video],seeds:[1111,1112,1113,1114,1115]
STANDARD_MODEL ?= -S model.d_model=768 -S model.n_experts=15 -S model.rank=128 -S model.n_heads=8 \
	-S train.lr=0.0001 -S train.epochs=40 -S train.patience=8
FIELD_RUNS ?= lf_dnn tfn lmf mult misa
JOBS ?= 1
STANDARD := -S '~runs.text_only' -S '~runs.audio_only' -S '~runs.trimodal' -S 'runs.main={$(STANDARD_RUN)}' \
	$(foreach arch,$(FIELD_RUNS) late_fusion fusion_tfn fusion_lmf fusion_mult fusion_misa,-S '+runs.$(arch)={arch:$(arch),$(STANDARD_RUN)}') \
	-S evaluate.robustness=false $(STANDARD_MODEL)

standard: setup
	@for corpus in MOSI MOSEI; do test -f "$(PROCESSED)/$$corpus/Processed/unaligned_50.pkl" || { echo "make standard: \
	PROCESSED=$(PROCESSED) must hold MMSA's $$corpus/Processed/unaligned_50.pkl: make standard PROCESSED=/path/to/MMSA \
	(docs/processed-features.md)" >&2; exit 2; }; done
	dvc config core.analytics false
	for corpus in mosi mosei; do for view in own loader; do \
		dvc exp run --queue -n standard-$$corpus-$$view -S data.dataset=$$corpus -S data.processed_view=$$view \
		-S promote.metric=$$corpus.msa.mae -S data.processed=$(abspath $(PROCESSED))/$$(echo $$corpus | tr a-z A-Z)/Processed/unaligned_50.pkl \
		$(STANDARD) || exit 1; done; done
	HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 dvc queue start --jobs $(JOBS)  # MISA fine-tunes bert-base-uncased
	@while dvc queue status | grep -E '^[0-9a-f]+ +standard-mos(i|ei)-(own|loader) .*(Queued|Running)' >/dev/null; do sleep 30; done
	@dvc queue status | grep -E 'standard-mos'; ! dvc queue status | grep -E 'standard-mos.* Failed' \
	|| { echo "make standard: an experiment failed: dvc queue logs standard-<corpus>-<view>" >&2; exit 1; }

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
