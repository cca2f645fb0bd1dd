"""The MMoLRE model: shapes, parameter counts from paper.md's formula, equations, masking, loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmolre.model import (TASKS, ExpertMixture, LowRankExpert, MMoLRE, MMoLREConfig, UniTSEBlock,
                          multitask_loss)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(**kw) -> MMoLREConfig:
    base = dict(text_dim=12, audio_dim=10, d_model=16, n_experts=3, rank=4, n_heads=2, dropout=0.0)
    return MMoLREConfig(**{**base, **kw})


def inputs(batch=3, t=7, a=9, text_dim=12, audio_dim=10, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    text, audio = torch.randn(batch, t, text_dim, generator=g, dtype=dtype), torch.randn(batch, a, audio_dim, generator=g, dtype=dtype)
    text_mask = torch.ones(batch, t, dtype=torch.bool)
    audio_mask = torch.ones(batch, a, dtype=torch.bool)
    text_mask[0, 4:] = False
    audio_mask[1, 5:] = False
    return dict(text=text, text_mask=text_mask, audio=audio, audio_mask=audio_mask)


def test_low_rank_expert_parameters_match_paper_formula():
    d, r = 768, 128
    assert count(LowRankExpert(d, r)) == 3 * d * r + r + r * d + d == 394_112
    assert count(LowRankExpert(d, d)) == 2_360_832  # the full-rank twin


def test_unitse_block_parameters_are_n_shared_two_specific_two_routers():
    cfg = MMoLREConfig(d_model=768, n_experts=15, rank=128)
    d, n = 768, 15
    expected = (n + 2) * 394_112 + 2 * (d * (n + 1) + n + 1) + 2 * 2 * d  # + two LayerNorms
    assert count(UniTSEBlock(cfg)) == expected


def test_whole_model_parameter_count():
    cfg = tiny()
    d, n, r, k = 16, 3, 4, 3
    expert = k * d * r + r + r * d + d
    block = (n + 2) * expert + 2 * (d * (n + 1) + n + 1) + 4 * d
    inputs_ = (12 * d + d) + (10 * d + d)
    unitse = 2 * 2 * block  # 2 modalities x 2 blocks
    fusion = 2 * (2 * (4 * d * d + 4 * d) + 2 * 2 * d + (2 * d * 2 + 2))  # per task: 2 attentions, 2 LNs, gate
    heads = (d * 8 + 8 + 8 + 1) + (d * 8 + 8 + 8 * 6 + 6)
    assert count(MMoLRE(cfg)) == inputs_ + unitse + fusion + heads


def test_output_shapes_and_loss_parts():
    torch.manual_seed(0)
    model = MMoLRE(tiny()).eval()
    out = model(**inputs(), sentiment=torch.tensor([0.5, -1.0, 2.0]), emotions=torch.rand(3, 6),
                return_routing=True)
    assert out.sentiment.shape == (3,) and out.emotions.shape == (3, 6)
    assert out.loss.item() == pytest.approx((out.loss_sa + out.loss_er).item(), rel=1e-6)
    assert out.routing["block1/text/sa"].shape == (3, 4)  # N shared + 1 task-specific
    assert torch.allclose(out.routing["block2/audio/er"].sum(-1), torch.ones(3))
    assert out.routing["fusion/sa"].shape == (3, 2)


def test_unimodal_model_reads_only_its_modality():
    model = MMoLRE(tiny(modalities=("text",))).eval()
    x = inputs()
    out = model(text=x["text"], text_mask=x["text_mask"])
    assert out.sentiment.shape == (3,)
    assert "audio" not in model.unitse
    with pytest.raises(ValueError, match="pass audio"):
        MMoLRE(tiny(modalities=("audio",)))(text=x["text"], text_mask=x["text_mask"])


def test_low_rank_expert_equation():
    """f(x)_t = W2 GELU(sum_k W1[k] x_{t+k-1} + b1) + b2, zero padding at the ends."""
    torch.manual_seed(1)
    expert = LowRankExpert(5, 3).double()
    x = torch.randn(1, 5, 6, dtype=torch.float64)  # (B, d, T)
    w1, b1 = expert.conv1.weight, expert.conv1.bias  # (r, d, 3)
    w2, b2 = expert.conv2.weight[:, :, 0], expert.conv2.bias  # (d, r)
    xp = F.pad(x[0], (1, 1))
    expected = torch.stack([w2 @ F.gelu(sum(w1[:, :, k] @ xp[:, t + k] for k in range(3)) + b1) + b2
                            for t in range(6)], dim=1)
    assert torch.allclose(expert(x)[0], expected, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_mixture_equation(fused):
    """y = sum_n g_n f_sh^(n)(x) + g_{N+1} f_ts(x), g = softmax(W_g x + b_g) per token."""
    torch.manual_seed(2)
    cfg = tiny(fused_experts=fused)
    block = UniTSEBlock(cfg).double()
    mixture: ExpertMixture = block.mixtures["sa"]
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    y, gates = mixture(x)
    g = torch.softmax(x @ mixture.router.weight.T + mixture.router.bias, dim=-1)
    experts = [*block.shared.experts, mixture.specific.experts[0]]
    outs = [e(x.transpose(1, 2)).transpose(1, 2) for e in experts]  # each (B, T, d)
    expected = sum(g[..., n:n + 1] * outs[n] for n in range(len(experts)))
    assert torch.allclose(gates, g, atol=1e-12)
    assert torch.allclose(y, expected, atol=1e-12)


def test_shared_experts_are_shared_across_tasks_and_block_output_is_residual_layernorm():
    torch.manual_seed(3)
    block = UniTSEBlock(tiny()).double().eval()
    assert block.mixtures["sa"].shared[0] is block.mixtures["er"].shared[0] is block.shared
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    out, _ = block(x, mask)
    for task in TASKS:
        y, _ = block.mixtures[task](x)
        assert torch.allclose(out[task], block.norms[task](x + y), atol=1e-12)


def test_fused_equals_loop_in_float64_outputs_and_gradients():
    torch.manual_seed(4)
    fused = MMoLRE(tiny(fused_experts=True)).double()
    loop = MMoLRE(tiny(fused_experts=False)).double()
    loop.load_state_dict(fused.state_dict())
    x = inputs(dtype=torch.float64)
    labels = dict(sentiment=torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64),
                  emotions=torch.rand(3, 6, dtype=torch.float64))
    a, b = fused(**x, **labels), loop(**x, **labels)
    a.loss.backward(); b.loss.backward()
    assert torch.allclose(a.sentiment, b.sentiment, rtol=1e-6, atol=0)
    assert torch.allclose(a.emotions, b.emotions, rtol=1e-6, atol=0)
    for (name, p), q in zip(fused.named_parameters(), loop.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-12), name


def test_padding_does_not_change_real_outputs():
    torch.manual_seed(5)
    model = MMoLRE(tiny()).double().eval()
    x = inputs(dtype=torch.float64)
    batched = model(**x)
    alone = model(text=x["text"][:1, :4], text_mask=x["text_mask"][:1, :4], audio=x["audio"][:1],
                  audio_mask=x["audio_mask"][:1])
    assert torch.allclose(batched.sentiment[0], alone.sentiment[0], atol=1e-10)
    assert torch.allclose(batched.emotions[0], alone.emotions[0], atol=1e-10)


def test_loss_uses_only_the_labels_a_sample_has():
    pred = torch.tensor([1.0, 0.0, -1.0])
    logits = torch.zeros(3, 6)
    logits[2] = 2.0
    sentiment = torch.tensor([2.0, math.nan, 0.0])
    emotions = torch.full((3, 6), math.nan)
    emotions[2] = torch.tensor([1.0, 0, 0, 0, 0, 0])
    loss, loss_sa, loss_er = multitask_loss(pred, logits, sentiment, emotions, None, 0.5)
    assert loss_sa == pytest.approx((1.0 + 1.0) / 2)
    # row 2 only: BCE(2, 1) once and BCE(2, 0) five times
    bce_pos, bce_neg = math.log1p(math.exp(-2.0)), 2.0 + math.log1p(math.exp(-2.0))
    assert loss_er == pytest.approx((bce_pos + 5 * bce_neg) / 6, rel=1e-6)
    assert loss == pytest.approx(float(loss_sa) + 0.5 * float(loss_er), rel=1e-6)
    pos_weight = torch.full((6,), 3.0)
    _, _, weighted = multitask_loss(pred, logits, sentiment, emotions, pos_weight, 1.0)
    assert weighted == pytest.approx((3 * bce_pos + 5 * bce_neg) / 6, rel=1e-6)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="modalities"):
        MMoLREConfig(modalities=("video",))
    with pytest.raises(ValueError, match="divisible"):
        MMoLREConfig(d_model=30, n_heads=8)
