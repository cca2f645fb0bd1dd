"""Parameter and FLOP accounting: closed form == what the built model has and torch counts."""

import dataclasses

import pytest

from mmolre.architectures import build_model
from mmolre.model import MMoLRE
from mmolre.model_config import VARIANTS, MMoLREConfig, Variant
from mmolre.model_info import closed_form_flops, closed_form_params, info_rows, measured_flops

SMALL = MMoLREConfig(dims={"text": 24, "audio": 12}, d_model=32, n_experts=3, rank=4, n_heads=4)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("modalities", [("text", "audio"), ("audio",)])
def test_closed_form_matches_the_model(variant, modalities):
    cfg = dataclasses.replace(SMALL, variant=variant, modalities=modalities)
    model = MMoLRE(cfg)
    assert closed_form_params(cfg) == sum(p.numel() for p in model.parameters())
    assert closed_form_flops(cfg, {"text": 7, "audio": 11}) == measured_flops(model, {"text": 7, "audio": 11})


def test_paper_size_low_rank_against_full_rank_twin():
    low, full = info_rows(MMoLREConfig(), {"text": 50, "audio": 250}, measure=False)
    # one expert: 394,112 parameters low-rank, 2,360,832 full-rank (paper.md); 17 experts per block,
    # 2 blocks, 2 modalities -> the expert difference alone is 68 x 1,966,720
    assert full["params"] - low["params"] == 68 * (2_360_832 - 394_112)
    assert low["params"] == 36_965_387
    assert full["flops"] > 4 * low["flops"]


@pytest.mark.parametrize("design", [{"expert": "lowrank_linear"}, {"rank": (2, 4, 6)}, {"router": "topk", "top_k": 2},
                                    {"router": "top_p", "top_p": 0.5},
                                    {"rank": (2, 4, 6), "expert": "lowrank_linear", "variant": "no_specific"},
                                    {"rank": (2, 4, 6), "variant": "full_rank"}])
def test_closed_form_matches_every_expert_design(design):
    cfg = dataclasses.replace(SMALL, **design)
    model = MMoLRE(cfg)
    assert closed_form_params(cfg) == sum(p.numel() for p in model.parameters())
    assert closed_form_flops(cfg, {"text": 7, "audio": 11}) == measured_flops(model, {"text": 7, "audio": 11})


def test_per_expert_ranks_count_by_hand():
    """Shared ranks (2, 4, 6) and task experts of rank 6 (the largest), d=32, k=3, one modality, one block."""
    cfg = MMoLREConfig(dims={"text": 32, "audio": 32}, d_model=32, n_experts=3, rank=(2, 4, 6), n_heads=4,
                       modalities=("audio",), n_blocks=1)
    expert = lambda r: 3 * 32 * r + r + r * 32 + 32
    block = expert(2) + expert(4) + expert(6) + 2 * expert(6) + 2 * (32 * 4 + 4) + 2 * 2 * 32
    fusion = 2 * (32 * 1 + 1)
    heads = (32 * 16 + 16 + 16 * 1 + 1) + (32 * 16 + 16 + 16 * 6 + 6)
    assert closed_form_params(cfg) == block + fusion + heads == sum(p.numel() for p in MMoLRE(cfg).parameters())


def test_a_new_variant_is_one_table_entry(monkeypatch):
    """An ablation added as one entry of model_config.VARIANTS (here: full-rank shared experts and no task-specific
    expert) is taken by params validation, built, trained a step and counted, with no other change."""
    import torch

    from mmolre.params import load_params
    from mmolre.runs import run_spec, validate_runs
    from conftest import ROOT

    monkeypatch.setitem(VARIANTS, "full_rank_no_specific", Variant(specific=False, full_rank=True))
    params = load_params(ROOT / "params.yaml", ["model.variant=full_rank_no_specific"])
    validate_runs(params)
    cfg = run_spec(params, "main").config(dims={"text": 24, "audio": 12})
    assert (cfg.n_shared, cfg.task_specific, cfg.shared_ranks) == (4, False, (128,) * 4)
    model = MMoLRE(cfg)
    assert closed_form_params(cfg) == sum(p.numel() for p in model.parameters())
    assert closed_form_flops(cfg, {"text": 7, "audio": 11}) == measured_flops(model, {"text": 7, "audio": 11})
    assert [len(group.experts) for group in (model.unitse["text"].blocks[0].shared,)] == [4]
    assert model.unitse["text"].blocks[0].mixtures["sa"].specific is None
    out = model.train()(text=torch.randn(2, 5, 24), text_mask=torch.ones(2, 5, dtype=torch.bool),
                        audio=torch.randn(2, 9, 12), audio_mask=torch.ones(2, 9, dtype=torch.bool),
                        sentiment=torch.tensor([1.0, -2.0]), emotions=torch.zeros(2, 6))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in model.parameters())  # every part is used


@pytest.mark.parametrize("arch", ["late_fusion", "fusion_tfn", "fusion_lmf", "fusion_mult", "fusion_misa"])
@pytest.mark.parametrize("modalities", [("text", "audio"), ("audio",)])
def test_closed_form_matches_every_baseline(arch, modalities):
    cfg = MMoLREConfig(dims={"text": 12, "audio": 10}, d_model=16, n_experts=2, rank=4, n_heads=2, arch=arch,
                       fusion_dim=6, fusion_rank=3, mult_layers=3, modalities=modalities)
    model = build_model(cfg)
    assert closed_form_params(cfg) == sum(p.numel() for p in model.parameters())
    assert closed_form_flops(cfg, {"text": 7, "audio": 9}) == measured_flops(model, {"text": 7, "audio": 9})
