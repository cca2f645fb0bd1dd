"""The fusion baselines of model.arch: TFN's fusion vector, LMF as a rank-R TFN (both ways, float64), MulT's
masks, MISA's three losses on hand-computed cases, every baseline trained and scored on the demo with MMoLRE's
heads and loss, saved and loaded by its config."""

from __future__ import annotations

import json

import pytest
import torch

from mmolre.baselines.fusion_lmf import LowRankFusion
from mmolre.baselines.fusion_misa import central_moment_discrepancy, misa_losses, orthogonality
from mmolre.baselines.fusion_tfn import TensorFusion, tensor_fusion
from mmolre.evaluate import evaluate
from mmolre.inference import load_checkpoint
from mmolre.architectures import build_model
from mmolre.baselines import MODULES
from mmolre.model_config import MMoLREConfig
from mmolre.model_info import closed_form_params, measured_flops
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


def tiny(arch: str, **given) -> MMoLREConfig:
    return MMoLREConfig(dims={"text": 6, "audio": 5}, d_model=8, n_experts=2, rank=2, n_heads=2, arch=arch,
                        fusion_dim=4, **given)


def test_mult_output_ignores_padded_positions_and_absent_modalities():
    torch.manual_seed(0)
    model = build_model(tiny("fusion_mult")).eval()
    text, audio = torch.randn(3, 5, 6), torch.randn(3, 7, 5)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    audio_mask = torch.tensor([[1] * 4 + [0] * 3, [1] * 7, [0] * 7], dtype=torch.bool)  # sample 2: no audio
    with torch.no_grad():
        before = model(text=text, text_mask=text_mask, audio=audio, audio_mask=audio_mask)
        after = model(text=torch.where(text_mask[..., None], text, 99.0), text_mask=text_mask,
                      audio=torch.where(audio_mask[..., None], audio, -42.0), audio_mask=audio_mask)
        real = model(text=text, text_mask=text_mask, audio=audio + 1.0, audio_mask=audio_mask)
    assert torch.equal(before.sentiment, after.sentiment) and torch.equal(before.emotions, after.emotions)
    assert real.sentiment[2] == before.sentiment[2] and not torch.equal(real.sentiment[:2], before.sentiment[:2])


def test_cmd_on_a_hand_computed_case():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # means 0.5, central moments 0.25, 0, 0.0625, 0
    y = torch.full((2, 2), 0.25)  # mean 0.25, no spread
    expected = 2 ** 0.5 * (0.25 + 0.25 + 0.0625)  # |mean gap| + |c2 gap| + |c4 gap|, each over two equal dims
    assert central_moment_discrepancy(x, y).item() == pytest.approx(expected, rel=1e-6)
    assert central_moment_discrepancy(x, x).item() == 0.0


def test_orthogonality_on_hand_computed_cases():
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, -1.0], [0.0, -1.0]])  # centred, uncorrelated with a
    assert orthogonality(a, b).item() == pytest.approx(0.0, abs=1e-12)
    # a with itself: A^T A = [[4, 0], [0, 0]] for unit rows, mean squared entry 16 / 4
    assert orthogonality(a, a).item() == pytest.approx(4.0, rel=1e-5)


