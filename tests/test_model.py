"""The MMoLRE model: shapes, parameter counts from paper.md's formula, equations, masking, loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmolre.label_spaces import LABEL_SPACES
from mmolre.model import (ExpertMixture, LowRankExpert, MMoLRE, UniTSEBlock, load_balancing_loss, multitask_loss,
                          top_p_gates)
from mmolre.model_config import JOINT, TASKS, MMoLREConfig


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(**kw) -> MMoLREConfig:
    base = dict(dims={"text": 12, "audio": 10}, d_model=16, n_experts=3, rank=4, n_heads=2, dropout=0.0)
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
    y, gates, _ = mixture(x)
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
    out, _, _ = block(x, mask)
    for task in TASKS:
        y, _, _ = block.mixtures[task](x)
        assert torch.allclose(out[task], block.norms[task](x + y), atol=1e-12)


DESIGNS = [{}, {"expert": "lowrank_linear"}, {"router": "topk", "top_k": 2}, {"rank": (2, 4, 6)},
           {"rank": (2, 4, 6), "expert": "lowrank_linear", "router": "topk", "top_k": 3},
           {"router": "top_p", "top_p": 0.6}]


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()) or "paper")
def test_fused_equals_loop_in_float64_outputs_and_gradients(design):
    torch.manual_seed(4)
    fused = MMoLRE(tiny(fused_experts=True, **design)).double()
    loop = MMoLRE(tiny(fused_experts=False, **design)).double()
    loop.load_state_dict(fused.state_dict())
    x = inputs(dtype=torch.float64)
    labels = dict(sentiment=torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64),
                  emotions=torch.rand(3, 6, dtype=torch.float64))
    a, b = fused(**x, **labels), loop(**x, **labels)
    a.loss.backward(); b.loss.backward()
    assert torch.allclose(a.sentiment, b.sentiment, rtol=1e-6, atol=0)
    assert torch.allclose(a.emotions, b.emotions, rtol=1e-6, atol=0)
    for (name, p), q in zip(fused.named_parameters(), loop.parameters(), strict=True):
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


def cmu_loss(pred, logits, sentiment, emotions, pos_weight, er_weight):
    return multitask_loss(LABEL_SPACES["cmu"], {"sa": pred, "er": logits}, {"sa": sentiment, "er": emotions},
                          pos_weight, er_weight)


def test_loss_uses_only_the_labels_a_sample_has():
    pred = torch.tensor([1.0, 0.0, -1.0])
    logits = torch.zeros(3, 6)
    logits[2] = 2.0
    sentiment = torch.tensor([2.0, math.nan, 0.0])
    emotions = torch.full((3, 6), math.nan)
    emotions[2] = torch.tensor([1.0, 0, 0, 0, 0, 0])
    loss, loss_sa, loss_er = cmu_loss(pred, logits, sentiment, emotions, None, 0.5)
    assert loss_sa == pytest.approx((1.0 + 1.0) / 2)
    # row 2 only: BCE(2, 1) once and BCE(2, 0) five times
    bce_pos, bce_neg = math.log1p(math.exp(-2.0)), 2.0 + math.log1p(math.exp(-2.0))
    assert loss_er == pytest.approx((bce_pos + 5 * bce_neg) / 6, rel=1e-6)
    assert loss == pytest.approx(float(loss_sa) + 0.5 * float(loss_er), rel=1e-6)
    pos_weight = torch.full((6,), 3.0)
    _, _, weighted = cmu_loss(pred, logits, sentiment, emotions, pos_weight, 1.0)
    assert weighted == pytest.approx((3 * bce_pos + 5 * bce_neg) / 6, rel=1e-6)
    pred.requires_grad_(True)  # a batch with no label of either task: zero losses, zero (finite) gradients
    loss, loss_sa, loss_er = cmu_loss(pred, logits, torch.full((3,), math.nan), torch.full((3, 6), math.nan),
                                      None, 1.0)
    assert (loss_sa.item(), loss_er.item()) == (0.0, 0.0)
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(3))


def test_top_p_keeps_the_fewest_experts_reaching_p_and_renormalises():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.9, 0.04, 0.03, 0.03], [0.25, 0.25, 0.25, 0.25]])
    gates = top_p_gates(probs, 0.7)
    assert (gates > 0).sum(-1).tolist() == [2, 1, 3]  # 0.5 + 0.3 >= 0.7; 0.9 alone; three quarters
    assert torch.allclose(gates.sum(-1), torch.ones(3))
    assert torch.allclose(gates[0], torch.tensor([0.5, 0.3, 0, 0]) / 0.8)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 6, generator=g) * 2, -1)
    for p in (0.3, 0.7, 0.95):
        gates = top_p_gates(probs, p)
        kept = gates > 0
        assert torch.allclose(gates.sum(-1), torch.ones(200))
        assert ((probs * kept).sum(-1) >= p - 1e-6).all()  # they reach p ...
        ordered = probs.sort(-1, descending=True).values
        fewest = (ordered.cumsum(-1) < p - 1e-6).sum(-1) + 1  # ... and no fewer experts would
        assert torch.equal(kept.sum(-1), fewest)


def test_top_p_reports_the_experts_each_token_uses():
    model = MMoLRE(tiny(router="top_p", top_p=0.5)).eval()
    out = model(**inputs(), return_routing=True)
    active = {k: v for k, v in out.routing.items() if k.startswith("active/")}
    assert sorted(active) == sorted(f"active/block{b}/{m}/{t}" for b in (1, 2) for m in ("audio", "text") for t in TASKS)
    assert all(((1 <= v) & (v <= 4)).all() for v in active.values())  # of 3 shared + 1 task expert
    assert not any(k.startswith("active/") for k in MMoLRE(tiny()).eval()(**inputs(), return_routing=True).routing)


def test_class_losses_are_cross_entropy_over_the_labelled_rows():
    """MELD: sentiment stored as -1/0/1, emotions one-hot; each loss is the mean -log softmax of the true class
    over the rows that have the label."""
    meld = LABEL_SPACES["meld"]
    sa_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    er_logits = torch.zeros(3, 7)
    er_logits[0, 1] = 3.0
    sentiment = torch.tensor([-1.0, 1.0, math.nan])
    emotions = torch.full((3, 7), math.nan)
    emotions[0] = torch.eye(7)[1]  # joy
    emotions[2] = torch.eye(7)[0]  # neutral
    loss, loss_sa, loss_er = multitask_loss(meld, {"sa": sa_logits, "er": er_logits},
                                            {"sa": sentiment, "er": emotions}, None, 0.5)
    nll = lambda logits, k: math.log(sum(math.exp(v) for v in logits)) - logits[k]
    assert loss_sa.item() == pytest.approx((nll([2, 0, 0], 0) + nll([0, 1, 0], 2)) / 2, rel=1e-6)
    assert loss_er.item() == pytest.approx((nll([0, 3, 0, 0, 0, 0, 0], 1) + nll([0] * 7, 0)) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(loss_sa.item() + 0.5 * loss_er.item(), rel=1e-6)


def test_a_regression_of_several_targets_averages_the_labelled_ones():
    vad = LABEL_SPACES["iemocap4_vad"]
    pred = torch.tensor([[3.0, 3.0, 3.0], [1.0, 2.0, 3.0]])
    target = torch.tensor([[4.0, math.nan, 1.0], [1.0, 1.0, 1.0]])
    _, loss_sa, _ = multitask_loss(vad, {"sa": pred, "er": torch.zeros(2, 4)},
                                   {"sa": target, "er": torch.full((2, 4), math.nan)}, None, 1.0)
    assert loss_sa.item() == pytest.approx((1 + 2 + 0 + 1 + 2) / 5)


def test_heads_follow_the_label_space():
    cfg = tiny(label_space="meld")
    model = MMoLRE(cfg)
    assert (model.sa_head[-1].out_features, model.er_head[-1].out_features) == (3, 7)
    out = model(**inputs())
    assert out.sentiment.shape == (3, 3) and out.emotions.shape == (3, 7)
    iemocap = MMoLRE(tiny(label_space="iemocap4"))
    assert iemocap.sa_head is None and iemocap.er_head[-1].out_features == 4
    with pytest.raises(ValueError, match="variant=msa_only has a head for sa only, and label space iemocap4 "
                                         "labels er only"):
        tiny(label_space="iemocap4", variant="msa_only")


def test_bad_config_is_refused_naming_every_broken_rule():
    with pytest.raises(ValueError) as raised:
        MMoLREConfig(d_model=30, rank=16, n_heads=8, modalities=("smell",))
    assert str(raised.value).splitlines() == ["modalities='smell': choose one of text, audio, video",
                                              "n_heads=8 must divide d_model=30"]


@pytest.mark.parametrize("variant, shared, specific, heads", [
    ("mmolre", 3, True, ("sa", "er")), ("no_shared", 0, True, ("sa", "er")), ("no_specific", 3, False, ("sa", "er")),
    ("full_rank", 3, True, ("sa", "er")), ("hard_sharing", 3, False, ("sa", "er")),
    ("msa_only", 3, True, ("sa",)), ("mer_only", 3, True, ("er",)),
])
def test_ablation_variants(variant, shared, specific, heads):
    torch.manual_seed(6)
    model = MMoLRE(tiny(variant=variant))
    block = model.unitse["text"].blocks[0]
    assert (len(block.shared.experts) if block.shared else 0) == shared
    mixture = next(iter(block.mixtures.values()))
    assert (mixture.specific is not None) == specific
    assert mixture.router.out_features == shared + int(specific)
    assert list(block.mixtures) == ([JOINT] if variant == "hard_sharing" else list(heads))
    rank = 16 if variant == "full_rank" else 4
    expert = (block.shared or mixture.specific).experts[0]
    assert expert.conv1.out_channels == rank
    out = model(**inputs(), sentiment=torch.tensor([0.5, -1.0, 2.0]), emotions=torch.rand(3, 6))
    assert (out.sentiment is not None) == ("sa" in heads) and (out.emotions is not None) == ("er" in heads)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # every parameter of a variant is used
    if heads == ("sa",):
        assert out.loss_er.item() == 0.0


def test_hard_sharing_feeds_both_heads_one_vector():
    torch.manual_seed(7)
    model = MMoLRE(tiny(variant="hard_sharing")).eval()
    assert list(model.fusion) == [JOINT]
    captured = {}
    model.sa_head[0].register_forward_pre_hook(lambda m, i: captured.update(sa=i[0]))
    model.er_head[0].register_forward_pre_hook(lambda m, i: captured.update(er=i[0]))
    model(**inputs())
    assert torch.equal(captured["sa"], captured["er"])


def test_fusion_equation():
    """t' = LN(t + MHA(t, a, a)), a' = LN(a + MHA(a, t, t)); p_m = masked mean; g = softmax(W [p_t; p_a] + b);
    v = g_t p_t + g_a p_a."""
    from mmolre.model import TaskAdaptiveFusion

    torch.manual_seed(8)
    fusion = TaskAdaptiveFusion(tiny()).double().eval()
    t, a = torch.randn(2, 4, 16, dtype=torch.float64), torch.randn(2, 6, 16, dtype=torch.float64)
    tm = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    am = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    v, g = fusion({"text": t, "audio": a}, {"text": tm, "audio": am})

    def attend(mha, q, kv, kv_mask):  # one multi-head attention written out
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        h, dh = mha.num_heads, 16 // mha.num_heads
        split = lambda x: x.view(x.shape[0], x.shape[1], h, dh).transpose(1, 2)
        scores = split(q @ w_q.T + b_q) @ split(kv @ w_k.T + b_k).transpose(-1, -2) / dh**0.5
        scores = scores.masked_fill(~kv_mask[:, None, None, :], float("-inf"))
        heads = torch.softmax(scores, -1) @ split(kv @ w_v.T + b_v)
        return heads.transpose(1, 2).reshape(q.shape) @ mha.out_proj.weight.T + mha.out_proj.bias

    t2 = fusion.norms["text"](t + attend(fusion.attend["text"], t, a, am))
    a2 = fusion.norms["audio"](a + attend(fusion.attend["audio"], a, t, tm))
    mean = lambda x, m: (x * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    pooled = torch.stack([mean(t2, tm), mean(a2, am)], dim=1)
    gates = torch.softmax(pooled.flatten(1) @ fusion.gate.weight.T + fusion.gate.bias, -1)
    assert torch.allclose(g, gates, atol=1e-10)
    assert torch.allclose(v, gates[:, :1] * pooled[:, 0] + gates[:, 1:] * pooled[:, 1], atol=1e-10)


def test_heads_equation():
    """SA: W2 GELU(W1 v + b1) + b2 (one output); ER: the same shape with six logits."""
    torch.manual_seed(9)
    model = MMoLRE(tiny()).double().eval()
    v = torch.randn(2, 16, dtype=torch.float64)
    for task, width in (("sa", 1), ("er", 6)):
        mlp = getattr(model, f"{task}_head")
        l1, l2 = (layer for layer in mlp if isinstance(layer, torch.nn.Linear))
        expected = F.gelu(v @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
        assert l1.out_features == 8 and l2.out_features == width
        assert torch.allclose(mlp(v), expected, atol=1e-12)


def test_block2_reads_each_task_its_own_input_through_the_same_shared_experts():
    """Block 2: y^tau = mixture^tau(x^tau) with x^SA != x^ER, the shared experts' weights common to both."""
    torch.manual_seed(10)
    block = UniTSEBlock(tiny()).double().eval()
    xs = {"sa": torch.randn(2, 5, 16, dtype=torch.float64), "er": torch.randn(2, 5, 16, dtype=torch.float64)}
    mask = torch.ones(2, 5, dtype=torch.bool)
    out, gates, _ = block(xs, mask)
    for task, x in xs.items():
        mixture = block.mixtures[task]
        g = torch.softmax(mixture.router(x), -1)
        experts = [*block.shared.experts, mixture.specific.experts[0]]
        y = sum(g[..., n:n + 1] * e(x.transpose(1, 2)).transpose(1, 2) for n, e in enumerate(experts))
        assert torch.allclose(gates[task], g, atol=1e-12)
        assert torch.allclose(out[task], block.norms[task](x + y), atol=1e-12)
    assert not torch.allclose(out["sa"], out["er"])


