"""The fusion baselines of model.arch: TFN's fusion vector, LMF as a rank-R TFN (both ways, float64), every
baseline trained and scored on the demo with MMoLRE's heads and loss, saved and loaded by its config."""

from __future__ import annotations

import pytest
import torch

from mmolre.baselines.lmf import LowRankFusion
from mmolre.baselines.tfn import TensorFusion, tensor_fusion
from mmolre.evaluate import evaluate
from mmolre.inference import load_checkpoint
from mmolre.report import report
from mmolre.train import train


def test_tfn_fusion_holds_both_vectors_their_products_and_the_constant():
    g = torch.Generator().manual_seed(0)
    h_t, h_a = torch.randn(2, 3, generator=g), torch.randn(2, 4, generator=g)
    z = tensor_fusion([h_t, h_a]).view(2, 4, 5)  # (d_t + 1)(d_a + 1) = 4 x 5 entries
    assert tensor_fusion([h_t, h_a]).shape == (2, 20)
    assert torch.equal(z[:, :3, 4], h_t) and torch.equal(z[:, 3, :4], h_a)  # each unimodal vector (times 1)
    assert z[:, 3, 4].tolist() == [1.0, 1.0] and torch.allclose(z[:, :3, :4], h_t[:, :, None] * h_a[:, None, :])


def tfn_weight_of(lmf: LowRankFusion, dims: tuple[int, int]) -> torch.Tensor:
    """W[k, i, j] = sum_r lambda_r A_t[i, r, k] A_a[j, r, k]: the TFN weight of an LMF's factors."""
    a_t = lmf.factors["text"].view(dims[0] + 1, lmf.rank, lmf.d)
    a_a = lmf.factors["audio"].view(dims[1] + 1, lmf.rank, lmf.d)
    return torch.einsum("r,irk,jrk->kij", lmf.weights, a_t, a_a)


def test_lmf_is_tfn_with_a_rank_r_weight_both_ways():
    torch.manual_seed(0)
    dims, d, rank = (3, 4), 6, 2
    pooled = {"text": torch.randn(5, 3, dtype=torch.float64), "audio": torch.randn(5, 4, dtype=torch.float64)}
    lmf = LowRankFusion(("text", "audio"), 0, d, rank).double()  # factors replaced below: widths 3 and 4
    lmf.factors = torch.nn.ParameterDict({"text": torch.nn.Parameter(torch.randn(4, rank * d, dtype=torch.float64)),
                                          "audio": torch.nn.Parameter(torch.randn(5, rank * d, dtype=torch.float64))})
    lmf.weights.data = torch.randn(rank, dtype=torch.float64)
    lmf.bias.data = torch.randn(d, dtype=torch.float64)
    tfn = TensorFusion(("text", "audio"), 3, d).double()  # (3 + 1)(3 + 1) inputs: replaced by a (4 x 5) weight
    tfn.linear = torch.nn.Linear(20, d, dtype=torch.float64)
    with torch.no_grad():  # LMF -> TFN: the weight tensor its factors make
        tfn.linear.weight.copy_(tfn_weight_of(lmf, dims).reshape(d, 20))
        tfn.linear.bias.copy_(lmf.bias)
    assert torch.allclose(tfn(pooled), lmf(pooled), atol=1e-12, rtol=0)
    # TFN -> LMF: a TFN weight of CP rank R (built from random rank-one terms) is reproduced by the LMF
    # with those terms as factors
    a_t, a_a, lam = (torch.randn(4, rank, d, dtype=torch.float64), torch.randn(5, rank, d, dtype=torch.float64),
                     torch.randn(rank, dtype=torch.float64))
    with torch.no_grad():
        tfn.linear.weight.copy_(torch.einsum("r,irk,jrk->kij", lam, a_t, a_a).reshape(d, 20))
        lmf.factors["text"].copy_(a_t.reshape(4, rank * d))
        lmf.factors["audio"].copy_(a_a.reshape(5, rank * d))
        lmf.weights.copy_(lam)
        lmf.bias.copy_(tfn.linear.bias)
    assert torch.allclose(tfn(pooled), lmf(pooled), atol=1e-12, rtol=0)


@pytest.mark.parametrize("arch", ["late_fusion", "tfn", "lmf"])
def test_every_baseline_trains_on_the_demo_with_mmolres_heads_and_loss(arch, tiny_demo, tmp_path):
    params = {**tiny_demo["params"], "runs": {"main": {"arch": arch, "fusion_dim": 8, "fusion_rank": 2}}}
    train(params, "main", tiny_demo["features"], tmp_path / "models", tmp_path / "reports" / "train")
    metrics = evaluate(params, tiny_demo["features"], tmp_path / "models", tmp_path / "reports")["main"]
    assert set(metrics["demo"]) == {"msa", "mer"} and "mae" in metrics["demo"]["msa"]
    model, _ = load_checkpoint(tmp_path / "models" / "main")
    assert type(model).__module__ == f"mmolre.baselines.{arch}" and model.config.arch == arch
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"inputs", "unimodal", "fusion", "sa_head",
                                                                     "er_head"}
    text = report(params, tmp_path / "reports").read_text()  # no experts: no routing figures, the rest as ever
    assert "figures/routing.png" not in text and "figures/scatter.png" in text
    assert not (tmp_path / "reports" / "figures" / "routing.png").exists()
