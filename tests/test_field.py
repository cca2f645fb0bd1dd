"""The field's five models (mmolre/field/) against MMSA 2.2.1's own code, on the same inputs: presets, parameter
counts, outputs with MMSA's weights loaded, and weights after training steps of each recipe."""

from __future__ import annotations

import copy
import dataclasses

import MMSA  # noqa: F401  (the test extra installs MMSA==2.2.1: no skip when it is missing)
import pytest
import torch

from mmolre.field.base import count_parameters, load_mmsa_state
from mmolre.field import recipes
from mmolre.field.models import build
from mmolre.field.presets import CONFIGS, CORPORA, INERT, LOADER_KEYS, preset

from mmolre.model_config import FIELD_MODALITIES
from mmsa_reference import DIMS, mmsa_config, mmsa_dataset, mmsa_model, mmsa_trainer, no_dropout, small_bert


ARCHS = tuple(CONFIGS)
# MMSA's logged counts (docs/field-models.md), MISA without its BERT
COUNTS = {("lf_dnn", "mosi"): 597_171, ("lf_dnn", "mosei"): 572_283, ("tfn", "mosi"): 9_497_043,
          ("tfn", "mosei"): 5_042_539, ("lmf", "mosi"): 505_071, ("lmf", "mosei"): 508_475,
          ("mult", "mosi"): 2_571_551, ("mult", "mosei"): 982_951, ("misa", "mosi"): 1_138_033,
          ("misa", "mosei"): 1_435_105}
POOLED = ("lf_dnn", "tfn", "lmf")  # read time averages (B, d), as MMSA's loader gives them
DROPOUT_KEYS = {"lf_dnn": ("dropouts",), "tfn": ("dropouts",), "lmf": ("dropouts",),
                "mult": ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "embed_dropout",
                         "res_dropout", "output_dropout", "text_dropout"), "misa": ("dropout",)}


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return small_bert(tmp_path_factory.mktemp("bert"))


def pair(arch: str, corpus: str, bert, **values):
    """MMSA's model and mmolre's, of one preset (with `values`), holding the same weights."""
    extra = {"pretrained": str(bert)} if arch == "misa" else {}
    torch.manual_seed(0)
    theirs = mmsa_model(mmsa_config(arch, corpus, **extra, **values))
    cfg = preset(arch, corpus, **extra, **values)
    ours = build(arch, cfg, DIMS[corpus])
    load_mmsa_state(ours, theirs.state_dict())
    return theirs, ours, cfg


def batch(arch: str, corpus: str, generator: torch.Generator, size: int = 6):
    """text, audio, vision as MMSA's loader hands them to `arch`, and labels (size, 1)."""
    _, da, dv = DIMS[corpus]
    audio, vision = torch.randn(size, 40, da, generator=generator), torch.randn(size, 30, dv, generator=generator)
    if arch in POOLED:
        audio, vision = audio.mean(1, keepdim=True), vision.mean(1, keepdim=True)
    if arch == "misa":
        counts = torch.randint(3, 13, (size,), generator=generator)
        mask = (torch.arange(12)[None] < counts[:, None]).float()
        ids = torch.randint(5, 30, (size, 12), generator=generator) * mask.long()
        text = torch.stack([ids.float(), mask, torch.zeros_like(mask)], 1)
    else:
        text = torch.randn(size, 50, 768, generator=generator)
    return text, audio, vision, torch.randn(size, 1, generator=generator)


def field_model(arch: str, corpus: str, theirs, bert: dict, values: dict):
    """The pipeline's FieldModel of the preset (with `values`), in the loader's view (read as MMSA's models read
    MMSA's arrays), sentiment alone, holding `theirs`' weights."""
    from mmolre.architectures import build_model
    from mmolre.model_config import MMoLREConfig

    model = build_model(MMoLREConfig(arch=arch, modalities=FIELD_MODALITIES, dims=dict(zip(FIELD_MODALITIES, DIMS[corpus])),
                                     field_preset=corpus, field_settings=bert | values, field_view="loader",
                                     variant="msa_only"))
    load_mmsa_state(model.net, theirs.state_dict())
    return model


