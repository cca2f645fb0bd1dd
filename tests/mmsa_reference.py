"""MMSA 2.2.1's own models and trainers (the test extra installs it), for proving mmolre's field models equal to
them: its model for an arch, corpus and feature widths; its trainer; a small local BERT of width 768 for MISA."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from torch import nn

DIMS = {"mosi": (768, 5, 20), "mosei": (768, 74, 35)}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(25)]


def mmsa_config(arch: str, corpus: str, **values):
    """MMSA's EasyDict config of `arch` for `corpus` as its runner completes it, `values` replacing keys."""
    from MMSA.config import get_config_regression

    args = get_config_regression(arch, corpus)
    args.update(train_mode="regression", feature_dims=DIMS[corpus], KeyEval="Loss", device=torch.device("cpu"),
                cur_seed=1111, dataset_name=corpus)
    args.update({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})
    return args


def mmsa_dataset(args, pickle: Path, split: str = "train"):
    """MMSA's own dataset of a split of `pickle`, as its runner's loader builds it (time averages for the models
    with need_normalized)."""
    from MMSA.data_loader import MMDataset

    args.update(featurePath=str(pickle), custom_feature=None, feature_T=None, feature_A=None, feature_V=None,
                feature_dims=list(args["feature_dims"]))
    return MMDataset(args, mode=split)


def mmsa_model(args) -> nn.Module:
    from MMSA.models import AMIO

    return AMIO(args)


def mmsa_trainer(args):
    """MMSA's trainer for args.model_name, with the one patch torch >= 2.7 needs (ReduceLROnPlateau lost its
    `verbose`; docs/field-models.md) and its logging silenced."""
    import MMSA.trains.singleTask  # noqa: F401
    from MMSA.trains import ATIO

    module = sys.modules["MMSA.trains.singleTask.MULT"]
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau
    module.ReduceLROnPlateau = lambda *a, verbose=None, **k: scheduler(*a, **k)
    logging.getLogger("MMSA").setLevel(logging.CRITICAL)
    return ATIO().getTrain(args)


def small_bert(folder: Path, vocab_size: int = len(VOCAB)) -> Path:
    """A one-layer BERT of width 768 (12 heads, no dropout) saved with a vocabulary of its first 30 words
    (`vocab_size` ids: processed_forms.py's files hold ids up to 3000)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=32,
                        vocab_size=vocab_size, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder


def no_dropout(model: nn.Module) -> nn.Module:
    """Every dropout of `model` off, torch's attention dropout (MISA's fusion layer) included."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    return model