def test_an_absent_modality_is_a_mask_and_its_values_change_nothing():
    torch.manual_seed(0)
    model = MMoLRE(tiny(n_experts=2)).eval()
    x = inputs()
    text, audio, text_mask, audio_mask = x["text"], x["audio"], x["text_mask"], x["audio_mask"]
    audio_mask[1] = False  # sample 1 has no audio
    text_mask[2] = False  # sample 2 has no text
    out = model(text=text, text_mask=text_mask, audio=audio, audio_mask=audio_mask, return_routing=True)
    other_audio, other_text = audio.clone(), text.clone()
    other_audio[1] = 1e3 * torch.randn(9, 10)
    other_text[2] = -50.0
    again = model(text=other_text, text_mask=text_mask, audio=other_audio, audio_mask=audio_mask)
    assert torch.equal(out.sentiment, again.sentiment) and torch.equal(out.emotions, again.emotions)
    assert torch.isfinite(out.sentiment).all() and torch.isfinite(out.emotions).all()
    gates = out.routing["fusion/sa"]  # (B, modalities): text, audio
    assert gates[1].tolist() == [1.0, 0.0] and gates[2].tolist() == [0.0, 1.0]
    alone = model(text=text[1:2], text_mask=text_mask[1:2], audio=audio[1:2], audio_mask=audio_mask[1:2])
    assert torch.allclose(alone.sentiment, out.sentiment[1:2], atol=1e-6)  # the others in the batch do not matter