def pipeline_batch(arch: str, text, audio, vision) -> dict:
    """MMSA's inputs as a pipeline batch: every step real (the loader's view); MISA's ids as text_bert beside a
    text it does not read."""
    xs = dict(zip(FIELD_MODALITIES, (torch.zeros(len(text), text.shape[2], 768) if arch == "misa" else text,
                                     audio, vision)))
    return {**xs, **{f"{m}_mask": torch.ones(x.shape[:2], dtype=torch.bool) for m, x in xs.items()},
            **({"text_bert": text} if arch == "misa" else {})}


def ours_inputs(arch: str, text, audio, vision) -> dict:
    """MMSA's model squeezes the (B, 1, d) averages itself; mmolre's reads (B, d)."""
    if arch in POOLED:
        audio, vision = audio[:, 0], vision[:, 0]
    return {"text": text, "audio": audio, "vision": vision}


def test_presets_are_mmsas():
    """Every value of every preset is MMSA's, and every key MMSA ships is a preset key, inert or its loader's."""
    from MMSA.config import get_config_regression

    for arch in ARCHS:
        for corpus in CORPORA:
            theirs = get_config_regression(arch, corpus)
            ours = dataclasses.asdict(preset(arch, corpus))
            for key, value in ours.items():
                assert key in theirs, f"{arch}/{corpus}: {key} is not MMSA's"
                assert (list(value) if isinstance(value, tuple) else value) == theirs[key], f"{arch}/{corpus}.{key}"
            model_keys = set(theirs) - {"model_name", "dataset_name", "featurePath", "seq_lens", "feature_dims",
                                        "train_samples", "num_classes", "language", "KeyEval", "missing_rate",
                                        "missing_seed"}
            assert model_keys - set(ours) - INERT.get(arch, set()) - LOADER_KEYS == set(), (arch, corpus)


def test_preset_overrides_and_refusals():
    assert preset("tfn", "mosi", text_out=64, hidden_dims=[64, 16, 64]).hidden_dims == (64, 16, 64)
    with pytest.raises(ValueError, match="tfn: no key rank; its keys are hidden_dims"):
        preset("tfn", "mosi", rank=4)
    with pytest.raises(ValueError, match="MMSA has presets for mosi, mosei, sims, not 'meld'"):
        preset("lmf", "meld")


