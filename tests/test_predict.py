"""`mmolre predict`: same numbers as the evaluate path, batched inputs, clear errors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mmolre import MmolreError
from mmolre.cli import main
from mmolre.features import FeatureFile
from mmolre.predict import load_predictor, predict_table, read_inputs
from mmolre.train import load_checkpoint, predict, train


@pytest.fixture(scope="module")
def model_path(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    return train(tiny_demo["params"], "main", tiny_demo["features"], root / "models", root / "curves")


@pytest.fixture(scope="module")
def table(tiny_demo):
    return pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet")


def test_predict_matches_the_evaluate_path(tiny_demo, model_path, table, capsys):
    feats = FeatureFile(tiny_demo["h5"])
    test = feats.indices("test")
    model, _ = load_checkpoint(model_path)
    expected = predict(model, feats, test, 8, torch.device("cpu"))
    row = table.iloc[test[0]]
    code = main(["predict", "--model", str(model_path), "--audio", str(tiny_demo["raw"] / row.audio_path),
                 "--text", row.text, "--json"])
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    assert got["id"] == row.utterance_id
    assert got["sentiment"] == pytest.approx(expected["sentiment"][0], abs=1e-4)
    assert list(got["emotions"].values()) == pytest.approx(expected["emotions"][0].tolist(), abs=1e-4)


def test_csv_and_folder_inputs_are_batched_and_agree(tiny_demo, model_path, table, tmp_path):
    rows = table.iloc[:5]
    folder = tmp_path / "clips"
    folder.mkdir()
    for r in rows.itertuples():
        shutil.copy(tiny_demo["raw"] / r.audio_path, folder / f"{r.utterance_id}.wav")
        (folder / f"{r.utterance_id}.txt").write_text(r.text + "\n")
    pd.DataFrame({"audio": [f"clips/{u}.wav" for u in rows.utterance_id], "text": rows.text}).to_csv(
        tmp_path / "clips.csv", index=False)
    predictor = load_predictor(model_path, torch.device("cpu"))
    by_folder = predict_table(predictor, read_inputs(None, None, folder), batch_size=2)
    by_csv = predict_table(predictor, read_inputs(None, None, tmp_path / "clips.csv"), batch_size=5)
    one = predict_table(predictor, read_inputs(folder / f"{rows.utterance_id.iloc[3]}.wav", rows.text.iloc[3], None))
    assert [r["id"] for r in by_folder] == rows.utterance_id.tolist() == [r["id"] for r in by_csv]
    np.testing.assert_allclose([r["sentiment"] for r in by_folder], [r["sentiment"] for r in by_csv], atol=1e-4)
    assert one[0]["sentiment"] == pytest.approx(by_csv[3]["sentiment"], abs=1e-4)


def test_errors_say_what_is_wrong(tiny_demo, model_path, table, tmp_path):
    predictor = load_predictor(model_path, torch.device("cpu"))
    wav = tiny_demo["raw"] / table.audio_path[0]
    with pytest.raises(MmolreError, match="text is empty"):
        predict_table(predictor, read_inputs(wav, "   ", None))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    with pytest.raises(MmolreError, match="broken.wav: cannot read audio"):
        predict_table(predictor, read_inputs(broken, "hello there", None))
    with pytest.raises(MmolreError, match="--audio and --text, or --inputs"):
        read_inputs(wav, None, None)
    shutil.copytree(model_path, tmp_path / "other")  # a model from another encoder revision
    config = json.loads((tmp_path / "other" / "config.json").read_text())
    config["features"]["text_encoder_revision"] = "another-revision"
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(MmolreError, match="trained on other text features"):
        load_predictor(tmp_path / "other", torch.device("cpu"))