def test_topk_gates_keep_exactly_k_experts_that_sum_to_one():
    torch.manual_seed(7)
    block = UniTSEBlock(tiny(router="topk", top_k=2)).eval()
    x = torch.randn(3, 5, 16)
    mask = torch.ones(3, 5, dtype=torch.bool)
    _, gates, aux = block(x, mask)
    for g in gates.values():  # (B, T, N+1): 3 shared + 1 specific
        assert ((g > 0).sum(-1) == 2).all()
        assert torch.allclose(g.sum(-1), torch.ones(3, 5))
    probs = {task: torch.softmax(block.mixtures[task].router(x), -1) for task in TASKS}
    assert torch.allclose(aux, sum(load_balancing_loss(gates[t], probs[t], mask, 2) for t in TASKS))


def test_load_balancing_loss_is_one_when_even_and_grows_when_routing_collapses():
    mask = torch.ones(1, 4, dtype=torch.bool)
    even_probs = torch.full((1, 4, 4), 0.25)
    even_gates = torch.eye(4)[None]  # each token to a different expert (k = 1)
    assert load_balancing_loss(even_gates, even_probs, mask, 1) == pytest.approx(1.0)
    collapsed_probs = torch.tensor([[[0.7, 0.1, 0.1, 0.1]] * 4])
    collapsed_gates = torch.tensor([[[1.0, 0, 0, 0]] * 4])
    assert load_balancing_loss(collapsed_gates, collapsed_probs, mask, 1) == pytest.approx(4 * 0.7)