@pytest.mark.parametrize("corpus", ["mosi", "mosei"])
@pytest.mark.parametrize("arch", ARCHS)
def test_same_parameters_and_outputs(arch, corpus, bert):
    """MMSA's parameter count, and MMSA's outputs (eval mode, to 1e-5) once its weights are loaded."""
    theirs, ours, _ = pair(arch, corpus, bert)
    without_bert = (lambda m, b: count_parameters(m) - count_parameters(b))
    if arch == "misa":
        assert without_bert(ours, ours.bert) == without_bert(theirs, theirs.Model.bertmodel) == COUNTS[arch, corpus]
    else:
        assert count_parameters(ours) == count_parameters(theirs) == COUNTS[arch, corpus]
    text, audio, vision, _ = batch(arch, corpus, torch.Generator().manual_seed(1))
    theirs.eval(), ours.eval()
    with torch.no_grad():
        expected = theirs(text, audio, vision)["M"]
        got = ours(**ours_inputs(arch, text, audio, vision)).prediction
    assert got.shape == expected.shape == (6, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def comparable(name: str, value: torch.Tensor) -> torch.Tensor:
    """The entries whose gradient is not zero by construction: an attention's key bias only shifts every
    score of a query by the same amount, so its gradient is rounding noise, which Adam scales to full steps."""
    if name.endswith("in_proj_bias"):
        third = len(value) // 3
        return torch.cat([value[:third], value[2 * third:]])
    return value[:0] if name.endswith("attention.self.key.bias") else value


def update_error(name: str, before, ours, theirs) -> float:
    """|our update - MMSA's| / |MMSA's| over a tensor's comparable entries (0 when neither moved). Adam's first
    steps are about lr * sign(gradient), so the few entries whose gradient lies within rounding of 0 may step the
    other way: a relative norm, not an elementwise bound, is what agrees across implementations."""
    ours, theirs = (comparable(name, x - before).double() for x in (ours, theirs))
    if not theirs.norm():
        return float(ours.norm())
    return float((ours - theirs).norm() / theirs.norm())


@pytest.mark.parametrize("corpus", ["mosi", "mosei"])
@pytest.mark.parametrize("arch", ARCHS)
def test_same_weights_after_training_steps(arch, corpus, bert):
    """From the same weights and batches (dropout off), MMSA's trainer and the pipeline's training (a FieldModel,
    its mmsa_recipe, train.optimise per mini-batch) leave the same weights: two optimizer steps, and for MulT and
    MISA the accumulated batches and a tail that is never applied."""
    from types import SimpleNamespace

    from mmolre.train import Recipe, optimise

    zero = {key: (0.0,) * 4 if key == "dropouts" else 0.0 for key in DROPOUT_KEYS[arch]}
    theirs, _, cfg = pair(arch, corpus, bert, **zero)
    model = field_model(arch, corpus, theirs, {"pretrained": str(bert)} if arch == "misa" else {}, zero)
    no_dropout(theirs), no_dropout(model)
    ours, before = model.net, copy.deepcopy(model.net.state_dict())
    generator = torch.Generator().manual_seed(2)
    batches = [batch(arch, corpus, generator, size=4) for _ in range(2 * recipes.accumulation(cfg) + 1)]
    loader = [{"text": t, "audio": a, "vision": v, "labels": {"M": y}} for t, a, v, y in batches]
    args = mmsa_config(arch, corpus, early_stop=0, model_save_path=str(bert.parent / f"{arch}.pth"),
                       **({"pretrained": str(bert)} if arch == "misa" else {}), **zero)
    mmsa_trainer(args).do_train(theirs, {"train": loader, "valid": loader[:1]})
    setup = SimpleNamespace(model=model.train(), recipe=Recipe(**model.mmsa_recipe()))
    for step, (text, audio, vision, label) in enumerate(batches, start=1):
        optimise(setup, model(**pipeline_batch(arch, text, audio, vision), sentiment=label[:, 0],
                              emotions=torch.full((len(label), 6), float("nan"))).loss, step)
    expected = copy.deepcopy(ours)
    load_mmsa_state(expected, theirs.state_dict())
    for name, value in ours.state_dict().items():
        if value.is_floating_point():
            assert update_error(name, before[name], value, expected.state_dict()[name]) <= 0.05, name
    untouched = {n for n, v in ours.state_dict().items() if torch.equal(v, before[n])}
    assert untouched == UNTOUCHED[arch]


UNTOUCHED = {"lf_dnn": set(), "tfn": set(), "lmf": {"fusion_weights", "fusion_bias"}, "mult": set(),
             "misa": {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "sp_discriminator.weight",
                      "sp_discriminator.bias", "norms.t.weight", "norms.t.bias"}}


def test_load_refuses_another_preset(bert):
    theirs, _, _ = pair("tfn", "mosi", bert)
    other = build("tfn", preset("tfn", "mosei"), DIMS["mosi"])
    with pytest.raises(ValueError, match="does not fit .*not the same model or preset"):
        load_mmsa_state(other, theirs.state_dict())


FIELD_RUNS = {arch: {"arch": arch, "modalities": ["text", "audio", "video"]} for arch in CONFIGS}


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory):
    """The small BERT with 3,000 ids, as many as processed_forms.py's token ids need."""
    return small_bert(tmp_path_factory.mktemp("wide_bert"), vocab_size=3000)


@pytest.fixture(scope="module")
def mosi_runs(tmp_path_factory, tiny_params, wide_bert):
    """MMSA's MOSI form (tests/processed_forms.py) imported, each field arch trained with no further keys, and
    evaluated: the roots and params."""
    from mmolre.evaluate import evaluate
    from mmolre.train import train
    from processed_forms import mmsa_file, write
    from test_processed import imported, params_for

    tmp = tmp_path_factory.mktemp("mosi")
    params = params_for(tiny_params, "mosi", write(tmp / "unaligned_50.pkl", mmsa_file("mosi")[0]))
    params["runs"] = {"main": {"modalities": ["text", "audio", "video"]}, **FIELD_RUNS}
    # MISA: the small BERT, and a shorter stop (its BERT makes each epoch the slowest here)
    params["runs"]["misa"] = {**FIELD_RUNS["misa"], "field_settings": {"pretrained": str(wide_bert), "early_stop": 2}}
    params["evaluate"] = {**params["evaluate"], "robustness": False}
    roots = imported(tmp, params)
    for run in params["runs"]:
        train(params, run, roots["features"], tmp / "models", tmp / "curves")
    evaluate(params, roots["features"], tmp / "models", tmp / "reports")
    return tmp, params


