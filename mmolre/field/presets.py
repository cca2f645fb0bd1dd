"""MMSA 2.2.1's settings for its five models, as typed configs: one preset per model and corpus (its
`config/config_regression.json`, keys under MMSA's names), and the ranges of its tune mode (`config_tune.json`).

A config holds the model's sizes and its training recipe together, as MMSA's does; `preset(arch, corpus,
**overrides)` gives MMSA's values with any key replaced. Keys that MMSA ships but no code of its reads (MulT's and
MISA's weight_decay, MISA's sp_weight and reverse_grad_weight under CMD, the text dropout of a one-layer LSTM) are
not here; INERT names them. tests/test_field.py compares every value with MMSA's own file."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

CORPORA = ("mosi", "mosei", "sims")
# MMSA's keys that no code path of its reads for that model (docs/field-models.md says where)
INERT = {"lf_dnn": {"use_bert"}, "mult": {"weight_decay", "use_bert", "use_bert_finetune", "transformers",
                                          "pretrained"},
         "misa": {"weight_decay", "sp_weight", "reverse_grad_weight", "use_bert", "use_finetune", "transformers",
                  "use_cmd_sim"}}
# MMSA's keys about its loader, not the model or its training (mmolre's data views decide these)
LOADER_KEYS = {"need_data_aligned", "need_model_aligned", "need_normalized"}


@dataclass(frozen=True)
class SubNetConfig:
    """TFN (and LF-DNN): SubNets for audio and vision, an LSTM for text, a post-fusion MLP."""
    hidden_dims: tuple[int, int, int]   # text, audio, vision
    text_out: int
    post_fusion_dim: int
    dropouts: tuple[float, float, float, float]  # audio, vision, text (inert: a one-layer LSTM), post-fusion
    batch_size: int
    learning_rate: float
    early_stop: int = 8                 # epochs without a better valid loss


@dataclass(frozen=True)
class LFDNNConfig(SubNetConfig):
    weight_decay: float = 0.0           # Adam's L2


@dataclass(frozen=True)
class LMFConfig:
    hidden_dims: tuple[int, int, int]   # text (its LSTM gives hidden_dims[0] // 2), audio, vision
    dropouts: tuple[float, float, float, float]  # audio, vision, text (inert), post-fusion (never applied)
    rank: int
    batch_size: int
    learning_rate: float                # the subnets
    factor_lr: float                    # the modality factors
    weight_decay: float = 0.0
    early_stop: int = 8


@dataclass(frozen=True)
class MulTConfig:
    dst_feature_dim_nheads: tuple[int, int]  # width d of every stream, attention heads
    nlevels: int                             # layers of each crossmodal encoder (the memory ones: at least 3)
    conv1d_kernel_size_l: int
    conv1d_kernel_size_a: int
    conv1d_kernel_size_v: int
    attn_dropout: float                      # attention dropout where text is the source (and the memories)
    attn_dropout_a: float
    attn_dropout_v: float
    relu_dropout: float
    embed_dropout: float
    res_dropout: float
    output_dropout: float
    text_dropout: float
    batch_size: int
    learning_rate: float
    grad_clip: float                         # clip_grad_value_ after every mini-batch
    patience: int                            # ReduceLROnPlateau on the valid loss
    attn_mask: bool = True                   # the causal mask
    update_epochs: int = 8                   # mini-batches whose losses add up to one step
    early_stop: int = 8


@dataclass(frozen=True)
class MISAConfig:
    hidden_size: int
    dropout: float
    diff_weight: float
    sim_weight: float                        # the CMD term
    recon_weight: float
    batch_size: int
    learning_rate: float                     # one rate, BERT included
    grad_clip: float | None                  # None: no clipping (a value of MMSA's tune ranges)
    pretrained: str = "bert-base-uncased"    # the BERT that is fine-tuned (a hub id or a local folder)
    rnncell: str = "lstm"
    update_epochs: int = 2
    early_stop: int = 8


CONFIGS = {"lf_dnn": LFDNNConfig, "tfn": SubNetConfig, "lmf": LMFConfig, "mult": MulTConfig, "misa": MISAConfig}
FieldConfig = LFDNNConfig | SubNetConfig | LMFConfig | MulTConfig | MISAConfig


def _mult(d, levels, kernels, attn, relu_embed_res, output_text, batch, lr, patience):
    return dict(dst_feature_dim_nheads=d, nlevels=levels, conv1d_kernel_size_l=kernels[0],
                conv1d_kernel_size_a=kernels[1], conv1d_kernel_size_v=kernels[2], attn_dropout=attn[0],
                attn_dropout_a=attn[1], attn_dropout_v=attn[2], relu_dropout=relu_embed_res[0],
                embed_dropout=relu_embed_res[1], res_dropout=relu_embed_res[2], output_dropout=output_text[0],
                text_dropout=output_text[1], batch_size=batch, learning_rate=lr, grad_clip=0.6, patience=patience)


def _misa(batch, dropout, diff, sim, recon, clip, bert):
    return dict(batch_size=batch, learning_rate=1e-4, hidden_size=128, dropout=dropout, diff_weight=diff,
                sim_weight=sim, recon_weight=recon, grad_clip=clip, pretrained=bert)


# config_regression.json of MMSA 2.2.1 (field-models.md section 5)
VALUES = {
    "lf_dnn": {
        "mosi": dict(hidden_dims=(128, 16, 128), text_out=256, post_fusion_dim=128, dropouts=(.2, .2, .2, .2),
                     batch_size=128, learning_rate=1e-3, weight_decay=1e-2),
        "mosei": dict(hidden_dims=(128, 32, 128), text_out=128, post_fusion_dim=128, dropouts=(.2, .2, .2, .2),
                      batch_size=64, learning_rate=2e-3, weight_decay=1e-3),
        "sims": dict(hidden_dims=(128, 32, 128), text_out=256, post_fusion_dim=32, dropouts=(.3, .3, .3, .5),
                     batch_size=128, learning_rate=5e-3, weight_decay=5e-3)},
    "tfn": {
        "mosi": dict(hidden_dims=(128, 32, 128), text_out=32, post_fusion_dim=64, dropouts=(.3, .3, .3, .5),
                     batch_size=32, learning_rate=1e-3),
        "mosei": dict(hidden_dims=(128, 16, 128), text_out=128, post_fusion_dim=16, dropouts=(.4, .4, .4, .4),
                      batch_size=128, learning_rate=5e-3),
        "sims": dict(hidden_dims=(128, 32, 128), text_out=256, post_fusion_dim=32, dropouts=(.4, .4, .4, .4),
                     batch_size=32, learning_rate=5e-4)},
    "lmf": {
        "mosi": dict(hidden_dims=(128, 16, 128), dropouts=(.3, .3, .3, .3), rank=3, batch_size=64,
                     learning_rate=1e-3, factor_lr=1e-3, weight_decay=5e-3),
        "mosei": dict(hidden_dims=(128, 16, 128), dropouts=(.2, .2, .2, .2), rank=4, batch_size=32,
                      learning_rate=1e-3, factor_lr=1e-3, weight_decay=1e-3),
        "sims": dict(hidden_dims=(64, 16, 64), dropouts=(.2, .2, .2, .2), rank=4, batch_size=64,
                     learning_rate=2e-3, factor_lr=5e-4, weight_decay=5e-3)},
    "mult": {
        "mosi": _mult((50, 10), 4, (5, 5, 5), (.3, .2, 0.), (0., .2, 0.), (.5, .5), 16, 2e-3, 5),
        "mosei": _mult((30, 6), 4, (5, 1, 3), (.4, 0., 0.), (0., 0., 0.), (.5, .3), 4, 5e-4, 20),
        "sims": _mult((50, 10), 2, (5, 1, 1), (.2, .1, 0.), (0., .1, .2), (.1, .3), 16, 2e-3, 10)},
    "misa": {
        "mosi": _misa(16, .2, .1, .3, 1., .8, "bert-base-uncased"),
        "mosei": _misa(64, .5, .3, .8, 1., .8, "bert-base-uncased"),
        "sims": _misa(64, 0., .3, 1., .8, 1., "bert-base-chinese")},
}


def preset(arch: str, corpus: str, **overrides) -> FieldConfig:
    """MMSA's config of `arch` for `corpus` (mosi, mosei, sims), with `overrides` replacing any of its keys."""
    if arch not in CONFIGS:
        raise ValueError(f"arch={arch!r}: the field's models are {', '.join(CONFIGS)}")
    if corpus not in CORPORA:
        raise ValueError(f"{arch}: MMSA has presets for {', '.join(CORPORA)}, not {corpus!r}; name every key of "
                         f"{CONFIGS[arch].__name__} ({', '.join(f.name for f in fields(CONFIGS[arch]))})")
    unknown = set(overrides) - {f.name for f in fields(CONFIGS[arch])}
    if unknown:
        raise ValueError(f"{arch}: no key {', '.join(sorted(unknown))}; its keys are "
                         f"{', '.join(f.name for f in fields(CONFIGS[arch]))}")
    return replace(CONFIGS[arch](**VALUES[arch][corpus]), **{k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in overrides.items()})