def test_topk_model_loss_adds_the_weighted_load_balancing_loss():
    torch.manual_seed(8)
    model = MMoLRE(tiny(router="topk", top_k=2, aux_loss_weight=0.5)).eval()
    labels = dict(sentiment=torch.tensor([0.5, -1.0, 2.0]), emotions=torch.rand(3, 6))
    x = inputs()
    out = model(**x, **labels)
    blocks_aux = sum(model.unitse[m](model.inputs[m](x[m]), x[f"{m}_mask"])[2] for m in ("text", "audio"))
    assert torch.allclose(out.loss_aux, blocks_aux)  # every block of both modalities
    assert torch.allclose(out.loss, out.loss_sa + out.loss_er + 0.5 * out.loss_aux)
    assert MMoLRE(tiny()).eval()(**inputs(), **labels).loss_aux is None  # dense: the paper's loss


@pytest.mark.parametrize("design, rule", [
    ({"rank": (2, 4)}, "rank=[2, 4] needs one rank per shared expert (n_experts=3)"),
    ({"router": "sparse"}, "router='sparse': choose one of dense, topk, top_p"),
    ({"router": "topk", "top_k": 9}, "top_k=9: a mixture has 4 expert(s) with n_experts=3 and variant=mmolre; "
                                     "choose 1 <= top_k <= 4"),
    ({"router": "topk", "top_k": 4, "variant": "no_specific"},
     "top_k=4: a mixture has 3 expert(s) with n_experts=3 and variant=no_specific; choose 1 <= top_k <= 3"),
    ({"router": "top_p", "top_p": 0.0}, "top_p=0.0 must lie in (0, 1] (the router probability the kept experts reach)"),
])
def test_design_choices_are_validated(design, rule):
    with pytest.raises(ValueError) as raised:
        tiny(**design)
    assert str(raised.value) == rule