@pytest.mark.slow
@pytest.mark.parametrize("arch", tuple(FIELD_RUNS))
def test_a_run_of_a_field_arch_takes_mmsas_preset_and_its_parameter_count(arch, mosi_runs, wide_bert):
    """On a MOSI-form processed file `{arch: tfn, modalities: [text, audio, video]}` is MMSA's TFN at its MOSI
    preset, trained by its recipe, with MMSA's parameter count in costs.json (MOSI labels no emotion: no head;
    MISA's count is MMSA's without BERT plus the small BERT it fine-tunes here)."""
    import json

    from transformers import BertModel

    tmp, _ = mosi_runs
    saved = json.loads((tmp / "models" / arch / "config.json").read_text())
    assert saved["model"]["arch"] == arch and saved["model"]["field_preset"] == "mosi"
    assert saved["model"]["variant"] == "msa_only" and saved["selection"]["metric"] == "valid_loss"
    # MMSA's stop: 8 epochs without a better valid loss, no cap on the epochs
    selection, patience = saved["selection"], 2 if arch == "misa" else 8
    assert selection["patience"] == patience and selection["max_epochs"] is None
    assert selection["epochs_run"] == saved["best_epoch"] + patience
    costs = json.loads((tmp / "reports" / "costs.json").read_text())[arch]
    bert = count_parameters(BertModel.from_pretrained(wide_bert)) if arch == "misa" else 0
    assert costs["params"] == costs["params_mmsa_model"] == COUNTS[arch, "mosi"] + bert
    assert costs["params_added"] == {"emotion_head": 0} and costs["flops_per_utterance"] > 0


def test_tune_ranges_are_mmsas():
    """Every range of the field's tune preset is MMSA's config_tune.json (MISA's clip -1, off, is None here), and
    every key MMSA draws is here or inert."""
    import json
    from pathlib import Path

    from mmolre.field.presets import TUNE

    shipped = json.loads((Path(MMSA.__file__).parent / "config" / "config_tune.json").read_text())
    for arch, ranges in TUNE.items():
        theirs = shipped[arch]["debugParams"]
        for key, values in ranges.items():
            expected = [None if v == -1.0 and key == "grad_clip" else v for v in theirs[key]]
            assert [list(v) if isinstance(v, tuple) else v for v in values] == expected, f"{arch}.{key}"
        assert set(theirs["d_paras"]) - set(ranges) <= INERT.get(arch, set()), arch


@pytest.fixture(scope="module")
def both_views(tmp_path_factory, tiny_params):
    """One MMSA-form MOSI file imported in each data view: {view: FeatureFile} and the pickle's path."""
    from mmolre.features import FeatureFile
    from processed_forms import mmsa_file, write
    from test_processed import imported, params_for

    tmp = tmp_path_factory.mktemp("views")
    pkl = write(tmp / "unaligned_50.pkl", mmsa_file("mosi")[0])
    return {view: FeatureFile(imported(tmp / view, params_for(tiny_params, "mosi", pkl, processed_view=view))["h5"].path)
            for view in ("own", "loader")}, pkl


@pytest.mark.parametrize("arch", ARCHS)
def test_the_loaders_view_gives_a_field_run_exactly_what_mmsas_loader_gives_its_model(arch, both_views, wide_bert):
    """MMSA's own dataset over the file and mmolre's features of it in the loader's view: with the same weights,
    the field run's model predicts what MMSA's does (to the features' float16 storage); in the own-frames view it
    does not."""
    from mmolre.architectures import build_model
    from mmolre.batches import FeatureStore
    from mmolre.model_config import MMoLREConfig

    features, pkl = both_views
    bert = {"pretrained": str(wide_bert)} if arch == "misa" else {}
    torch.manual_seed(0)
    theirs = mmsa_model(mmsa_config(arch, "mosi", **bert)).eval()
    dataset = mmsa_dataset(mmsa_config(arch, "mosi", **bert), pkl)
    items = [dataset[k] for k in range(len(dataset))]
    with torch.no_grad():
        expected = theirs(*(torch.stack([it[m] for it in items]) for m in ("text", "audio", "vision")))["M"][:, 0]
    got = {}
    for view, file in features.items():
        cfg = MMoLREConfig(arch=arch, modalities=FIELD_MODALITIES, dims=file.dims, field_preset="mosi",
                           label_space=file.label_space, variant="msa_only", field_view=view, field_settings=bert)
        ours = build_model(cfg).eval()
        load_mmsa_state(ours.net, theirs.state_dict())
        index = [list(file.utterance_id).index(it["id"].replace("$_$", "_")) for it in items]
        batch = FeatureStore(file, FIELD_MODALITIES).batch(index)
        with torch.no_grad():
            got[view] = ours(**{k: v.float() if v.is_floating_point() else v for k, v in batch.items()
                                if k not in ("index", "sentiment", "emotions")}).sentiment
    torch.testing.assert_close(got["loader"], expected, atol=1e-3, rtol=0)
    off = {view: float((got[view] - expected).abs().max()) for view in got}
    assert off["own"] > 100 * off["loader"], off  # the own frames are not what MMSA's loader gives (untrained
    # models: TFN's sigmoid keeps its outputs close, 4e-4 apart here, against 5e-7 in the loader's view)