_DIMS = [(128, 16, 128), (64, 16, 64), (128, 32, 128), (256, 32, 256), (64, 32, 64)]
_DROPOUTS = [(.3, .3, .3, .3), (.2, .2, .2, .2), (.4, .4, .4, .4), (.3, .3, .3, .5)]
_LR = [5e-4, 1e-3, 2e-3, 5e-3]
_SUBNETS = dict(hidden_dims=_DIMS, text_out=[32, 64, 128, 256], post_fusion_dim=[16, 32, 64, 128],
                dropouts=_DROPOUTS, batch_size=[32, 64, 128], learning_rate=_LR)
# config_tune.json of MMSA 2.2.1: the values its tune mode draws each key from (independently, uniformly), for
# every corpus; only the keys that change the model or its training (its inert ones are not drawn here)
TUNE = {
    "lf_dnn": _SUBNETS | dict(weight_decay=[0.0, 1e-3, 5e-3, 1e-2]),
    "tfn": _SUBNETS | dict(hidden_dims=[d for d in _DIMS if d != (256, 32, 256)]),
    "lmf": dict(hidden_dims=_DIMS, dropouts=[(.3, .3, .3, .5), (.3, .3, .3, .3), (.2, .2, .2, .2), (.4, .4, .4, .4)],
                rank=[3, 4, 5, 6], batch_size=[32, 64, 128], learning_rate=_LR, factor_lr=[1e-4, 5e-4, 1e-3],
                weight_decay=[0.0, 1e-4, 1e-3, 5e-3]),
    "mult": dict(attn_dropout_a=[0.0, .1, .2], attn_dropout_v=[0.0, .1, .2], relu_dropout=[0.0, .1, .2],
                 embed_dropout=[0.0, .1, .2], res_dropout=[0.0, .1, .2],
                 dst_feature_dim_nheads=[(30, 6), (30, 10), (32, 8), (36, 6), (40, 5), (40, 8), (40, 10), (50, 10)],
                 batch_size=[4, 8, 16], learning_rate=_LR, nlevels=[2, 4, 6], conv1d_kernel_size_l=[1, 3, 5],
                 conv1d_kernel_size_a=[1, 3, 5], conv1d_kernel_size_v=[1, 3, 5], text_dropout=[.1, .2, .3, .4, .5],
                 attn_dropout=[.1, .2, .3, .4, .5], output_dropout=[.1, .2, .3, .4, .5], grad_clip=[.6, .8, 1.0],
                 patience=[5, 10, 20]),
    "misa": dict(batch_size=[16, 32, 64], learning_rate=[1e-4, 1e-3, 5e-4], hidden_size=[64, 128, 256],
                 dropout=[.5, .2, 0.0], diff_weight=[.1, .3, .5], sim_weight=[.5, .8, 1.0],
                 recon_weight=[.5, .8, 1.0], grad_clip=[None, .8, 1.0]),
}