def test_the_training_forward_is_one_graph_without_data_dependent_branches():
    """torch.compile sees the whole forward and loss as one graph: no `if tensor.any()`, no boolean indexing
    (each would be a graph break and, on a GPU, a host sync per step)."""
    import torch._dynamo

    torch.manual_seed(0)
    model = MMoLRE(tiny(dropout=0.1)).train()
    labels = {"sentiment": torch.tensor([1.0, math.nan, -2.0]), "emotions": torch.rand(3, 6)}
    explained = torch._dynamo.explain(model)(**inputs(), **labels)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        [reason.reason[:200] for reason in explained.break_reasons]


def test_a_model_saved_before_label_spaces_loads_as_cmu(tmp_path):
    """config.json of older model folders has n_emotions (always 6) and no label_space: read as cmu."""
    import json

    cfg = tiny()
    MMoLRE(cfg).save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    model = {k: v for k, v in config["model"].items() if k != "label_space"}
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model": {**model, "n_emotions": 6}}))
    loaded = MMoLRE.from_pretrained(tmp_path / "m")
    assert loaded.config == cfg and loaded.config.label_space == "cmu"
    with pytest.raises(ValueError, match="n_emotions other than 6 without a label_space"):
        MMoLREConfig.from_saved({**model, "n_emotions": 7})