def test_the_two_views_are_two_feature_files_that_say_which_they_hold(both_views):
    """The loader's view keeps the padded arrays (every utterance as long as the file's steps), is recorded in
    the features' provenance, and hashes apart, so a model trained on one view is refused on the other."""
    import json

    features, _ = both_views
    own, loader = features["own"], features["loader"]
    assert own.attrs["params_hash"] != loader.attrs["params_hash"]
    assert json.loads(loader.attrs["processed"])["view"] == "loader" and json.loads(own.attrs["processed"])["view"] == "own"
    # processed_forms.py stores 8 text, 12 audio and 10 vision steps; own frames are shorter where lengths say so
    assert {m: set(loader.lengths(m)) for m in FIELD_MODALITIES} == {"text": {8}, "audio": {12}, "video": {10}}
    assert min(own.lengths("audio")) < 12


@pytest.mark.parametrize("arch", ("lf_dnn", "tfn", "lmf", "mult"))
def test_with_emotions_labelled_the_emotion_head_is_the_only_addition(arch):
    """MOSEI with the SDK's emotions: one Linear from what MMSA's output layer reads to the six emotions, beside
    MMSA's model, whose parameters are unchanged (the train split labels no emotion: none, as on MOSI)."""
    from mmolre.architectures import build_model
    from mmolre.model_config import MMoLREConfig

    def model(variant):
        return build_model(MMoLREConfig(arch=arch, modalities=FIELD_MODALITIES, field_preset="mosei",
                                        dims=dict(zip(FIELD_MODALITIES, DIMS["mosei"])), variant=variant))
    both, alone = model("mmolre"), model("msa_only")
    width = both.net.features_dim
    assert count_parameters(both.net) == count_parameters(alone) == COUNTS[arch, "mosei"]
    assert count_parameters(both) - COUNTS[arch, "mosei"] == width * 6 + 6 and alone.emotion_head is None
    inputs = {m: torch.randn(3, 7, d) for m, d in zip(FIELD_MODALITIES, DIMS["mosei"])}
    inputs |= {f"{m}_mask": torch.ones(3, 7, dtype=torch.bool) for m in FIELD_MODALITIES}
    out = both.eval()(**inputs)
    assert out.sentiment.shape == (3,) and out.emotions.shape == (3, 6)


def test_an_interrupted_featurize_of_one_view_leaves_nothing_the_other_view_reuses(tmp_path, tiny_params, monkeypatch):
    """featurize of the own view stopped after its chunks were written, then the same file in the loader's view:
    the feature file holds the padded arrays, not the own view's chunks."""
    import mmolre.featurize
    from mmolre.download import download
    from mmolre.features import FeatureFile
    from mmolre.prepare import prepare
    from processed_forms import mmsa_file, write
    from test_processed import params_for

    pkl = write(tmp_path / "unaligned_50.pkl", mmsa_file("mosi")[0])
    roots = {k: tmp_path / k for k in ("raw", "prepared", "features", "downloads")}
    original = mmolre.featurize.assemble

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    for view in ("own", "loader"):
        params = params_for(tiny_params, "mosi", pkl, processed_view=view)
        download(params, roots["raw"], roots["downloads"])
        prepare(params, roots["raw"], roots["prepared"])
        monkeypatch.setattr(mmolre.featurize, "assemble", interrupted if view == "own" else original)
        if view == "own":
            with pytest.raises(KeyboardInterrupt):
                mmolre.featurize.featurize(params, roots["prepared"], roots["raw"], roots["features"])
        else:
            features = FeatureFile(mmolre.featurize.featurize(params, roots["prepared"], roots["raw"], roots["features"]))
    assert set(features.lengths("audio")) == {12} and features.view == "loader"
