"""The paper's open questions 1 and 3 as params: dialogue context after fusion (causal, exact parameter cost,
absent by default) and transfer of a trained model to other corpora where their label spaces meet."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from test_cmu import write_mp4
from test_corpora import SIMS, meld_archive, params_for, prepared_table, sims_root  # noqa: F401 (fixtures)

from mmolre import MmolreError
from mmolre.batches import DialogueSampler, FeatureStore, loader
from mmolre.evaluate import evaluate
from mmolre.features import FeatureFile
from mmolre.featurize import featurize
from mmolre.label_spaces import LABEL_SPACES, MELD_EMOTIONS
from mmolre.model import MMoLRE, MMoLREConfig
from mmolre.model_info import closed_form_flops, closed_form_params, measured_flops
from mmolre.report import report
from mmolre.train import train
from mmolre.transfer import presence, sentiment_classes, sentiment_sign, shared_emotions, spaces_meet, transfer

CMU, SIMS_SPACE, MELD = LABEL_SPACES["cmu"], LABEL_SPACES["sims"], LABEL_SPACES["meld"]


# --- dialogue context ----------------------------------------------------------------------------------

def test_the_dialogue_sampler_serves_whole_dialogues_in_turn_order():
    dialogue = np.array([2, 0, 1, 0, 2, 1, 0, 2, 2])
    turn = np.array([3, 2, 0, 0, 1, 1, 1, 0, 2])
    sampler = DialogueSampler(dialogue, turn, batch_size=4, shuffle=False)
    assert list(sampler) == [[3, 6, 1], [2, 5], [7, 4, 8, 0]]  # dialogue 0 (3 turns), 1; 2 alone (4 > 4 - 2)
    shuffled = DialogueSampler(dialogue, turn, batch_size=4, shuffle=True, seed=5)
    for epoch in range(3):
        shuffled.set_epoch(epoch)
        batches = list(shuffled)
        assert sorted(i for b in batches for i in b) == list(range(9))
        for b in batches:  # each dialogue whole, in turn order, within one batch
            for d in set(dialogue[b]):
                mine = [i for i in b if dialogue[i] == d]
                assert len(mine) == (dialogue == d).sum() and list(turn[mine]) == sorted(turn[mine])


def context_model(window=2, **kw) -> MMoLRE:
    cfg = MMoLREConfig(dims={"text": 12, "audio": 10}, d_model=16, n_experts=2, rank=4, n_heads=2, dropout=0.0,
                       context="dialogue", context_window=window, **kw)
    model = MMoLRE(cfg).eval()
    with torch.no_grad():  # W starts at zero (no context at first): give it weights so context shows
        for module in model.context.values():
            module.mix.weight.normal_(0, 0.5)
    return model


def dialogue_batch(n=5):
    g = torch.Generator().manual_seed(1)
    return {"text": torch.randn(n, 6, 12, generator=g), "text_mask": torch.ones(n, 6, dtype=torch.bool),
            "audio": torch.randn(n, 8, 10, generator=g), "audio_mask": torch.ones(n, 8, dtype=torch.bool),
            "dialogue": torch.tensor([0, 0, 0, 1, 1]), "turn": torch.tensor([0, 1, 2, 0, 1])}


def test_context_never_brings_the_future_into_the_past():
    model, batch = context_model(), dialogue_batch()
    with torch.no_grad():
        before = model(**batch)
        later = {**batch, "text": batch["text"].clone()}
        later["text"][2] += 5.0  # the last turn of dialogue 0
        after = model(**later)
        assert torch.equal(before.sentiment[:2], after.sentiment[:2]) and torch.equal(before.emotions[:2], after.emotions[:2])
        assert torch.equal(before.sentiment[3:], after.sentiment[3:])  # the other dialogue
        earlier = {**batch, "text": batch["text"].clone()}
        earlier["text"][0] += 5.0
        changed = model(**earlier)
        assert not torch.allclose(before.sentiment[1], changed.sentiment[1])  # turn 1 sees turn 0
        window = context_model(window=1)
        window.load_state_dict(model.state_dict())
        base, moved = window(**batch), window(**earlier)
        assert torch.equal(base.sentiment[2], moved.sentiment[2])  # k=1: turn 2 sees turn 1 only


def test_context_off_is_todays_model_and_its_cost_is_exact():
    base = dict(dims={"text": 12, "audio": 10}, d_model=16, n_experts=2, rank=4, n_heads=2)
    torch.manual_seed(0)
    plain = MMoLRE(MMoLREConfig(**base))
    assert not hasattr(plain, "context")
    for kw in ({}, {"variant": "hard_sharing"}, {"label_space": "meld"}):
        cfg = MMoLREConfig(**base, context="dialogue", **kw)
        model = MMoLRE(cfg)
        assert closed_form_params(cfg) == sum(p.numel() for p in model.parameters())
        assert cfg.context_params == len(cfg.branches) * (2 * 16 * 16 + 16)
        assert closed_form_params(cfg) - closed_form_params(MMoLREConfig(**base, **kw)) == cfg.context_params
        assert closed_form_flops(cfg, {"text": 7, "audio": 9}) == measured_flops(model, {"text": 7, "audio": 9})


def test_context_needs_a_corpus_of_dialogues(tiny_demo):
    features = FeatureFile(tiny_demo["h5"])
    with pytest.raises(MmolreError, match="model.context=dialogue needs a corpus of dialogues"):
        loader(features, features.indices("train"), ("text", "audio"), 8, shuffle=False, dialogues=True)


# --- transfer ------------------------------------------------------------------------------------------

def test_sentiment_meets_as_three_classes_and_sign():
    assert sentiment_classes(CMU["sa"], np.array([-2.4, -0.6, -0.4, 0.5, 0.51, 3.0])).tolist() == [-1, -1, 0, 0, 1, 1]
    assert sentiment_classes(SIMS_SPACE["sa"], np.array([-1.0, -0.1, -0.09, 0.1, 0.11])).tolist() == [-1, -1, 0, 0, 1]
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    assert sentiment_classes(MELD["sa"], probabilities).tolist() == [-1, 1, 0]
    assert sentiment_classes(MELD["sa"], np.array([1.0, -1.0])).tolist() == [1, -1]  # labels as stored
    assert sentiment_sign(MELD["sa"], probabilities).tolist() == [False, True, False]
    assert sentiment_sign(CMU["sa"], np.array([-0.2, 0.0, 0.3])).tolist() == [False, False, True]


def test_emotions_meet_by_name_and_the_others_are_left_out():
    assert shared_emotions(CMU["er"], MELD["er"]) == ("anger", "surprise", "fear", "disgust")
    assert spaces_meet("cmu", "iemocap4") == {"sentiment": False, "emotions": ("sad",)}  # its code "sad" is MOSEI's
    assert spaces_meet("meld", "sims") == {"sentiment": True, "emotions": ()}
    names = ("anger", "fear")
    intensities = np.array([[0, 0, 1.3, 0, 0, 0], [0, 0, 0, 0, 0, 0.7]])  # MOSEI: anger; fear
    assert presence(CMU["er"], intensities, names).tolist() == [[1.3, 0.0], [0.0, 0.7]]
    onehot = np.eye(7)[[MELD_EMOTIONS.index("fear"), MELD_EMOTIONS.index("joy")]]
    assert presence(MELD["er"], onehot, names).tolist() == [[0, 1], [0, 0]]


MOSI = [("mosi_a", "1", "i loved it", 2.4, "test"), ("mosi_a", "2", "it was bad", -1.2, "test"),
        ("mosi_b", "1", "okay i guess", 0.0, "test"), ("mosi_b", "2", "terrible", -2.8, "test"),
        ("mosi_c", "1", "wonderful film", 1.6, "train"), ("mosi_d", "1", "meh", -0.4, "valid")]


def featurized(tiny_params, tmp_path, dataset, **data) -> None:
    """A corpus prepared and featurized under tmp_path (raw/, prepared/, features/)."""
    params = params_for(tiny_params, dataset, **data)
    prepared_table(params, tmp_path)
    featurize(params, tmp_path / "prepared", tmp_path / "raw", tmp_path / "features")


def test_a_demo_model_is_scored_on_mosi_sims_and_meld_where_their_spaces_meet(tiny_demo, tiny_params, tmp_path,
                                                                              sims_root, meld_archive):
    mosi = tmp_path / "MOSI"
    rows = ["video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"]
    for k, (video, clip, text, label, mode) in enumerate(MOSI):
        write_mp4(mosi / "Raw" / video / f"{clip}.mp4", 0.8 + 0.1 * k)
        rows.append(f"{video},{clip},{text},{label},,,,Positive,{mode}")
    (mosi / "label.csv").write_text("\n".join(rows) + "\n")
    shutil.copytree(tiny_demo["features"], tmp_path / "features")
    featurized(tiny_params, tmp_path, "mosi", mmsa_root=str(mosi))
    featurized(tiny_params, tmp_path, "sims", mmsa_root=str(sims_root))
    meld = params_for(tiny_params, "meld", archives=[str(meld_archive / "MELD.Raw.tar.gz")])
    meld["prepare"] = {**meld["prepare"], "on_invalid": "quarantine"}
    prepared_table(meld, tmp_path)
    featurize(meld, tmp_path / "prepared", tmp_path / "raw", tmp_path / "features")

    params = {**tiny_params, "train": {**tiny_params["train"], "epochs": 1}, "runs": {"main": {"seeds": [1111, 7]}},
              "evaluate": {**tiny_params["evaluate"], "transfer": ["mosi", "sims", "meld"]}}
    train(params, "main", tmp_path / "features", tmp_path / "models", tmp_path / "reports" / "train")
    evaluate(params, tmp_path / "features", tmp_path / "models", tmp_path / "reports")
    scores = transfer(params, tmp_path / "features", tmp_path / "models", tmp_path / "reports")
    assert json.loads((tmp_path / "reports" / "transfer.json").read_text()).keys() == {"mosi", "sims", "meld"}
    assert set(scores["mosi"]["mosi"]) == {"sentiment"} and set(scores["sims"]["sims"]) == {"sentiment"}
    assert set(scores["mosi"]["mosi"]["sentiment"]) == {f"{k}{s}" for k in ("acc2", "f1_2", "acc3", "f1_3")
                                                        for s in ("", "_std", "_ci95")}
    assert set(scores["meld"]["meld"]["emotions"]) == {"anger", "surprise", "fear", "disgust", "avg"}
    assert "acc3_std" in scores["sims"]["sims"]["sentiment"]  # two seeds: their mean and std

    model = MMoLRE.from_pretrained(tmp_path / "models" / "main")
    features = FeatureFile(next((tmp_path / "features" / "mosi").glob("*.h5")))
    test = features.indices("test")
    from mmolre.inference import infer

    seeds = [model, MMoLRE.from_pretrained(tmp_path / "models" / "main" / "seeds" / "7")]
    preds = [infer(m, features, test, 8, torch.device("cpu"))["sentiment"] for m in seeds]
    label = features.sentiment[test]  # 2.4, -1.2, 0.0, -2.8: by hand, sign over the three non-neutral
    assert scores["mosi"]["mosi"]["sentiment"]["acc2"] == pytest.approx(
        np.mean([100 * np.mean((p[label != 0] > 0) == (label[label != 0] > 0)) for p in preds]))
    assert scores["mosi"]["mosi"]["sentiment"]["acc3"] == pytest.approx(
        np.mean([100 * np.mean(np.round(np.clip(p, -1, 1)) == np.sign(label)) for p in preds]))
    text = report(params, tmp_path / "reports").read_text()
    assert "## Transfer without re-tuning" in text and "| demo | meld |" in text
    assert "meld: emotions compared: anger, surprise, fear, disgust; the model's happy, sad have no namesake" in text


def test_context_trains_on_meld_and_the_report_sets_it_beside_the_run_without(meld_archive, tiny_params, tmp_path):
    params = params_for(tiny_params, "meld", archives=[str(meld_archive / "MELD.Raw.tar.gz")])
    params["prepare"] = {**params["prepare"], "on_invalid": "quarantine"}
    params["runs"] = {"main": {"modalities": ["text", "audio"]},
                      "context": {"modalities": ["text", "audio"], "context": "dialogue", "context_window": 3}}
    prepared_table(params, tmp_path)
    featurize(params, tmp_path / "prepared", tmp_path / "raw", tmp_path / "features")
    features = FeatureFile(next((tmp_path / "features" / "meld").glob("*.h5")))
    assert features.turn is not None and features.dialogue is not None
    train_idx = features.indices("train")
    store = FeatureStore(features, ("text", "audio"))
    lazy = list(loader(features, train_idx, ("text", "audio"), 4, shuffle=False, dialogues=True))
    held = list(loader(features, train_idx, ("text", "audio"), 4, shuffle=False, dialogues=True, store=store))
    assert [b["index"].tolist() for b in lazy] == [b["index"].tolist() for b in held]
    table = pd.read_parquet(tmp_path / "prepared" / "meld" / "utterances.parquet")
    for batch in lazy:  # dialogue by dialogue, in turn order
        ids = features.utterance_id[batch["index"].numpy()]
        rows = table.set_index("utterance_id").loc[ids]
        assert rows.groupby("video_id", sort=False).utterance_index.apply(lambda t: t.is_monotonic_increasing).all()
        assert batch["turn"].tolist() == rows.utterance_index.tolist()
    for run in params["runs"]:
        train(params, run, tmp_path / "features", tmp_path / "models", tmp_path / "reports" / "train")
    runs = evaluate(params, tmp_path / "features", tmp_path / "models", tmp_path / "reports")
    assert set(runs) == {"main", "context"} and set(runs["context"]["meld"]) == {"msa", "mer"}
    assert MMoLRE.from_pretrained(tmp_path / "models" / "context").config.context_window == 3
    text = report(params, tmp_path / "reports").read_text()
    added = 2 * (2 * 32 * 32 + 32)  # two task branches at the tiny d_model 32
    assert "## Dialogue context (model.context)" in text
    assert f"| context | text+audio | dialogue, k=3 | meld |" in text and f"| {added:,} |" in text
    assert "| main | text+audio | none | meld |" in text