def two_modality_fusion_by_hand(fusion, xs, masks):
    """The task-adaptive fusion as it was written for text and audio alone: text attends to audio, audio to
    text, then pooling and the modality gate."""
    from mmolre.model import attend_present, masked_mean

    other = {"text": "audio", "audio": "text"}
    xs = {q: fusion.norms[q](xs[q] + attend_present(fusion.attend[q], xs[q], xs[o], masks[o]))
          for q, o in other.items()}
    pooled = torch.stack([masked_mean(xs[m], masks[m]) for m in ("text", "audio")], 1)
    gates = torch.softmax(fusion.gate(pooled.flatten(1)), -1)
    return (gates.unsqueeze(1) @ pooled).squeeze(1)


def test_fusion_over_m_modalities_equals_the_two_modality_fusion_and_reads_a_third(monkeypatch):
    from types import SimpleNamespace

    from mmolre.model import TaskAdaptiveFusion

    torch.manual_seed(0)
    cfg = SimpleNamespace(d_model=8, n_heads=2, dropout=0.0, modalities=("text", "audio"))
    fusion = TaskAdaptiveFusion(cfg).double().eval()
    xs = {"text": torch.randn(3, 4, 8, dtype=torch.float64), "audio": torch.randn(3, 6, 8, dtype=torch.float64)}
    masks = {"text": torch.ones(3, 4, dtype=torch.bool), "audio": torch.ones(3, 6, dtype=torch.bool)}
    masks["audio"][1, 3:] = False
    assert torch.allclose(fusion(xs, masks)[0], two_modality_fusion_by_hand(fusion, xs, masks), atol=1e-12, rtol=0)

    three = TaskAdaptiveFusion(SimpleNamespace(**{**vars(cfg), "modalities": ("text", "audio", "video")})).eval()
    d = cfg.d_model
    assert sum(p.numel() for p in three.parameters()) == 3 * (4 * d * d + 4 * d + 2 * d) + 3 * d * 3 + 3
    xs3 = {m: x.float() for m, x in xs.items()} | {"video": torch.randn(3, 5, 8)}
    masks3 = masks | {"video": torch.tensor([[True] * 5, [True] * 5, [False] * 5])}  # sample 2: no video
    with torch.no_grad():
        before, gates = three(xs3, masks3)
        after = three(xs3 | {"video": xs3["video"] + 5.0}, masks3)[0]
    assert gates.shape == (3, 3) and gates[2, 2] == 0.0
    assert torch.equal(before[2], after[2]) and not torch.allclose(before[:2], after[:2])  # absent: nothing
