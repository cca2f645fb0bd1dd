"""`mmolre predict`: same numbers as the evaluate path, batched inputs, clear errors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mmolre import EMOTIONS, MmolreError
from mmolre.cli import main
from mmolre.features import FeatureFile
from mmolre.inference import infer, load_checkpoint
from mmolre.predict import load_predictor, predict_table, read_inputs
from mmolre.train import train


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
    expected = infer(model, feats, test, 8, torch.device("cpu"))
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


def test_errors_say_what_is_wrong(tiny_demo, model_path, table, tmp_path, capsys):
    predictor = load_predictor(model_path, torch.device("cpu"))
    wav = tiny_demo["raw"] / table.audio_path[0]
    with pytest.raises(MmolreError, match="text is empty"):
        predict_table(predictor, read_inputs(wav, "   ", None))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    with pytest.raises(MmolreError, match="broken.wav: cannot read audio"):
        predict_table(predictor, read_inputs(broken, "hello there", None))
    with pytest.raises(MmolreError, match=r"give --audio \(or --video\) \[--text\], or --inputs"):
        read_inputs(None, "hello", None)
    shutil.copytree(model_path, tmp_path / "other")  # a model from another encoder revision
    config = json.loads((tmp_path / "other" / "config.json").read_text())
    config["features"]["text_encoder_revision"] = "another-revision"
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(MmolreError, match="trained on other text features"):
        load_predictor(tmp_path / "other", torch.device("cpu"))
    assert main(["predict", "--model", str(model_path), "--revision", "abc123", "--audio", str(wav), "--text",
                 "hi"]) == 2
    assert f"--revision abc123: {model_path} is a local folder; a revision pins a hub id" in capsys.readouterr().err


def test_real_recordings_short_long_and_narrowband(tiny_demo, model_path, tmp_path, capsys):
    import soundfile as sf

    rate = 16000
    rng = np.random.default_rng(0)
    speechy = lambda seconds, sr=rate: (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
    files = {"empty": (np.zeros(0, np.float32), rate), "blip": (speechy(0.03), rate), "fine": (speechy(1.5), rate),
             "long": (speechy(60.0), rate), "phone": (speechy(2.0, 8000), 8000)}
    rows = []
    for name, (samples, sr) in files.items():
        sf.write(tmp_path / f"{name}.wav", samples, sr, subtype="PCM_16")
        rows.append(f"{name}.wav,it was fine")
    (tmp_path / "clips.csv").write_text("audio,text\n" + "\n".join(rows) + "\n")
    code = main(["predict", "--model", str(model_path), "--inputs", str(tmp_path / "clips.csv"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = {r["id"]: r for r in json.loads(captured.out)}
    assert list(results) == list(files)
    assert "0.000 s of audio" in results["empty"]["skipped"] and "0.030 s of audio" in results["blip"]["skipped"]
    for name in ("fine", "long", "phone"):
        assert np.isfinite(results[name]["sentiment"]) and set(results[name]["emotions"]) == set(EMOTIONS)
    err = captured.err
    assert f"predict: skipped empty: {tmp_path / 'empty.wav'}: only 0.000 s of audio" in err
    assert f"predict: skipped blip: {tmp_path / 'blip.wav'}: only 0.030 s of audio" in err
    assert f"{tmp_path / 'long.wav'}: 60.0 s of audio; only the first 20 s are used" in err
    assert f"{tmp_path / 'phone.wav'}: recorded at 8000 Hz, below the 16000 Hz" in err
    assert "fine.wav" not in err and "Traceback" not in err


def test_narrowband_audio_at_the_full_rate_is_noticed():
    import torchaudio

    from mmolre.predict import narrowband

    wide = torch.randn(32000, generator=torch.Generator().manual_seed(0))
    phone = torchaudio.functional.resample(torchaudio.functional.resample(wide, 16000, 8000), 8000, 16000)
    assert narrowband(phone, 16000) and not narrowband(wide, 16000)


def test_a_video_file_gives_the_frames_and_without_audio_its_audio_track(tiny_demo, table, tmp_path, capsys):
    import av
    import soundfile as sf

    from mmolre.encoders import load_audio

    params = {**tiny_demo["params"], "runs": {"trimodal": {"modalities": ["text", "audio", "video"]}}}
    model_dir = train(params, "trimodal", tiny_demo["features"], tmp_path / "models", tmp_path / "curves")
    feats = FeatureFile(tiny_demo["h5"])
    test = feats.indices("test")
    expected = infer(load_checkpoint(model_dir)[0], feats, test, 8, torch.device("cpu"))
    row = table.set_index("utterance_id").loc[feats.utterance_id[test[0]]]
    wave = load_audio(tiny_demo["raw"] / row.audio_path, 0.0, row.end_s, 16000, 20.0).numpy()
    sf.write(tmp_path / "voice.wav", (wave * 32767).astype(np.int16), 16000, subtype="PCM_16")
    with av.open(str(tiny_demo["raw"] / row.video_path)) as source, av.open(str(tmp_path / "clip.mkv"), "w") as clip:
        video = clip.add_stream_from_template(source.streams.video[0])  # the face as it is, not re-encoded
        audio = clip.add_stream("pcm_s16le", rate=16000, layout="mono")
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                clip.mux(packet)
        samples, _ = sf.read(tmp_path / "voice.wav", dtype="int16")
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = 16000
        clip.mux(audio.encode(frame))
        clip.mux(audio.encode())

    capsys.readouterr()  # training's lines

    def predicted(*args):
        assert main(["predict", "--model", str(model_dir), "--text", row.text, "--json", *args]) == 0
        out = capsys.readouterr()
        return {**json.loads(out.out), "stderr": out.err}

    as_featurized = predicted("--video", str(tiny_demo["raw"] / row.video_path), "--audio",
                              str(tiny_demo["raw"] / row.audio_path))
    assert as_featurized["sentiment"] == pytest.approx(expected["sentiment"][0], abs=1e-4)
    track, separate = predicted("--video", str(tmp_path / "clip.mkv")), predicted(
        "--video", str(tiny_demo["raw"] / row.video_path), "--audio", str(tmp_path / "voice.wav"))
    assert track["id"] == "clip" and track["sentiment"] == pytest.approx(separate["sentiment"], abs=1e-5)
    assert list(track["emotions"].values()) == pytest.approx(list(separate["emotions"].values()), abs=1e-5)
    no_face = predicted("--audio", str(tiny_demo["raw"] / row.audio_path))
    assert "no video frames; predicted with the video absent" in no_face["stderr"]
    assert no_face["sentiment"] != as_featurized["sentiment"]


@pytest.fixture(scope="module")
def tiny_asr(tmp_path_factory):
    """A speech recogniser built here (random weights: the tests check the plumbing, not the words): a tiny
    wav2vec 2.0 CTC model whose output layer always says the letter "a", so every recording reads "a"."""
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    folder = tmp_path_factory.mktemp("asr") / "tiny-ctc"
    folder.mkdir()
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True, do_normalize=True)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, pad_token_id=0)
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0]))  # "a" at every frame
    model.save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_without_a_transcript_the_recogniser_gives_the_text_and_says_its_source(
        tiny_demo, model_path, table, tiny_asr, capsys):
    from mmolre.fetch import sha256

    wav = tiny_demo["raw"] / table.audio_path[0]
    assert main(["predict", "--model", str(model_path), "--audio", str(wav), "--asr-model", str(tiny_asr),
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    source = f"asr:{tiny_asr}@{sha256(tiny_asr / 'model.safetensors')[:16]}"
    assert got["text"] == "a" and got["text_source"] == source
    assert main(["predict", "--model", str(model_path), "--audio", str(wav), "--text", "a", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["text_source"] == "given" and "text" not in given
    assert got["sentiment"] == pytest.approx(given["sentiment"], abs=1e-6)  # scored on the transcript it printed
    assert main(["predict", "--model", str(model_path), "--audio", str(wav), "--asr-model", str(tiny_asr)]) == 0
    assert f"{wav.stem}: transcript ({source}): a" in capsys.readouterr().out


def test_no_text_scores_as_the_robustness_tables_text_absent(tiny_demo, model_path, table, capsys):
    from mmolre.evaluate import absent

    feats = FeatureFile(tiny_demo["h5"])
    i = int(feats.indices("test")[0])
    model, _ = load_checkpoint(model_path)
    expected = infer(model, feats, [i], 8, torch.device("cpu"), transform=absent("text"))
    row = table.iloc[i]
    assert main(["predict", "--model", str(model_path), "--audio", str(tiny_demo["raw"] / row.audio_path),
                 "--no-text", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["text_source"] == "absent" and got["sentiment"] == pytest.approx(expected["sentiment"][0], abs=1e-4)
    assert list(got["emotions"].values()) == pytest.approx(expected["emotions"][0].tolist(), abs=1e-4)
    assert main(["predict", "--model", str(model_path), "--audio", str(tiny_demo["raw"] / row.audio_path),
                 "--no-text"]) == 0
    assert "text absent (--no-text): scored from the other modalities alone" in capsys.readouterr().out


def test_a_folder_and_a_csv_without_text_go_through_one_batched_recogniser(
        tiny_demo, model_path, table, tiny_asr, tmp_path, monkeypatch):
    import mmolre.predict as predict
    from mmolre.transcribe import load_transcriber

    rows = table.iloc[:4]
    folder = tmp_path / "clips"
    folder.mkdir()
    for r in rows.itertuples():
        shutil.copy(tiny_demo["raw"] / r.audio_path, folder / f"{r.utterance_id}.wav")
    (folder / f"{rows.utterance_id.iloc[1]}.txt").write_text(rows.text.iloc[1])  # one has its transcript
    pd.DataFrame({"audio": [f"clips/{u}.wav" for u in rows.utterance_id],
                  "text": ["", rows.text.iloc[1], "", ""]}).to_csv(tmp_path / "clips.csv", index=False)
    calls = []
    real = predict.transcribe
    monkeypatch.setattr(predict, "transcribe", lambda t, waves, rate: calls.append(len(waves)) or real(t, waves, rate))
    predictor = load_predictor(model_path, torch.device("cpu"))
    transcriber = load_transcriber(str(tiny_asr), None, torch.device("cpu"))
    for inputs in (folder, tmp_path / "clips.csv"):
        results = predict_table(predictor, read_inputs(None, None, inputs), 2, transcriber)
        assert [r["text_source"] for r in results] == [transcriber.source, "given", transcriber.source,
                                                       transcriber.source]
        assert [r.get("text") for r in results] == ["a", None, "a", "a"]
    assert calls == [3, 3]  # one batched call per input set, for the rows without text


def test_bad_inputs_to_the_recogniser_are_named(tiny_demo, model_path, table, tiny_asr, tmp_path, capsys,
                                                monkeypatch):
    import soundfile as sf

    import mmolre.predict as predict

    wav = tiny_demo["raw"] / table.audio_path[0]
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "nothing.wav", np.zeros(0, np.float32), 16000)
    clips = ["empty.wav", "nothing.wav", str(wav)]
    (tmp_path / "clips.csv").write_text("audio\n" + "\n".join(clips) + "\n")
    assert main(["predict", "--model", str(model_path), "--inputs", str(tmp_path / "clips.csv"), "--asr-model",
                 str(tiny_asr), "--json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert "empty.wav: cannot read audio" in results[0]["skipped"]
    assert "nothing.wav: only 0.000 s of audio" in results[1]["skipped"]
    assert results[2]["text"] == "a"
    assert f"predict: skipped empty: {tmp_path / 'empty.wav'}: cannot read audio" in captured.err
    monkeypatch.setattr(predict, "transcribe", lambda t, waves, rate: [""] * len(waves))  # a silent recording
    assert main(["predict", "--model", str(model_path), "--audio", str(wav), "--asr-model", str(tiny_asr)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # after the encoders' loading bars
    assert err[-1] == f"mmolre predict: error: {wav}: no speech recognised in it (silent or empty?); give its --text"
    assert main(["predict", "--model", str(model_path), "--audio", str(wav), "--asr-model", str(tiny_asr),
                 "--asr-language", "english"]) == 2
    assert "takes no language; leave --asr-language out" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_path), "--audio", str(wav), "--asr-model",
                 str(tmp_path / "no-such-model")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmolre")]
    assert len(err) == 1 and err[0].startswith("mmolre predict: error: --asr-model") and "could not be loaded" in err[0]