def test_misa_losses_and_their_weights_in_the_model_loss():
    u = {"text": torch.tensor([[1.0, 2.0]]), "audio": torch.tensor([[0.0, 0.0]])}
    zero = {m: torch.zeros(1, 2) for m in u}
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    same = {"text": a, "audio": a}
    losses = misa_losses({m: a for m in u}, same, same, same)
    assert losses["sim"].item() == 0.0 and losses["recon"].item() == 0.0
    assert losses["diff"].item() == pytest.approx(3 * 4.0, rel=1e-5)  # two (c, p) pairs and one (p, p) pair
    assert misa_losses(u, zero, zero, zero)["recon"].item() == pytest.approx((1 + 4) / 2 / 2)  # text's MSE 2.5
    torch.manual_seed(0)
    batch = dict(text=torch.randn(4, 3, 6), text_mask=torch.ones(4, 3, dtype=torch.bool), audio=torch.randn(4, 5, 5),
                 audio_mask=torch.ones(4, 5, dtype=torch.bool), sentiment=torch.randn(4), emotions=torch.rand(4, 6))
    weights = dict(misa_sim_weight=0.5, misa_diff_weight=2.0, misa_recon_weight=3.0)
    model = build_model(tiny("fusion_misa", dropout=0.0, **weights))
    out = model(**batch)
    u = model.pooled({"text": model.inputs["text"](batch["text"]), "audio": model.inputs["audio"](batch["audio"])},
                     {"text": batch["text_mask"], "audio": batch["audio_mask"]})
    c, p = {m: model.invariant(u[m]) for m in u}, {m: model.specific[m](u[m]) for m in u}
    own = misa_losses(u, c, p, {m: model.decoder(c[m] + p[m]) for m in u})
    expected = 0.5 * own["sim"] + 2.0 * own["diff"] + 3.0 * own["recon"]
    assert torch.allclose(out.loss_aux, expected) and torch.allclose(out.loss, out.loss_sa + out.loss_er + expected)
    assert model(**{k: v for k, v in batch.items() if k not in ("sentiment", "emotions")}).loss is None


PARTS = {"late_fusion": {"unimodal", "fusion"}, "fusion_tfn": {"unimodal", "fusion"}, "fusion_lmf": {"unimodal", "fusion"},
         "fusion_mult": {"crossmodal", "self_attention", "out"},
         "fusion_misa": {"unimodal", "fusion", "invariant", "specific", "decoder", "transformer"}}


@pytest.mark.parametrize("arch", list(PARTS))
def test_every_baseline_trains_on_the_demo_with_mmolres_heads_and_loss(arch, tiny_demo, tmp_path):
    params = {**tiny_demo["params"], "runs": {"main": {"arch": arch, "fusion_dim": 8, "fusion_rank": 2,
                                                       "mult_layers": 1}}}
    train(params, "main", tiny_demo["features"], tmp_path / "models", tmp_path / "reports" / "train")
    metrics = evaluate(params, tiny_demo["features"], tmp_path / "models", tmp_path / "reports")["main"]
    assert set(metrics["demo"]) == {"msa", "mer"} and "mae" in metrics["demo"]["msa"]
    model, _ = load_checkpoint(tmp_path / "models" / "main")
    assert type(model).__module__ == f"mmolre.baselines.{arch}" and model.config.arch == arch
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"inputs", "sa_head", "er_head", *PARTS[arch]}
    cost = json.loads((tmp_path / "reports" / "costs.json").read_text())["main"]
    lengths = cost["lengths"]
    assert cost["params"] == sum(p.numel() for p in model.parameters()) == closed_form_params(model.config)
    assert cost["flops_per_utterance"] == measured_flops(model, lengths)
    assert 10 < lengths["text"] < 60 and lengths["audio"] > 10  # the test split's mean lengths
    text = report(params, tmp_path / "reports").read_text()  # no experts: no routing figures, the rest as ever
    assert "figures/routing.png" not in text and "figures/scatter.png" in text
    assert f"| main | text+audio | {arch} | – | demo |" in text and f"| {cost['params']:,} |" in text
    assert not (tmp_path / "reports" / "figures" / "routing.png").exists()


def test_no_fusion_variant_carries_a_published_models_name():
    """The published names are the field's models (mmolre/field/, which read MMSA's three modalities); the
    variants on MMoLRE's footing have names of their own."""
    from mmolre.model_config import FIELD_ARCHS

    assert not set(MODULES) & set(FIELD_ARCHS)
    for field in FIELD_ARCHS[:4]:
        with pytest.raises(ValueError) as error:
            tiny(field)
        assert str(error.value) == (f"arch={field} reads text, audio and video, as MMSA's does: set modalities: "
                                    "[text, audio, video]")
    assert set(MODULES) == {"late_fusion", "fusion_tfn", "fusion_lmf", "fusion_mult", "fusion_misa"}
